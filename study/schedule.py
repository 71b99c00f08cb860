"""ASHA with a promotion quorum: a rung promotes only once it has ranked enough trials.

Plain ASHA (Ray's `ASHAScheduler`) promotes a trial that reaches a rung when it is in the top 1/rf of the
values recorded there so far, so the first trial to reach a rung is always promoted: there is nothing to
compare it with. With two workers and fifty trials that means the first trials of a study (space-filling
startup trials, chosen for coverage rather than quality) train to the full budget, and one slow
configuration there can take a quarter of the study's time. Here a trial continues past a rung only if at
least that rung's quorum of trials (itself included) has reached it; the first ones stop there, and their
values still count for the trials after them.
"""
from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler


class QuorumASHA(ASHAScheduler):
    """`ASHAScheduler` that stops, rather than promotes, the first `quorum[k] - 1` trials reaching rung k."""

    def __init__(self, *, time_attr: str, rungs: list[int], quorum: list[int], **kwargs):
        super().__init__(time_attr=time_attr, **kwargs)
        if len(rungs) != len(quorum):
            raise ValueError("one quorum per rung")
        self._time_key = time_attr
        self._quorum = dict(zip(rungs, quorum))
        self._arrived: dict[int, set[str]] = {r: set() for r in rungs}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        t = result.get(self._time_key)
        if t is None:
            return action
        for rung, need in self._quorum.items():
            if t >= rung and trial.trial_id not in self._arrived[rung]:
                self._arrived[rung].add(trial.trial_id)
                if action == TrialScheduler.CONTINUE and len(self._arrived[rung]) < need:
                    action = TrialScheduler.STOP
        return action
