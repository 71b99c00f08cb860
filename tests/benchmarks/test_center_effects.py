"""The seed-pair effects of benchmarks.center_effects on plain records (no training)."""
from __future__ import annotations

import math

import pandas as pd

from benchmarks.center_effects import leaders, pair_effects

STUDIES = {0: [1000, 1001], 1: [1002, 1003]}


def _records(scores: dict[tuple[int, str, str], list[float | None]]) -> pd.DataFrame:
    rows = []
    for (move, param, label), ys in scores.items():
        for seed, y in zip([1000, 1001, 1002, 1003], ys):
            rows.append({"move": move, "param": param, "label": label, "seed": seed,
                         "status": "completed" if y is not None else "diverged", "best_val_bpc": y})
    return pd.DataFrame(rows)


def test_each_study_seed_pairs_its_own_seeds_and_a_failed_move_is_not_ranked():
    r = _records({(0, "", "center"): [3.0, 3.1, 3.1, 3.2],
                  (1, "lr", "x2"): [2.7, 2.8, 2.8, 2.9],        # -0.3 in both studies
                  (2, "cell", "relu"): [None, 3.3, 3.4, 3.5],   # diverged once in study 0
                  (3, "cell", "tanh"): [3.2, 3.3, 3.6, 3.7]})   # +0.2, then +0.5
    e = pair_effects(r, STUDIES, uniform=6.6).set_index("label")
    assert math.isclose(e.loc["x2", 0], -0.3) and math.isclose(e.loc["x2", 1], -0.3)
    assert math.isclose(e.loc["relu", 0], ((6.6 - 3.0) + 0.2) / 2) and not e.loc["relu", "0 ok"]  # the uniform guess
    assert e.loc["relu", "1 ok"]
    lead = leaders(e.reset_index(), [0, 1]).set_index("study_seed")
    assert lead.loc[0, "leader"] == "lr" and math.isclose(lead.loc[0, "second_importance"], 0.2)
    assert lead.loc[1, "leader"] == "cell" and math.isclose(lead.loc[1, "importance"], 0.5)
