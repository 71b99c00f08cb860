"""What every stage does with Tune: name, build and resume its experiment, run it to the end, and say why it stopped.

A stage (search, repeats, final) is one Tune experiment, or one per candidate, under the study's storage. These
functions are the stages' common part; each stage module holds only what it asks of Tune.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.fs
from ray import tune
from ray.tune.search import Searcher

from runcontract import PARAM_PREFIX
from study._compat import restored_searcher, set_restored_callbacks
from study.plan import Plan
from study.results import ResultsWriter
from study.search import StudySearch
from study.stopping import Interrupted, StudyStop, sigterm_as_sigint
from study.timeplan import REPORT_KEPT


def fit(tuner, expected_trials: int, stop: StudyStop):
    """Run a Tuner to the end and return its ResultGrid; raise Interrupted if a signal cut it short, and the
    write error if the run directory refused a write (noted in the study's `stop`)."""
    with sigterm_as_sigint(stop):
        results = tuner.fit()
    stop.raise_write_failure()
    if stop.terminated:
        raise Interrupted("SIGTERM")
    # After Ctrl-C Tune returns normally, leaving trials unfinished or never started.
    if results.num_terminated + results.num_errors < expected_trials:
        raise Interrupted("SIGINT")
    return results


def storage(plan: Plan) -> str:
    """Where Tune keeps this study's experiments: a pyarrow URI as given, or an absolute path."""
    return plan.storage if "://" in plan.storage else str(Path(plan.storage).resolve())


def experiment_path(plan: Plan, name: str) -> str:
    return f"{storage(plan).rstrip('/')}/{name}"


def run_config(plan: Plan, name: str, writer: ResultsWriter) -> tune.RunConfig:
    return tune.RunConfig(
        name=name,
        storage_path=storage(plan),
        callbacks=[writer],
        failure_config=tune.FailureConfig(max_failures=plan.max_failures),
        # The latest checkpoint is enough: its model.pt holds the trial's best weights so far. All go when the
        # study is over (retention: study.driver).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        verbose=0,
    )


def restored(plan: Plan, name: str, trainable, writer: ResultsWriter, param_space: dict) -> tune.Tuner | None:
    """The Tuner of an interrupted experiment, when resuming one that Tune saved; None otherwise.

    A driver killed after Tune wrote its tuner file but before the first snapshot of the experiment's state leaves
    nothing to resume: `Tuner.restore` would then start the experiment over without its param space (trials with
    the searched parameters only, on the trainer's defaults). That stage starts afresh instead.
    """
    path = experiment_path(plan, name)
    if not (plan.resume and tune.Tuner.can_restore(path) and has_experiment_state(path)):
        return None
    tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False,
                               restart_errored=False, param_space=param_space)
    # The restored run config holds the callbacks of the killed driver, and its searcher the killed driver's stop
    # reasons; use this driver's writer and stop.
    set_restored_callbacks(tuner, [writer])
    searcher = restored_searcher(tuner)
    if isinstance(searcher, StudySearch):
        searcher.stop = writer.stop
    writer.echo(f"resuming {path}")
    return tuner


def has_experiment_state(path: str) -> bool:
    """Whether Tune has saved the state of the experiment at `path` (a local path or a pyarrow URI)."""
    fs, root = pyarrow.fs.FileSystem.from_uri(path) if "://" in path else (pyarrow.fs.LocalFileSystem(), path)
    try:
        entries = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except OSError:
        return False
    return any(e.base_name.startswith("experiment_state") and e.base_name.endswith(".json") for e in entries)


def reuse_actors(plan: Plan) -> bool:
    """Reuse trial processes on one machine, where starting one (and importing torch) is ~2 s per trial.

    On a cluster a reused process keeps its trials on the node it started on, so nodes that join later
    (or start slower) would get no work: there every trial gets a fresh placement.
    """
    return plan.address is None


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def trial_params(plan: Plan, trial: pd.Series) -> dict:
    """A trial's searched hyperparameters, as plain Python values (its row of trials.parquet)."""
    params = {name: trial[PARAM_PREFIX + name] for name in plan.spec.search}
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}


def expect(plan: Plan, stage: str, limit_s: float = 0.0) -> tuple[float | None, float]:
    """(seconds planned for `stage`, seconds planned for the stages after it), for the progress line."""
    if plan.time_plan is None:
        return (limit_s or None, 0.0)
    p = plan.time_plan
    final = p["final_s"] if plan.final_chars > 0 else 0.0
    local = (p.get("local_s") or 0.0) if int(plan.spec.local["seeds"]) else 0.0
    return {"search": (p["search_s"], p["repeats_s"] + local + final + p["report_s"]),
            "repeat": (p["repeats_s"], local + final + p["report_s"]),
            "local": (local, final + p["report_s"]),
            "final": (limit_s or final, REPORT_KEPT * p["report_s"])}[stage]  # the rest went to the final model


class PointsSearch(Searcher):
    """Hand Tune a fixed list of configurations, in order (Ray's public Searcher interface; saved as JSON)."""

    def __init__(self, points: list[dict]):
        super().__init__(metric="best_val_bpc", mode="min")
        self.points, self.next = [dict(p) for p in points], 0
        self._given: dict[str, int] = {}

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id in self._given:
            return dict(self.points[self._given[trial_id]])
        if self.next >= len(self.points):
            return Searcher.FINISHED
        self._given[trial_id], self.next = self.next, self.next + 1
        return dict(self.points[self._given[trial_id]])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w", encoding="utf-8") as f:
            json.dump({"next": self.next, "given": self._given}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, encoding="utf-8") as f:
            state = json.load(f)
        self.next, self._given = int(state["next"]), dict(state["given"])
