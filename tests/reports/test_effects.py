"""The local design's estimator: known-answer coverage of its intervals, and what it reads from a run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reports import load_run
from reports._effects import SHAPE, importance, local_effects, paired_effects, rank_tests
from benchmarks.synthetic import local_rundata, true_effects

M, N_SHAPE, PARAMS = 22, 8, 11  # 22 moves of 11 hyperparameters (two each), the first 8 moves change the tensors


def simulate(rng: np.random.Generator, seeds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One local design with known effects: half the moves have none, the others a normal effect of sd 0.3. Seed
    noise (sd 0.05-0.2, drawn per design) is shared with the center: correlation 0.9 for a move that keeps the
    tensors, 0.3 for one that changes them; each move's own noise is 0.7-1.4 times the design's."""
    sd = rng.uniform(0.05, 0.2)
    shape = np.arange(M) < N_SHAPE
    theta = np.where(rng.random(M) < 0.5, 0.0, rng.normal(0, 0.3, M))
    z = rng.normal(size=seeds)
    rho = np.where(shape, 0.3, 0.9)[:, None]
    center = sd * (math.sqrt(0.9) * z + math.sqrt(0.1) * rng.normal(size=seeds))
    moves = theta[:, None] + sd * rng.uniform(0.7, 1.4, (M, 1)) * (
        np.sqrt(rho) * z + np.sqrt(1 - rho) * rng.normal(size=(M, seeds)))
    return 2.0 + np.vstack([center, moves]), shape, theta


