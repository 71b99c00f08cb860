"""ASHA that promotes as successive halving would: at most 1/rf of the trials that have reached a rung go on.

Plain ASHA (Ray's `ASHAScheduler`) promotes a trial that reaches a rung when it is in the top 1/rf of the values
recorded there *so far*. While a rung fills up that lets far more than 1/rf through: the first trial to arrive is
always promoted (there is nothing to compare it with), and on the default study about twice as many trials reached
the second rung, and five times as many the full budget, as synchronous halving would send (BENCHMARKS.md). Those
full trials were most of the search's time.

Here a trial goes on past a rung only if it is in ASHA's top 1/rf there *and* the rung has promoted fewer than
floor(arrived / rf) trials, itself counted among the arrivals. So a rung never promotes more than 1/rf of the
trials that reached it, as synchronous halving would, while no trial ever waits for a rung to fill: each is
decided the moment it arrives. The first rf - 1 arrivals stop there; their values still count for the trials
after them. Once a rung has received all the trials synchronous halving would send it (`planned`), it may promote
as many as halving would send to the next (at rf 3, a rung that 4 trials reach promotes 1, as floor(4 / 3)
does, and one that 2 of an expected 2 reach also promotes 1, where floor(2 / 3) would promote none).
"""
from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler


class HalvingASHA(ASHAScheduler):
    """`ASHAScheduler` whose rungs promote at most floor(arrived / rf) trials each (see the module doc)."""

    def __init__(self, *, time_attr: str, rungs: list[int], reduction_factor: int, planned: list[int] | None = None,
                 **kwargs):
        super().__init__(time_attr=time_attr, reduction_factor=reduction_factor, **kwargs)
        self._time_key = time_attr
        self._rf = reduction_factor
        # Per rung: (trials halving sends there, trials it sends on); (inf, 0) where unknown.
        planned = planned or []
        self._halving = {r: (planned[k], planned[k + 1]) if k + 1 < len(planned) else (float("inf"), 0)
                         for k, r in enumerate(rungs)}
        self._arrived: dict[int, set[str]] = {r: set() for r in rungs}
        self._promoted: dict[int, set[str]] = {r: set() for r in rungs}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        t = result.get(self._time_key)
        if t is None:
            return action
        for rung in self._arrived:
            if t >= rung and trial.trial_id not in self._arrived[rung]:
                self._arrived[rung].add(trial.trial_id)
                if action == TrialScheduler.CONTINUE:
                    arrived = len(self._arrived[rung])
                    expected, sends = self._halving[rung]
                    allowed = max(arrived // self._rf, sends if arrived >= expected else 0)
                    if len(self._promoted[rung]) < allowed:
                        self._promoted[rung].add(trial.trial_id)
                    else:
                        action = TrialScheduler.STOP
        return action

    def counts(self) -> dict[int, tuple[int, int]]:
        """{rung: (trials that reached it, trials it promoted)} as this scheduler saw them."""
        return {r: (len(self._arrived[r]), len(self._promoted[r])) for r in self._arrived}
