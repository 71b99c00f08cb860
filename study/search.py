"""The Optuna searcher: Ray Tune's Searcher interface over Optuna's ask-and-tell, public APIs only.

optuna.db tells the same story as the results tables, so that optuna-dashboard agrees with the report:

- every evaluation is an intermediate value, `trial.report(val_bpc, step=chars_seen)`: the value measured at
  that evaluation (curves.parquet's `val_bpc`), at the same character counts for every trial;
- a trial that trained its whole budget is COMPLETE with its `best_val_bpc`;
- a trial ASHA stopped early is PRUNED (Optuna then takes its last intermediate value as its value), so
  its partial value is never ranked beside full-budget ones;
- a diverged or crashed trial is FAIL (Optuna never learns from a broken value); its user attribute
  `status` says which.

Every Optuna trial records the Tune trial id it ran as (`tune_trial_id`), so the two can be joined: one Optuna
trial per Tune trial. A driver killed after asking Optuna for a trial but before Tune saved that trial leaves an
Optuna trial RUNNING that no Tune trial knows; the resumed searcher hands it (its parameters already drawn) to
the next new Tune trial instead of asking again.
"""
from __future__ import annotations

import errno
import json
import math
from contextlib import contextmanager

import optuna
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.trial import TrialState
from ray.tune.search import Searcher

from study.outcomes import ended, told
from study.rundir import RunDirWriteError
from study.space import LaggedProposer
from study.stopping import StudyStop