@pytest.mark.parametrize("seeds", [2, 3])
def test_intervals_hold_the_true_effects(seeds):
    rng = np.random.default_rng(seeds)
    held = held_imp = n_imp = 0
    designs = 200
    names = [f"p{k}" for k in range(PARAMS)]
    for _ in range(designs):
        y, shape, theta = simulate(rng, seeds)
        fx, pools = paired_effects(y, np.ones_like(y, bool), shape)
        assert pools["same shape"].df == (M - N_SHAPE) * (seeds - 1) and pools[SHAPE].df == N_SHAPE * (seeds - 1)
        held += int(((fx["ci_low"] <= theta) & (theta <= fx["ci_high"])).sum())
        moves = fx.assign(param=[names[k // 2] for k in range(M)], label="x2", kind="up")
        imp = importance(moves, names, n_draws=0).set_index("param")
        truth = pd.Series(np.abs(theta)).groupby(moves["param"]).max()
        held_imp += int(((imp.loc[truth.index, "imp_low"] <= truth) & (truth <= imp.loc[truth.index, "imp_high"]))
                        .sum())
        n_imp += len(truth)
    coverage, coverage_imp = held / (designs * M), held_imp / n_imp
    # measured (200 designs each): S=2 96.8% of 4,400 effects, S=3 95.9%; importance (joint intervals) 99.8% and
    # 99.9% of 2,200. Pooling the paired differences themselves (the center's deviation counted once per move) held
    # 94.3% and 93.3%: its variance estimate has fewer independent degrees of freedom than it counts.
    assert 0.93 <= coverage <= 0.98, coverage
    assert coverage_imp >= 0.95, coverage_imp


def test_a_seed_effect_shared_by_every_configuration_is_no_noise():
    # Common random numbers: seed 2 is 0.3 worse for the center and every move alike; the noise is the
    # configuration x seed interaction, here none.
    y = np.vstack([[2.0, 2.3], np.tile([2.1, 2.4], (6, 1))])
    fx, pools = paired_effects(y, np.ones_like(y, bool), np.zeros(6, bool))
    assert np.allclose(fx["effect"], 0.1) and pools["same shape"].sd == pytest.approx(0, abs=1e-9)
    assert pools["same shape"].df == 6


def test_a_pool_with_too_few_df_borrows_the_overall_fit_never_below_its_own():
    rng = np.random.default_rng(0)
    y = 2 + rng.normal(0, 0.05, (8, 2))
    y[1, :] += [0.0, 0.4]  # the one shape-changing move is far noisier than the rest
    fx, pools = paired_effects(y, np.ones_like(y, bool), np.array([True] + [False] * 6))
    own = paired_effects(y[:2], np.ones((2, 2), bool), np.array([True]), min_df=0)[1][SHAPE]
    assert pools[SHAPE].fallback and pools[SHAPE].df == pools["same shape"].df + 1
    assert pools[SHAPE].sd >= own.sd - 1e-12 and fx.loc[0, "sd"] == pools[SHAPE].sd


def test_a_failed_trial_counts_as_uniform_and_widens_its_move_only():
    rng = np.random.default_rng(1)
    y = 2 + rng.normal(0, 0.02, (6, 2))
    ok = np.ones_like(y, bool)
    y[3, 0], ok[3, 0] = math.log2(96), False
    fx, pools = paired_effects(y, ok, np.zeros(5, bool))
    clean = paired_effects(np.delete(y, 3, axis=0), np.delete(ok, 3, axis=0), np.zeros(4, bool))[1]
    assert pools["same shape"].sd == pytest.approx(clean["same shape"].sd, rel=0.6)  # the failure is not noise
    assert fx.loc[2, "effect"] > 2 and fx.loc[2, "sd"] > 10 * fx.loc[0, "sd"]
    assert (fx.drop(index=2)["sd"] == pools["same shape"].sd).all()


def test_p_first_same_seed_same_result():
    run = local_rundata({"lr": 0.1, "cell": 0.1})
    a, b = local_effects(run, random_state=3), local_effects(run, random_state=3)
    pd.testing.assert_frame_equal(a.params, b.params)
    assert a.params["p_first"].sum() == pytest.approx(1.0)
    assert set(a.params["param"].iloc[:2]) == {"lr", "cell"}
    assert local_effects(run, random_state=4).params["p_first"].iloc[0] != a.params["p_first"].iloc[0]


def test_local_effects_from_a_run_directory(make_local_run):
    path = make_local_run(run={"n_trials": 20, "seed": 5}, diverge=None)
    e = local_effects(load_run(path))
    truth = true_effects(path)
    assert len(e.moves) == len(truth) and (e.moves["n_seeds"] == 2).all()
    got = {(r.param, r.value): r for r in e.moves.itertuples()}
    for key, t in truth.items():
        r = got[key]
        assert r.ci_low - 0.05 <= t <= r.ci_high + 0.05, (key, t, r.ci_low, r.ci_high)
    assert e.steps == 4000 and e.seeds == (1000, 1001) and e.n_formed == e.n_trained == 2 * (1 + len(truth))
    assert set(e.params["param"]) == {"lr", "hidden_size", "dropout", "seq_len", "cell", "optimizer"}


def test_a_diverged_move_is_counted_at_the_uniform_guess_and_named():
    run = local_rundata(diverge=("lr", 0.05623))
    e = local_effects(run)
    row = e.moves[e.moves["n_failed"] > 0]
    assert list(row["param"]) == ["lr"] and row["effect"].iloc[0] == pytest.approx((math.log2(96) - 1.6) / 2, abs=0.1)
    assert e.center_failed == 0 and e.uniform == pytest.approx(math.log2(96))


def test_a_move_broken_in_one_seed_is_not_ranked_by_its_uniform_guess():
    """A seed scored as a uniform guess would make lr the leader by +2.4 bits/char; cell is the real effect."""
    e = local_effects(local_rundata({"cell": 0.3}, diverge=("lr", 0.05623)))
    ranked = e.params[np.isfinite(e.params["importance"].astype(float))].set_index("param")
    assert e.params.iloc[0]["param"] == "cell"
    assert ranked.loc["lr", "importance"] < 0.2  # lr's other moves only, which trained in every seed


def test_a_run_without_a_local_design_has_no_effects(make_run):
    assert local_effects(load_run(make_run(n_trials=12, asha=False))) is None


def test_rank_tests_find_what_the_search_trials_show():
    t = rank_tests(local_rundata(search_lr_slope=0.3, n_search=40)).set_index("param")
    assert t.loc["lr", "search_test"] == "Spearman" and t.loc["lr", "search_p"] < 1e-6
    assert t.loc["cell", "search_test"] == "Kruskal-Wallis" and t.loc["cell", "search_p"] > 0.001
