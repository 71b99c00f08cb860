"""The Optuna searcher, adjusted so that Optuna never learns from a broken trial.

Ray's OptunaSearch tells Optuna the last reported value of a trial. A diverged trial reports a NaN
val_bpc, which Ray passes on as a failed `tell` and leaves RUNNING in optuna.db; here it is told
as FAIL. Every Optuna trial also records the Tune trial id it ran as, so the two can be joined.
"""
from __future__ import annotations

import math

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch


class StudySearch(OptunaSearch):
    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished():
            # Told already by a driver that was then killed, before Tune saved its own state: Tune resumed the
            # trial, but Optuna keeps the result it has.
            self._completed_trials.add(trial_id)
            return
        if ot_trial is not None and trial_id not in self._completed_trials:
            ot_trial.set_user_attr("tune_trial_id", trial_id)
            value = (result or {}).get(self.metric)
            broken = error or (result or {}).get("diverged") or (
                value is not None and not math.isfinite(float(value)))
            if broken:
                ot_trial.set_user_attr("status", "diverged" if (result or {}).get("diverged") else "failed")
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
                self._completed_trials.add(trial_id)
                return
        super().on_trial_complete(trial_id, result=result, error=error)
