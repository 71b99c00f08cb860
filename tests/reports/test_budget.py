from __future__ import annotations

import json
import math

import pandas as pd

from reports import choose_budget, load_run, noise_floor
from reports._budget import count_trials, survivor_budget


def test_counts_exclude_diverged_failed_and_repeats(make_run):
    run = load_run(make_run(n_trials=30, repeats=3))
    c = count_trials(run.trials)
    assert (c.total, c.search, c.repeats, c.diverged, c.failed, c.valid) == (33, 30, 3, 1, 1, 28)


def test_budget_is_a_milestone_all_compared_trials_reached(make_run):
    run = load_run(make_run(n_trials=45))
    b = choose_budget(run)
    assert b.chars == 100_000 and b.rung == 1 and not b.is_full
    assert b.n_trials == 43  # every valid search trial reached the first rung
    assert not set(b.values["trial_id"]) & set(run.trials.loc[run.trials["role"] == "repeat", "trial_id"])
    # a smaller requirement moves the comparison to the highest milestone with that many trials
    b2 = choose_budget(run, min_trials=5)
    assert b2.chars > b.chars and b2.n_trials >= 5
    reached = run.curves.groupby("trial_id")["chars_seen"].max()
    assert (reached[b2.values["trial_id"]] >= b2.chars).all()


def test_best_up_to_budget_ignores_later_evaluations(make_run):
    run = load_run(make_run(n_trials=12, asha=False))
    b = choose_budget(run, min_trials=12)
    assert b.is_full
    b1 = choose_budget(run, min_trials=10**6)  # capped at the largest count: still the full budget
    assert b1.chars == b.chars
    c = run.curves
    tid = b.values["trial_id"].iloc[0]
    early = c[(c["trial_id"] == tid) & (c["chars_seen"] <= 300_000)]["val_bpc"].min()
    from reports._budget import best_up_to

    assert math.isclose(best_up_to(c, [tid], 300_000)["y"].iloc[0], early)


def test_noise_floor_from_repeats_and_unknown_without(make_run):
    run = load_run(make_run(n_trials=20, repeats=4))
    nf = noise_floor(run, choose_budget(run).chars)
    assert nf.known and nf.n_repeats == 4 and 0 < nf.sd < 0.5
    bare = load_run(make_run(n_trials=20, repeats=0))
    assert not noise_floor(bare, choose_budget(bare).chars).known


def test_primary_budget_is_the_rung_nearly_all_reached_not_the_survivors(make_run):
    # 60% promoted: 27 of 45 reach the second rung, enough for a "half the trials" rule, but they are the best
    # 60%, a range-restricted sample; the primary comparison stays where every valid trial is.
    run = load_run(make_run(seed=7, n_trials=45, survive=0.6))
    b = choose_budget(run)
    assert b.rung == 1 and b.n_trials == count_trials(run.trials).valid and not b.survivors
    s = survivor_budget(run, b)
    assert s is not None and s.survivors and s.chars > b.chars and 10 <= s.n_trials < b.n_trials
    assert set(s.values["trial_id"]) < set(b.values["trial_id"])
    assert s.values["y"].max() < b.values["y"].max()  # the survivors were selected for being good
    full = load_run(make_run(seed=7, n_trials=45, asha=False))
    assert survivor_budget(full, choose_budget(full)) is None  # every trial ran the full budget: no later check


def test_milestones_are_nominal_when_evaluations_overshoot(make_run):
    # Real trials evaluate at the first step past a milestone (125,200 or 128,000 for 125k): all of them must
    # still count as having reached it, and be compared there.
    exact = load_run(make_run(seed=6, n_trials=30))
    late = load_run(make_run(seed=6, n_trials=30, overshoot=True))
    assert (late.curves["chars_seen"] > exact.curves["chars_seen"]).any()
    b, bl = choose_budget(exact), choose_budget(late)
    assert bl.chars == b.chars == 100_000 and bl.rung == 1 and bl.n_trials == b.n_trials == 28
    pd.testing.assert_frame_equal(b.values[["trial_id", "y"]], bl.values[["trial_id", "y"]])
    assert noise_floor(late, bl.chars).values == noise_floor(exact, b.chars).values


def test_milestones_without_eval_spacing_follow_evaluation_order(make_run):
    run_dir = make_run(seed=6, n_trials=30, overshoot=True)
    nominal = choose_budget(load_run(run_dir))
    study = json.loads((run_dir / "study.json").read_text())
    del study["eval"], study["budget_chars"]
    (run_dir / "study.json").write_text(json.dumps(study))
    b = choose_budget(load_run(run_dir))
    assert b.n_trials == 28 and 100_000 <= b.chars < 105_000  # the median chars_seen of the first evaluations
    assert list(b.milestones["n_trials"]) == list(nominal.milestones["n_trials"])
    pd.testing.assert_frame_equal(b.values, nominal.values)


def test_listed_evaluation_points_map_to_the_largest_at_or_below(make_run):
    # New run directories list their evaluation points (eval.eval_at_chars, increasing, not evenly spaced);
    # an evaluation belongs to the largest listed count not above its chars_seen.
    from reports._budget import milestone_of

    study = {"eval": {"eval_at_chars": [100_000, 300_000, 1_000_000], "eval_every_chars": 7}}
    got = milestone_of(pd.Series([99_000, 100_000, 128_000, 300_050, 999_999, 1_000_100]), study)
    assert got.iloc[0] != got.iloc[0]  # before the first listed point: no milestone (NaN)
    assert got.iloc[1:].tolist() == [100_000, 100_000, 300_000, 300_000, 1_000_000]
    assert milestone_of(pd.Series([250_000]), {"eval": {"eval_every_chars": 100_000}}).tolist() == [200_000]

    run_dir = make_run(seed=6, n_trials=30, overshoot=True)
    before = choose_budget(load_run(run_dir))
    s = json.loads((run_dir / "study.json").read_text())
    s["eval"]["eval_at_chars"] = [100_000 * k for k in range(1, 9)]
    s["eval"]["evals_per_trial"] = 3  # ignored when the list is there
    (run_dir / "study.json").write_text(json.dumps(s))
    after = choose_budget(load_run(run_dir))
    assert after.chars == before.chars == 100_000 and after.rung == 1
    pd.testing.assert_frame_equal(after.values, before.values)
    pd.testing.assert_frame_equal(after.milestones, before.milestones)
