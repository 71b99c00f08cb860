"""The calibration harness: true shares by Monte Carlo, and a small seeded coverage run of the report's estimator."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks import calibrate
from benchmarks.calibrate import clopper_pearson, coverage_table, true_pair_shares, true_shares, verdicts
from benchmarks.synthetic import SHAPES, Shape, _cat, _float, _int


def test_true_shares_of_a_known_additive_function():
    # y = 0.1 * num_layers (1..3, uniform: variance 2/3 * 0.01) + 0.1 * [opt == b] (variance 0.25 * 0.01)
    # + nothing from dropout; noise variance 0.012^2.
    shape = Shape("t", (_int("num_layers", 1, 3), _cat("opt", "a", "b"), _float("dropout", 0, 0.5)),
                  lambda p: 0.1 * p["num_layers"] + 0.1 * (p["opt"] == "b"), 10, ("num_layers", "opt"))
    s = true_shares(shape)
    total = 0.01 * (2 / 3 + 0.25) + calibrate.NOISE_LOG_SD ** 2
    assert s["num_layers"] == pytest.approx(0.01 * 2 / 3 / total, rel=0.02)
    assert s["opt"] == pytest.approx(0.0025 / total, rel=0.02)
    assert s["dropout"] < 1e-12


def test_true_pair_share_of_a_known_interaction():
    # y = 0.1 * x * [opt == b], x uniform on [0, 1]: the interaction is 0.1 (x - 1/2)([opt == b] - 1/2), variance
    # 0.01 / 12 / 4; Var y = 0.01 (1/6 - 1/16) = 0.01 * 5/48, plus the noise.
    shape = Shape("t", (_float("x", 0, 1), _cat("opt", "a", "b"), _float("dropout", 0, 0.5)),
                  lambda p: 0.1 * p["x"] * (p["opt"] == "b"), 10, ("x", "opt"))
    s = true_pair_shares(shape)
    total = 0.01 * 5 / 48 + calibrate.NOISE_LOG_SD ** 2
    assert s["opt × x"] == pytest.approx(0.01 / 48 / total, rel=0.02)
    assert s["dropout × opt"] < 1e-12 and s["dropout × x"] < 1e-12
    # the interaction shape's truth: most of its variance is optimizer x lr_scale
    pairs = true_pair_shares(SHAPES["interaction"])
    assert max(pairs, key=pairs.get) == "lr_scale × optimizer" and pairs["lr_scale × optimizer"] > 0.3, pairs


def test_clopper_pearson():
    # reference values (R: binom.test(95, 100)$conf.int)
    assert clopper_pearson(95, 100) == pytest.approx((0.8872, 0.9836), abs=1e-4)
    assert clopper_pearson(10, 10) == pytest.approx((0.6915, 1.0), abs=1e-4)
    assert clopper_pearson(0, 10)[0] == 0.0


def test_small_calibration_run_covers_the_truth():
    # Seeded and small (CI): 3 studies of the 12-trial shape and of the few-valued-int shape, 30 resamples.
    df = calibrate.calibrate(["small", "layers-lr"], 3, seed=1, n_bootstrap=30)
    t = coverage_table(df).set_index("shape")
    assert t.loc["layers-lr", "coverage"] >= 0.8 and t.loc["small", "coverage"] >= 0.75, t
    assert (t["max_irrelevant"] <= 0.02).all(), t
    # the int fix: num_layers' share is no longer halved (it was 0.09 for a true 0.17 before)
    main = df[df["kind"] == "main"]
    nl = main[(main["shape"] == "layers-lr") & (main["param"] == "num_layers")]
    assert abs(nl["estimate"].mean() - nl["truth"].iloc[0]) < 0.08, nl
    # one interval per study for the largest pairwise interaction: these shapes are additive, truth 0
    pair = df[df["kind"] == "pair"]
    assert len(pair) == 6 and (pair["truth"] < 1e-9).all() and pair["holds"].mean() >= 0.8, pair
    assert all("meets" in v or "MISSES" in v for v in verdicts(coverage_table(df)))
    again = calibrate.calibrate(["small"], 1, seed=1, n_bootstrap=30)
    pd.testing.assert_frame_equal(again, df[df["shape"] == "small"].head(len(again)).reset_index(drop=True))
