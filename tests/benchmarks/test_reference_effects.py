"""benchmarks.reference_effects: the comparison on known answers, the trials built as the local stage builds them,
resuming from the results file, and (slow) a real smoke study replayed and compared."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from scipy import stats

from benchmarks import reference_effects as ref
from study import local
from study.inputs import SPECS_DIR, resolve_spec
from tests.conftest import REPO

STUDY = pd.DataFrame({"param": ["lr_scale", "lr_scale", "cell", "cell", "dropout"],
                      "label": ["x2.2", "/2.2", "lstm", "rnn_tanh", "+0.075"],
                      "effect": [0.20, 0.05, 0.10, 0.60, 0.00],
                      "ci_low": [0.10, -0.05, 0.00, 0.40, -0.05],
                      "ci_high": [0.30, 0.15, 0.20, 0.80, 0.05],
                      "se": [0.05, 0.05, 0.05, 0.10, 0.025]})


def _reference(effects: dict) -> pd.DataFrame:
    rows = [{"param": p, "label": l, "effect": e, "se": 0.02, "n_seeds": 4} for (p, l), e in effects.items()]
    return pd.DataFrame(rows)


def test_references_inside_and_outside_the_intervals_are_counted():
    reference = _reference({("lr_scale", "x2.2"): 0.25, ("lr_scale", "/2.2"): 0.16, ("cell", "lstm"): 0.0,
                            ("cell", "rnn_tanh"): 0.55, ("dropout", "+0.075"): -0.06})
    c = ref.compare(STUDY, reference)
    assert c.table["inside"].tolist() == [True, False, True, True, False]  # an edge is inside
    assert (c.inside, c.compared, c.share) == (3, 5, 0.6)
    exact = stats.binomtest(3, 5).proportion_ci(0.95, method="exact")
    assert (c.share_low, c.share_high) == pytest.approx((exact.low, exact.high))
    assert not c.meets_target
    assert c.table["z"].iloc[0] == pytest.approx(0.05 / math.hypot(0.05, 0.02))  # study se 0.05, reference 0.02
    assert (c.consistent, c.with_z) == (4, 5)  # lr_scale /2.2: 0.11 off, > 1.96 x 0.054


def test_moves_without_a_reference_or_an_interval_are_not_compared():
    study = STUDY.assign(ci_low=STUDY["ci_low"].where(STUDY["param"] != "dropout", math.nan))
    reference = _reference({("lr_scale", "x2.2"): 0.25, ("cell", "lstm"): math.nan, ("dropout", "+0.075"): 0.0})
    c = ref.compare(study, reference)  # only lr_scale x2.2 has both
    assert c.table[["param", "label"]].values.tolist() == [["lr_scale", "x2.2"]]
    assert (c.inside, c.compared, c.share, c.share_low) == (1, 1, 1.0, pytest.approx(0.025))
    assert c.share_high == 1.0


def test_the_share_meets_the_target_at_ninety_percent():
    reference = _reference({(p, l): e for p, l, e in STUDY[["param", "label", "effect"]].values})
    assert ref.compare(STUDY, reference).meets_target
    with pytest.raises(ValueError, match="twice"):
        ref.compare(pd.concat([STUDY, STUDY.iloc[:1]]), reference)


def test_clopper_pearson_at_the_edges():
    assert ref.clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** 0.1))
    assert ref.clopper_pearson(10, 10) == (pytest.approx(0.025 ** 0.1), 1.0)
    assert all(math.isnan(x) for x in ref.clopper_pearson(0, 0))


def test_reference_effects_are_paired_means_and_a_failed_trial_is_the_uniform_guess():
    uniform = math.log2(96)
    rows = []
    for seed, center, up, down in ((1, 2.0, 2.3, 1.9), (2, 2.2, 2.4, math.nan), (3, 2.1, 2.5, 2.0)):
        rows += [{"move": 0, "seed": seed, "status": "completed", "best_val_bpc": center},
                 {"move": 1, "seed": seed, "status": "completed", "best_val_bpc": up}]
        rows.append({"move": 2, "seed": seed, "status": "diverged" if math.isnan(down) else "completed",
                     "best_val_bpc": None if math.isnan(down) else down})
    rows.append({"move": 3, "seed": 9, "status": "completed", "best_val_bpc": 1.0})  # no center for seed 9
    moves = pd.DataFrame({"move": [1, 2, 3, 4], "param": ["lr", "lr", "cell", "cell"],
                          "label": ["x2", "/2", "lstm", "rnn_tanh"]})
    r = ref.reference_effects(pd.DataFrame(rows), moves, uniform)
    d_up, d_down = [0.3, 0.2, 0.4], [-0.1, uniform - 2.2, -0.1]
    assert r["effect"].tolist()[:2] == pytest.approx([sum(d_up) / 3, sum(d_down) / 3])
    assert r["se"].iloc[0] == pytest.approx(pd.Series(d_up).std() / math.sqrt(3))
    assert r["n_seeds"].tolist() == [3, 3, 0, 0] and r["n_failed"].tolist() == [0, 1, 0, 0]
    assert r["effect"].iloc[2:].isna().all()


CENTER = {"train_chars": 400_000, "embedding_dim": 48, "hidden_size": 256, "num_layers": 2, "cell": "gru",
          "lr_scale": 1.5, "optimizer": "adam", "seq_len": 100, "dropout": 0.1, "grad_clip": 1.0}


def _stage_configs(monkeypatch, tmp_path, spec) -> tuple[list[dict], int, list[int]]:
    """What study/stages/local.run hands Tune (its param space and points), captured with Tune faked: the flat
    configs, the budget and the seeds."""
    from study.stages import local as stage

    seen = {}

    class Tuner:
        def __init__(self, trainable, param_space, tune_config, run_config):
            seen.update(space=param_space, points=tune_config.search_alg.points)

    monkeypatch.setattr(stage, "tune", SimpleNamespace(Tuner=Tuner, TuneConfig=lambda **kw: SimpleNamespace(**kw)))
    monkeypatch.setattr(stage, "restored", lambda *a, **k: None)
    monkeypatch.setattr(stage, "run_config", lambda *a, **k: None)
    monkeypatch.setattr(stage, "fit", lambda *a, **k: None)
    plan = SimpleNamespace(spec=spec, seed=0, run_dir=tmp_path, time_plan=None, max_concurrent=2, address=None)
    writer = SimpleNamespace(stage=lambda *a, **k: None, echo=lambda *a: None, stop=None,
                             table=SimpleNamespace(trials_frame=lambda: pd.DataFrame({"role": []})))
    center = pd.Series({"trial_id": "c", "chars_per_s": 5000.0, **{f"param.{k}": v for k, v in CENTER.items()}})
    stage.run(plan, None, writer, center, math.log2(96))
    flats = [{k: v for k, v in {**seen["space"], **p}.items() if k != "moved"} for p in seen["points"]]
    return flats, seen["space"]["budget_chars"], list(dict.fromkeys(p["seed"] for p in seen["points"]))


@pytest.mark.parametrize("fixed", [False, True], ids=["search-center", "spec-center"])
def test_the_trials_are_built_as_the_local_stage_builds_them(monkeypatch, tmp_path, fixed):
    from dataclasses import replace

    from charrnn.config import TrainConfig
    from study.trainable import useful_threads

    spec = resolve_spec("sherlock")
    if not fixed:  # the search's best is the center
        spec = replace(spec, local={**spec.local, "center": {}})
    center = spec.local_center() or CENTER
    flats, budget, seeds = _stage_configs(monkeypatch, tmp_path, spec)
    study = ref.Study(run_dir=tmp_path, spec=spec, corpus=None, center=center,
                      moves=tuple(local.design(spec, center)), budget_chars=budget, steps=0, seeds=tuple(seeds),
                      uniform=math.log2(96))
    points = ref.reference_points(study, seeds, budget)
    assert [{k: v for k, v in p.config.items() if k not in ("device", "threads")} for p in points] == flats
    for p, flat in zip(points, flats):  # what study.trainable.run_trial makes of it on one CPU
        config = TrainConfig.from_flat({**flat, "device": "cpu"})
        assert TrainConfig.from_flat(p.config) == TrainConfig.from_flat(
            {**flat, "device": "cpu", "threads": useful_threads(1.0, config)})
    assert [(p.param, p.seed) for p in points] == [(q["moved"], q["seed"]) for q in local.points(spec, center, seeds)]
    only = ref.reference_points(study, [2000], budget * 2, ["cell"])
    assert [p.label for p in only] == ["center", "rnn_tanh", "rnn_relu", "lstm"]
    assert {p.config["budget_chars"] for p in only} == {budget * 2} and only[0].config["seed"] == 2000


def test_a_killed_run_resumes_where_it_stopped(monkeypatch, tmp_path):
    spec = resolve_spec("sherlock")
    study = ref.Study(run_dir=tmp_path, spec=spec, corpus=None, center=CENTER,
                      moves=tuple(local.design(spec, CENTER))[:2], budget_chars=8000, steps=10, seeds=(1000,),
                      uniform=math.log2(96))
    points = ref.reference_points(study, [2000, 2001], 8000)
    results = tmp_path / "ref.jsonl"
    first = ref._record(points[0], {"status": "completed", "best_val_bpc": 2.5})
    results.write_text(json.dumps(first) + "\n" + '{"move": 1, "par', encoding="utf-8")  # cut short by a kill
    trained = []
    monkeypatch.setattr(ref, "_train", lambda config: trained.append(config) or {"status": "completed",
                                                                                   "best_val_bpc": 2.0})
    monkeypatch.setattr(ref, "_init_worker", lambda *data: None)
    corpus = SimpleNamespace(train=[], val=[], vocab=SimpleNamespace(chars="ab"))
    records = ref.run_points(points, corpus, 100, results, jobs=1)
    assert trained == [p.config for p in points[1:]]
    assert [r["best_val_bpc"] for r in records] == [2.5] + [2.0] * (len(points) - 1)
    assert ref.run_points(points, corpus, 100, results, jobs=1) == records and len(trained) == len(points) - 1


LOCAL_SPEC = """
[local]
seeds = 2
params = ["lr"]
"""


@pytest.mark.slow
def test_a_real_study_replays_exactly_and_its_reference_compares(tmp_path):
    spec = tmp_path / "smoke-local.toml"
    spec.write_text((SPECS_DIR / "smoke.toml").read_text(encoding="utf-8").replace('name = "asha"', 'name = "fifo"')
                    + LOCAL_SPEC, encoding="utf-8")
    run = tmp_path / "run"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "study.run", "--spec", str(spec), "--trials", "4", "--seed", "3",
                           "--max-concurrent", "2", "--repeats", "0", "--final-chars", "0", "--no-report",
                           "--out", str(run)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # The study's own seeds give the study's own scores: the trials are the local stage's, trained the same way.
    study = ref.load_study(run)
    points = ref.reference_points(study, list(study.seeds), study.budget_chars)
    replay = pd.DataFrame(ref.run_points(points, study.corpus, study.spec.val_chars, tmp_path / "replay.jsonl", 2))
    trials = pd.read_parquet(run / "trials.parquet")
    trials = trials[trials["role"] == "local"]
    assert len(replay) == len(trials) == 2 * (1 + len(study.moves))
    for r in replay.itertuples():
        move = study.moves[r.move - 1] if r.move else None
        row = trials[(trials["seed"] == r.seed) & (trials["moved"].fillna("") == r.param)]
        if move is not None:
            row = row[[ref_value == move.value for ref_value in row[f"param.{move.param}"].tolist()]]
        assert len(row) == 1 and r.status == row["status"].iloc[0]
        if r.status == "completed":
            assert r.best_val_bpc == pytest.approx(row["best_val_bpc"].iloc[0], abs=1e-6)

    out = tmp_path / "ref.json"
    assert ref.main([str(run), "--seeds", "2", "--jobs", "2", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["complete"] and summary["seeds"] == [2000, 2001] and summary["trials"] == len(points)
    assert summary["compared"] == len(study.moves) and 0 <= summary["share"] <= 1
    assert len(Path(summary["results"]).read_text().splitlines()) == len(points)
