"""The local design's moves and its choice of the final configuration: pure (plain frames, no Ray)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from study.inputs import resolve_spec
from study.local import choose, design, moves_of, points, seeds_for
from study.spec import Param

SPEC = resolve_spec("sherlock")
CENTER = {"train_chars": 400_000, "embedding_dim": 32, "hidden_size": 256, "num_layers": 1, "cell": "gru",
          "lr_scale": 1.5, "optimizer": "adam", "seq_len": 100, "dropout": 0.1, "grad_clip": 1.0}


def test_a_categorical_moves_to_every_other_choice():
    moves = moves_of(SPEC.search["cell"], "gru")
    assert [m.value for m in moves] == ["rnn_tanh", "rnn_relu", "lstm"] and {m.kind for m in moves} == {"choice"}


def test_an_integer_with_few_values_moves_to_each_other_value():
    assert [(m.value, m.kind) for m in moves_of(SPEC.search["num_layers"], 1)] == [(2, "up"), (3, "up")]
    assert [(m.value, m.kind) for m in moves_of(SPEC.search["num_layers"], 2)] == [(1, "down"), (3, "up")]


def test_a_log_range_moves_a_quarter_of_its_range_each_way():
    lr = SPEC.search["lr_scale"]  # 0.4 .. 10: a quarter of the log range is x2.24
    up, down = moves_of(lr, 1.5)
    assert up.value == pytest.approx(1.5 * 25 ** 0.25, rel=1e-3) and up.label == "x2.2"
    assert down.value == pytest.approx(1.5 / 25 ** 0.25, rel=1e-3) and down.label == "/2.2"


def test_at_an_edge_both_moves_go_inward():
    lr = SPEC.search["lr_scale"]
    moves = moves_of(lr, 9.0)
    assert all(m.value < 9.0 and m.kind == "down" for m in moves) and len(moves) == 2
    dropout = SPEC.search["dropout"]  # linear 0 .. 0.3
    assert [m.value for m in moves_of(dropout, 0.0)] == [pytest.approx(0.075), pytest.approx(0.15)]


def test_integer_moves_are_whole_and_never_the_center():
    emb = Param("embedding_dim", "int", 16, 20, log=True)
    assert all(isinstance(m.value, int) and m.value != 18 for m in moves_of(emb, 18))


def test_the_design_moves_every_searched_hyperparameter_and_seeds_are_shared():
    moves = design(SPEC, CENTER)
    assert {m.param for m in moves} == set(SPEC.search) and len(moves) == 22
    pts = points(SPEC, CENTER, seeds_for(0, 2))
    assert len(pts) == 2 * 23 and pts[0] == {**CENTER, "seed": 1000, "moved": ""}
    assert [p["seed"] for p in pts[:23]] == [1000] * 23 and all(p["seed"] == 1001 for p in pts[23:])
    for p in pts:  # one hyperparameter moved at a time
        assert sum(p[k] != CENTER[k] for k in CENTER) == (0 if p["moved"] == "" else 1)


def _local(rows):
    out = []
    for k, (moved, lr, seed, bpc, status) in enumerate(rows):
        out.append({"trial_id": f"t{k}", "trial_index": k, "role": "local", "moved": moved, "seed": seed,
                    "best_val_bpc": bpc, "status": status,
                    **{f"param.{n}": v for n, v in {**CENTER, "lr_scale": lr}.items()}})
    return pd.DataFrame(out)


def _design(effect_up: float, noise=(0.0, 0.01), status_up="completed"):
    rows = []
    for s, e in zip((1000, 1001), noise):
        rows += [("", 1.5, s, 2.0 + e, "completed"), ("lr_scale", 3.35, s, 2.0 + effect_up + e + 0.01 * (s - 1000),
                                                       status_up),
                 ("lr_scale", 0.67, s, 2.3 + e, "completed"), ("dropout", 1.5, s, 2.02 + e - 0.01 * (s - 1000),
                                                                "completed")]
    return _local(rows)


def test_a_move_better_beyond_its_interval_replaces_the_center():
    choice = choose(_design(-0.3), SPEC, math.log2(99))
    assert choice.moved == "lr_scale" and choice.value == pytest.approx(3.35) and choice.trial_id in {"t1", "t5"}


def test_a_move_within_noise_keeps_the_center():
    choice = choose(_design(-0.005), SPEC, math.log2(99))
    assert choice.moved == "" and choice.trial_id in {"t0", "t4"}


def test_a_move_that_diverged_in_a_seed_is_never_handed_over():
    choice = choose(_design(-0.3, status_up="diverged"), SPEC, math.log2(99))
    assert choice.moved == ""


def test_studies_with_different_seeds_use_disjoint_local_seeds():
    # Overlapping seeds would make two studies' effects share draws, and their agreement partly a given.
    drawn = [seeds_for(seed, 2) for seed in range(4)]
    assert drawn[0] == [1000, 1001] and drawn[1] == [1002, 1003]
    assert len({s for d in drawn for s in d}) == 8
