"""Successive-halving promotion on Ray's own ASHA, with plain trial objects (no Ray runtime)."""
from __future__ import annotations

import numpy as np
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from study.schedule import HalvingASHA
from study.timeplan import planned_counts

STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE


class _Trial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id
        self.config = {}


def _scheduler(cls, **extra):
    s = cls(time_attr="chars", max_t=900, grace_period=100, reduction_factor=3, **extra)
    s.set_search_properties("val_bpc", "min")
    return s


def _run(s, values, t=100):
    trials = [_Trial(str(i)) for i in range(len(values))]
    for trial in trials:
        s.on_trial_add(None, trial)
    return [s.on_trial_result(None, trial, {"chars": t, "val_bpc": v}) for trial, v in zip(trials, values)]


def test_planned_counts_are_synchronous_halving():
    assert planned_counts(50, 2, 3) == [50, 16, 5]
    assert planned_counts(4, 1, 2) == [4, 2]
    assert planned_counts(2, 2, 3) == [2, 1, 1]


def test_plain_asha_promotes_the_first_trial_whatever_it_scores():
    assert _run(_scheduler(ASHAScheduler), [9.0])[0] == CONTINUE


def test_the_first_arrivals_stop_then_at_most_a_third_go_on():
    values = [5.0, 4.0, 3.0, 2.0, 6.0, 1.0]
    got = _run(_scheduler(HalvingASHA, rungs=[100, 300]), values)
    # The first two arrive before a third could be promoted: stopped however good they are.
    assert got[:2] == [STOP, STOP]
    assert got[2] == CONTINUE  # the best of three
    assert got[3] == STOP  # best so far, but 1 of 4 is already promoted (floor(4/3) = 1)
    assert got[5] == CONTINUE  # the sixth arrival makes room for a second
    assert got.count(CONTINUE) <= len(values) // 3


def test_promotion_never_exceeds_synchronous_halving_and_stays_near_it():
    """Arrivals in random order (as asynchronous trials finish): each rung promotes at most floor(n / rf), and
    at least two thirds of that."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        values = rng.normal(size=50)
        got = _run(_scheduler(HalvingASHA, rungs=[100, 300]), values.tolist())
        promoted = got.count(CONTINUE)
        assert promoted <= 50 // 3
        assert promoted >= (50 // 3) / 1.5


def test_a_trial_reporting_again_at_the_same_rung_is_counted_once():
    s = _scheduler(HalvingASHA, rungs=[100, 300])
    for name, value in (("a", 3.0), ("b", 2.0)):
        s.on_trial_add(None, _Trial(name))
        assert s.on_trial_result(None, _Trial(name), {"chars": 100, "val_bpc": value}) == STOP
    s.on_trial_result(None, _Trial("a"), {"chars": 150, "val_bpc": 3.0})  # past the rung again: not a new arrival
    assert s.counts()[100] == (2, 0)
    s.on_trial_add(None, _Trial("c"))
    assert s.on_trial_result(None, _Trial("c"), {"chars": 100, "val_bpc": 1.0}) == CONTINUE
    assert s.counts()[100] == (3, 1)


def test_a_rung_that_received_its_planned_trials_promotes_what_halving_would():
    """4 trials at rf 2: halving sends 4, 2, 1. The second rung gets 2 arrivals; floor(2 / 2) = 1 would do too,
    but at rf 3 with 5 trials (5, 1, ...) a rung of 1 arrival would promote none without the plan."""
    s = HalvingASHA(time_attr="chars", max_t=900, grace_period=100, reduction_factor=3, rungs=[100, 300],
                    planned=[2, 1, 1])
    s.set_search_properties("val_bpc", "min")
    got = _run(s, [2.0, 1.0])
    assert got == [STOP, CONTINUE]  # the rung has its 2 planned arrivals: the better one goes on
