"""The promotion quorum on Ray's own ASHA, with plain trial objects (no Ray runtime)."""
from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from study.schedule import QuorumASHA
from study.spec import default_quorum

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


def test_default_quorum_grows_by_the_reduction_factor_towards_the_first_rung():
    assert default_quorum(3, 3) == [9, 3, 1]
    assert default_quorum(2, 2) == [2, 1]
    assert default_quorum(1, 4) == [1]


def test_plain_asha_promotes_the_first_trial_whatever_it_scores():
    assert _run(_scheduler(ASHAScheduler), [9.0])[0] == CONTINUE


def test_quorum_stops_the_first_arrivals_then_ranks_like_asha():
    values = [5.0, 4.0, 3.0, 2.0, 6.0, 1.0]
    got = _run(_scheduler(QuorumASHA, rungs=[100, 300], quorum=[3, 1]), values)
    # The first two arrive before the rung holds three values: stopped however good they are.
    assert got[:2] == [STOP, STOP]
    plain = _run(_scheduler(ASHAScheduler), values)
    assert got[2:] == plain[2:]


def test_a_trial_reporting_again_at_the_same_rung_is_counted_once():
    s = _scheduler(QuorumASHA, rungs=[100, 300], quorum=[2, 1])
    trial = _Trial("a")
    s.on_trial_add(None, trial)
    assert s.on_trial_result(None, trial, {"chars": 100, "val_bpc": 1.0}) == STOP
    s.on_trial_add(None, _Trial("b"))
    assert s.on_trial_result(None, _Trial("b"), {"chars": 100, "val_bpc": 0.5}) == CONTINUE
