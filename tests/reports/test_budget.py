from __future__ import annotations

import math

from reports import choose_budget, load_run, noise_floor
from reports._budget import count_trials


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