class StudySearch(Searcher):
    """Suggest configurations from an Optuna study and tell it how each Tune trial went.

    Args:
        space: hyperparameter name -> Optuna distribution (`study.space.optuna_space`).
        metric, mode: the Tune result key told as the trial's value, and its direction.
        sampler: the Optuna sampler.
        study_name, storage: the Optuna study (created, or loaded when it exists: a resumed study).
        stop: where a write the storage refuses is noted (the study's `study.stopping.StudyStop`).
        proposer: when given, every trial's parameters come from it (a seed then fixes the search whatever finishes
            first: `study.space.LaggedProposer`), and `sampler` only stands behind the Optuna study.
    """

    def __init__(self, space: dict[str, optuna.distributions.BaseDistribution], metric: str, mode: str,
                 sampler: optuna.samplers.BaseSampler, study_name: str, storage: optuna.storages.BaseStorage,
                 stop: StudyStop | None = None, proposer: LaggedProposer | None = None):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        super().__init__(metric=metric, mode=mode)
        self.space = dict(space)
        self._storage = storage
        self.stop = stop or StudyStop()
        self.proposer = proposer  # the deterministic schedule (study.space.LaggedProposer); None: Optuna's sampler
        self.study = optuna.create_study(
            study_name=study_name, storage=storage, sampler=sampler, load_if_exists=True,
            direction="minimize" if mode == "min" else "maximize")
        self._trials: dict[str, optuna.Trial] = {}  # Tune trial id -> the Optuna trial asked for it
        self._last_step: dict[str, int] = {}        # last intermediate value reported, per Tune trial
        self._told: set[str] = set()
        # RUNNING trials of a study this searcher was loaded onto: asked by a driver that was killed before any
        # Tune trial ran them. A new searcher starts with all of them; a restored one with those it did not ask.
        self._unclaimed: list[int] = self._running_numbers()

    # ---- Searcher interface ------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._trials:
            with self._storage_errors():
                if self._unclaimed:
                    from study._compat import optuna_trial

                    trial = optuna_trial(self.study, self._storage, self._unclaimed[0])
                    _complete(trial, self.space)
                elif self.proposer is not None:
                    # A driver killed between enqueue and ask left its proposal WAITING: ask takes it (it is the
                    # proposal for this very place), and nothing is enqueued twice.
                    if not self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                        params = self.proposer.params_for(self.study)
                        if params is None:
                            return None  # a trial this one must see still runs: Tune asks again
                        self.study.enqueue_trial(params)
                    trial = self.study.ask(fixed_distributions=self.space)
                else:
                    trial = self.study.ask(fixed_distributions=self.space)
                trial.set_user_attr("tune_trial_id", trial_id)
                if self._unclaimed and trial.number == self._unclaimed[0]:
                    self._unclaimed.pop(0)
                self._trials[trial_id] = trial
            if trial_id not in self._trials:
                return None  # the storage refused the write: no trial now; the study stops at the end of this step
        return dict(self._trials[trial_id].params)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        trial = self._trials.get(trial_id)
        value = result.get("val_bpc")
        step = int(result.get("chars_seen", -1))
        if (trial is None or trial_id in self._told or result.get("diverged") or value is None
                or not math.isfinite(float(value)) or step <= self._last_step.get(trial_id, -1)):
            # A retried trial re-reports from its checkpoint: the steps it already reported are kept.
            return
        try:
            with self._storage_errors():
                trial.report(float(value), step)
                self._last_step[trial_id] = step
        except UpdateFinishedTrialError:
            self._told.add(trial_id)  # told by a driver that was killed before Tune saved its own state

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self._trials.get(trial_id)
        if trial is None or trial_id in self._told:
            return
        if result:  # Tune passes a trial's last result (the one it ended or was stopped at) only here
            self.on_trial_result(trial_id, result)
        self._told.add(trial_id)
        state, value, status = outcome(result, error, self.metric)
        try:
            with self._storage_errors():
                if status is not None:
                    trial.set_user_attr("status", status)
                # skip_if_finished: a driver killed after telling, before Tune saved its state, resumes the trial;
                # Optuna keeps the value it was told first.
                self.study.tell(trial, value, state=state, skip_if_finished=True)
        except UpdateFinishedTrialError:
            pass

    @contextmanager
    def _storage_errors(self):
        """A storage that refuses a write (optuna.db on a full disk) stops the study in one line, like the tables:
        raised inside Tune's result handling it would count as the trial's crash and be retried."""
        try:
            yield
        except (StorageInternalError, sqlalchemy.exc.OperationalError) as exc:
            cause = exc
            while cause.__cause__ is not None or cause.__context__ is not None:
                cause = cause.__cause__ or cause.__context__
            where = str(getattr(self._storage, "url", "the Optuna storage")).removeprefix("sqlite:///")
            error = RunDirWriteError(errno.EIO, f"cannot write {where}: {cause}".splitlines()[0])
            self.stop.note_write_failure(error)

    # ---- checkpointing (Tune saves the searcher with its experiment state) ---------------------------
    def save(self, checkpoint_path: str) -> None:
        # JSON, not a pickle: a resumed driver reads it back without running anything in it. The trials are kept
        # as numbers and found again in the storage on restore. The sampler is not saved: a restored searcher
        # keeps the one it was built with, which draws from the trials in the storage (TPE's random stream
        # starts again from its seed, so a resume is as reproducible as the history it resumes).
        state = {"numbers": {k: t.number for k, t in self._trials.items()},
                 "last_step": dict(self._last_step), "told": sorted(self._told)}
        with open(checkpoint_path, "w", encoding="utf-8") as f:
            json.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        from study._compat import optuna_trial

        with open(checkpoint_path, encoding="utf-8") as f:
            state = json.load(f)
        self.study = optuna.load_study(study_name=self.study.study_name, storage=self._storage,
                                       sampler=self.study.sampler)
        self._last_step = dict(state["last_step"])
        self._told = set(state["told"])
        # Trials a killed driver told after this checkpoint was saved: Tune may resume them, Optuna keeps them.
        finished = {t.number for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}
        self._told |= {k for k, n in state["numbers"].items() if n in finished}
        self._trials = {k: optuna_trial(self.study, self._storage, n) for k, n in state["numbers"].items()
                        if k not in self._told}
        known = set(state["numbers"].values())
        self._unclaimed = [n for n in self._running_numbers() if n not in known]

    def _running_numbers(self) -> list[int]:
        return sorted(t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def outcome(result: dict | None, error: bool, metric: str) -> tuple[TrialState, float | None, str | None]:
    """How a finished Tune trial is told to Optuna: (state, value, the `status` user attribute or None), by the
    table in study.outcomes: COMPLETE with the metric for a trial that trained its whole budget, PRUNED for one the
    scheduler stopped early, FAIL for one that crashed, diverged or reported no finite value."""
    status, _ = ended(result, error, metric)
    state = told(status)
    return state, (float(result[metric]) if state == TrialState.COMPLETE else None), (
        None if status == "completed" else status)


def _complete(trial: optuna.Trial, space: dict) -> None:
    """Suggest every parameter of `space` that `trial` lacks: a driver killed inside `ask` leaves a RUNNING trial
    with only the parameters written before the kill. An enqueued trial's missing ones come back as enqueued (Optuna
    takes them from the queue's fixed parameters), so the trial that takes its place trains the configuration the
    uninterrupted study would have (tests/study/test_soak.py)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    for name, dist in space.items():
        if name in trial.params:
            continue
        if isinstance(dist, CategoricalDistribution):
            trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, FloatDistribution):
            trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)

