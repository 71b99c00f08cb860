"""Known-answer tests: lr ~62% of the variance, cell (categorical) ~21%, hidden_size ~10%, the rest nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.synthetic import IRRELEVANT  # no effect in the test study's final_quality
from reports import _encode, choose_budget, compute_importance, load_run
from reports._importance import RESOLUTION, agreement



def _fit(run_dir, n_bootstrap=0, random_state=0, methods=("fanova", "permutation")):
    run = load_run(run_dir)
    b = choose_budget(run)
    params = run.trials.set_index("trial_id").loc[b.values["trial_id"]]
    return compute_importance(run.params, params, b.values["y"].to_numpy(), n_bootstrap=n_bootstrap,
                              random_state=random_state, methods=methods)


def _check_ranking(table: pd.DataFrame, col: str = "importance") -> None:
    t = table.set_index("param")[col]
    assert t["lr"] > t["cell"] > t["hidden_size"] > t[list(IRRELEVANT)].max(), t.to_dict()
    assert t[list(IRRELEVANT)].max() < 0.03, t.to_dict()
    assert t["hidden_size"] > 0.03 and t["lr"] > 0.4


def test_known_answer_ranking(make_run):
    res = _fit(make_run(seed=0), n_bootstrap=8)
    _check_ranking(res.table)
    assert list(res.table["rank"]) == list(range(1, 7))
    irrelevant = res.table.set_index("param").loc[list(IRRELEVANT)]
    assert irrelevant["within_noise"].all()
    assert not res.table.set_index("param").loc["lr", "within_noise"]
    assert (res.table["ci_low"] <= res.table["importance"] + 1e-9).all()
    assert 0 <= res.floors["null_fanova"] < 0.05
    assert res.fit["gp_loo_r2"] > 0.7


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6, 7, 8])
def test_known_answer_ranking_other_studies(make_run, seed):
    # Independent studies of the same generating function: the ranking must hold in each (point estimates).
    res = _fit(make_run(seed=seed), n_bootstrap=0)
    _check_ranking(res.table)


def test_same_seed_same_importance(make_run):
    run_dir = make_run(seed=3, n_trials=30)
    a = _fit(run_dir, n_bootstrap=4, random_state=7)
    b = _fit(run_dir, n_bootstrap=4, random_state=7)
    pd.testing.assert_frame_equal(a.table, b.table)
    pd.testing.assert_frame_equal(a.marginals, b.marginals)


def test_marginals_cover_every_param_and_bands_hold_the_curve(make_run):
    res = _fit(make_run(seed=0, n_trials=30), n_bootstrap=6, methods=("fanova",))
    m = res.marginals
    assert set(m["param"]) == {"lr", "hidden_size", "dropout", "seq_len", "cell", "optimizer"}
    assert len(m[m["param"] == "cell"]) == 4
    assert np.isfinite(m[["mean", "low", "high"]].to_numpy()).all()
    assert (m["low"] <= m["high"]).all()


def test_too_few_trials_gives_nan_not_an_error(make_run):
    run = load_run(make_run(n_trials=12, asha=False))
    params = run.trials.iloc[:3]
    res = compute_importance(run.params, params, np.array([1.0, 1.2, 1.1]), n_bootstrap=5)
    assert res.table["importance"].isna().all() and res.n_trials == 3


def test_agreement_of_identical_columns():
    t = pd.DataFrame({"param": list("abcd"), "x": [0.5, 0.3, 0.1, 0.0], "y": [0.6, 0.2, 0.15, 0.01]})
    ag = agreement(t, ["x", "y"])
    assert ag["spearman"].iloc[0] == pytest.approx(1.0) and ag["same_top"].iloc[0]


def test_intervals_are_stable_and_clear_effects_clear_the_floor(make_run):
    # Kernel hyperparameters fitted once: the bootstrap no longer switches effects on and off, so two bootstrap
    # seeds agree, and the lower ends of real effects sit well above zero and above the floor.
    run_dir = make_run(seed=2)
    a, b = (_fit(run_dir, n_bootstrap=16, random_state=rs, methods=("fanova",)) for rs in (1, 2))
    ta, tb = (r.table.set_index("param") for r in (a, b))
    for r, t in ((a, ta), (b, tb)):
        assert r.floors["applied"] >= RESOLUTION
        # (posterior draws of the GP and of the unexplained variance widen the intervals: cell's true share is about
        # 21%)
        assert t.loc["lr", "ci_low"] > 0.3 and t.loc["cell", "ci_low"] > 0.05 and t.loc["hidden_size", "ci_low"] > 0.02
        assert t.loc["cell", "ci_high"] > 0.21 and t.loc["hidden_size", "ci_high"] > 0.10
        assert not t.loc[["lr", "cell", "hidden_size"], "within_noise"].any()
        assert t.loc[list(IRRELEVANT), "within_noise"].all() and (t.loc[list(IRRELEVANT), "ci_high"] < 0.03).all()
    real = ["lr", "cell", "hidden_size"]
    assert (abs(ta.loc[real, ["ci_low", "ci_high"]] - tb.loc[real, ["ci_low", "ci_high"]]) < 0.1).all().all()


def test_grid_weights_integrate_the_uniform_distribution(make_run):
    spec = load_run(make_run(n_trials=12, asha=False)).param("dropout")
    u, _ = _encode.grid(spec, 21)
    w = _encode.grid_weights(spec, 21)
    assert w.sum() == pytest.approx(1.0)
    var = w @ (u[:, 0] - w @ u[:, 0]) ** 2
    assert var == pytest.approx(1 / 12, rel=0.01)  # equal weights would give 22/240, 10% too much


def test_interaction_draws_stay_within_the_surrogate_s_error_of_the_estimate():
    from reports._importance import interaction_draw

    rng = np.random.default_rng(0)
    small = np.array([interaction_draw(0.05, 0.03, rng) for _ in range(4000)])  # steps-shape sizes: error-sized
    assert small.min() >= 0.02 - 1e-12 and small.max() <= 0.05 and small.mean() == pytest.approx(0.035, abs=2e-3)
    big = np.array([interaction_draw(0.69, 0.03, rng) for _ in range(4000)])  # a real interaction barely moves
    assert big.min() >= 0.66 - 1e-12 and big.max() <= 0.69
    tiny = np.array([interaction_draw(0.01, 0.03, rng) for _ in range(1000)])  # never below none
    assert tiny.min() >= 0.0 and tiny.max() <= 0.01
    assert interaction_draw(0.2, 0.0, rng) == 0.2  # no error, no doubt


def test_interval_levels_widen_the_percentiles_for_few_trials():
    # Hesterberg's expanded percentile interval: 2 Phi(-sqrt(n/(n-1)) t_{n-1, 0.975}) in both tails.
    from reports._importance import interval_levels

    lo12, hi12 = interval_levels(12)
    assert lo12 == pytest.approx(0.0108, abs=2e-4) and hi12 == pytest.approx(1 - lo12)
    assert interval_levels(19)[0] < interval_levels(50)[0] < interval_levels(10_000)[0]
    assert interval_levels(10_000)[0] == pytest.approx(0.025, abs=2e-4)
