"""The search stage: Optuna suggests, ASHA stops the poor trials early, and the rungs' counts are recorded."""
from __future__ import annotations

import optuna
import pandas as pd
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from runcontract import FINISHED
from study.outcomes import told
from study.plan import Plan
from study.results import ResultsWriter
from study.rundir import RunDir
from study.schedule import HalvingASHA
from study.search import StudySearch
from study.space import LaggedProposer, make_sampler, optuna_space
from study.stages.experiment import expect, fit, restored, reuse_actors, run_config, trial_dirname
from study.timeplan import planned_counts

EXPERIMENT = "tune"


def run(plan: Plan, trainable, writer: ResultsWriter) -> None:
    """Run (or resume) the search's `plan.trials` trials, then settle what Optuna still holds as running."""
    spec = plan.spec
    writer.stage("search", plan.trials, expect=expect(plan, "search"))
    param_space = {**spec.fixed, **spec.run_settings(), "seed": plan.seed}
    tuner = restored(plan, EXPERIMENT, trainable, writer, param_space)
    if tuner is None:
        storage = optuna.storages.RDBStorage(RunDir(plan.run_dir).optuna_url)
        searcher = StudySearch(
            optuna_space(spec), metric="best_val_bpc", mode="min", sampler=make_sampler(spec, plan.seed),
            study_name=plan.study_name, storage=storage, stop=writer.stop,
            proposer=LaggedProposer(spec, plan.seed, lag(plan)),
        )
        if plan.max_concurrent:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=plan.max_concurrent)
        if spec.scheduler["name"] == "asha":
            scheduler = HalvingASHA(
                time_attr="chars_seen", max_t=spec.budget_chars, grace_period=spec.grace_chars,
                reduction_factor=spec.scheduler["reduction_factor"], rungs=spec.rungs(),
                planned=planned_counts(plan.trials, len(spec.rungs()), spec.scheduler["reduction_factor"]),
            )
        else:
            scheduler = FIFOScheduler()
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=plan.trials,
                                        metric="best_val_bpc", mode="min",
                                        max_concurrent_trials=plan.max_concurrent,
                                        reuse_actors=reuse_actors(plan),
                                        trial_dirname_creator=trial_dirname),
            run_config=run_config(plan, EXPERIMENT, writer),
        )
    fit(tuner, plan.trials, writer.stop)
    settle_optuna(plan, writer.table)


def lag(plan: Plan) -> int:
    """How many of the latest trials a new search trial's proposal may not see: twice the trials at once (the plan's,
    so a replayed plan proposes the same trials), or twice --max-concurrent, or 4."""
    parallel = (plan.time_plan or {}).get("parallel") or plan.max_concurrent or 2
    return 2 * int(parallel)


def settle_optuna(plan: Plan, table) -> None:
    """Once the search is over, no Optuna trial may stay RUNNING: tell each what the tables say of its Tune trial.

    Two ways one is left: the storage refused the tell (a full disk, then --resume), so the table holds the trial's
    ending and Optuna does not; or a driver was killed between Optuna's ask and Tune's saving of the trial and no
    new trial took the asked one over (study.search hands it to the next one), so no Tune trial ran it
    ("orphaned", FAIL). Left RUNNING, TPE's constant liar would keep treating it as in flight and the dashboard
    would show it running forever.
    """
    storage = optuna.storages.RDBStorage(RunDir(plan.run_dir).optuna_url)
    study = optuna.load_study(study_name=plan.study_name, storage=storage)
    study_id = storage.get_study_id_from_name(plan.study_name)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        row = table.trials.get(trial.user_attrs.get("tune_trial_id"))
        status = row["status"] if row is not None and row["status"] in FINISHED else "orphaned"
        state = told(status)
        value = row["best_val_bpc"] if state == optuna.trial.TrialState.COMPLETE else None
        if status != "completed":
            storage.set_trial_user_attr(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number),
                                        "status", status)
        study.tell(trial.number, value, state=state)


def record_rungs(plan: Plan, trials: pd.DataFrame) -> None:
    """Per rung (and the full budget), the trials synchronous halving would send there and those that got there:
    study.json `scheduler.rung_counts`."""
    spec = plan.spec
    if spec.scheduler["name"] != "asha":
        return
    search = trials[trials["role"] == "search"]
    points = spec.rungs() + [spec.budget_chars]
    planned = planned_counts(plan.trials, len(spec.rungs()), spec.scheduler["reduction_factor"])
    reached = [int((search["chars_seen"] >= p).sum()) for p in points]
    RunDir(plan.run_dir).update_study({"scheduler": {"rung_counts": [
        {"chars": int(p), "steps": int(p // spec.step_chars_range()[1]), "planned": n, "reached": r}
        for p, n, r in zip(points, planned, reached)]}})
