"""The study itself: start or join Ray, search with Optuna under ASHA, retrain the best with other seeds.

Only `study.run` calls this, after every input has been checked.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import optuna
import pandas as pd
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from charrnn.metrics import corpus_words, ngram_hashes
from study._compat import set_restored_callbacks
from study.inputs import UsageError
from study.results import ResultsWriter, TextIndex
from study.search import StudySearch
from study.space import make_sampler, optuna_space
from study.trainable import run_trial

SEARCH_EXPERIMENT = "tune"
REPEAT_EXPERIMENT = "tune-repeats"
TRIALS_PER_GPU = 4


class Interrupted(Exception):
    """The study was stopped by SIGINT/SIGTERM; finished trials are saved and it can be resumed."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


_TERMINATED = threading.Event()


@contextmanager
def _sigterm_as_sigint():
    """SIGTERM stops the study the way Ctrl-C does: Tune saves its state and in-flight trials stay resumable."""
    def on_term(signum, frame):
        _TERMINATED.set()
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, on_term) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _fit(tuner, expected_trials: int) -> None:
    """Run a Tuner to the end; raise Interrupted if a signal cut it short."""
    with _sigterm_as_sigint():
        results = tuner.fit()
    if _TERMINATED.is_set():
        raise Interrupted("SIGTERM")
    # After Ctrl-C Tune returns normally, leaving trials unfinished or never started.
    if results.num_terminated + results.num_errors < expected_trials:
        raise Interrupted("SIGINT")


def start_ray(address: str | None, verbose: bool = False) -> None:
    # Tune's console tables and per-checkpoint chatter are replaced by the progress line (study.progress);
    # a trial's errors still reach the user through Tune's error files (see results.error_summary).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Start-up chatter (Ray's token-authentication notice and "Started a local Ray instance", Optuna's
    # "A new study created") only with --verbose; Ray's warnings after start-up still show.
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    quiet = logging.INFO if verbose else logging.ERROR
    if address:
        ray.init(address=address, logging_level=quiet, log_to_driver=verbose)
    else:
        # "local" always starts a fresh instance, never a stale cluster named in /tmp/ray.
        ray.init(address="local", include_dashboard=False, logging_level=quiet, log_to_driver=verbose)
    logging.getLogger("ray").setLevel(logging.INFO if verbose else logging.WARNING)
    # On Ctrl-C these two say "Resume experiment with: Tuner.restore(...)" and that Tune's own result files
    # are missing: the CLI prints the resume command of the study, and its results are in the tables.
    for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis"):
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)


def check_storage_reachable(storage: str) -> None:
    """A local --storage must be one directory that every node sees, or trials elsewhere cannot checkpoint."""
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if "://" in storage or len(nodes) < 2:
        return
    marker = Path(storage) / f".storage-check-{os.getpid()}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    try:
        seen = ray.get([_path_exists.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
            for n in nodes])
    finally:
        marker.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen) if not ok]
    if blind:
        raise UsageError(f"--storage {storage} is not shared with the nodes at {', '.join(blind)}; on a "
                         "multi-node cluster give a shared file system path or a URI such as s3://bucket/prefix")


@ray.remote(num_cpus=0)
def _path_exists(path: str) -> bool:
    return os.path.exists(path)


def gpus_per_trial(requested: float | None) -> float:
    have = ray.cluster_resources().get("GPU", 0)
    if requested is None:
        return 1.0 / TRIALS_PER_GPU if have > 0 else 0.0
    if requested > 0 and have == 0:
        raise UsageError(f"--gpus-per-trial {requested} but the Ray cluster has no GPUs")
    return requested


def make_text_index(corpus) -> TextIndex:
    text = corpus.vocab.decode_array(corpus.train)
    return TextIndex(corpus_words(text), ngram_hashes(corpus.train), corpus.vocab.encode)


def run_study(plan) -> str:
    """Run (or resume) the search and the repeats; returns the closing summary text."""
    spec, run_dir = plan.spec, plan.run_dir.resolve()
    start_ray(plan.address, plan.verbose)
    try:
        check_storage_reachable(_storage(plan))
        gpus = gpus_per_trial(plan.gpus_per_trial)
        cpus = plan.cpus_per_trial
        val_chars = spec.val_chars or len(plan.corpus.val)
        # Into the object store once; every trial reads these arrays without re-reading or re-encoding.
        data = {"train": plan.corpus.train, "val": plan.corpus.val[:val_chars], "vocab": plan.corpus.vocab.chars}
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, data=data, cpus=cpus, gpus=gpus), {"cpu": cpus, "gpu": gpus}
        )
        index = make_text_index(plan.corpus)
        writer = ResultsWriter(run_dir, list(spec.search), index, role="search", total_trials=plan.trials)
        try:
            _search(plan, trainable, writer)
            if plan.repeats > 0:
                _repeat_best(plan, trainable, writer)
        finally:
            writer.write()
    finally:
        ray.shutdown()
    return _summary(plan, run_dir, writer)


def _storage(plan) -> str:
    return plan.storage if "://" in plan.storage else str(Path(plan.storage).resolve())


def _experiment_path(plan, name: str) -> str:
    storage = _storage(plan)
    return f"{storage.rstrip('/')}/{name}"


def _run_config(plan, name: str, writer: ResultsWriter) -> tune.RunConfig:
    return tune.RunConfig(
        name=name,
        storage_path=_storage(plan),
        callbacks=[writer],
        failure_config=tune.FailureConfig(max_failures=plan.max_failures),
        # The latest checkpoint is enough: its model.pt holds the trial's best weights so far.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        verbose=0,
    )


def _restored(plan, name: str, trainable, writer: ResultsWriter) -> tune.Tuner | None:
    """The Tuner of an interrupted experiment, when resuming one; None otherwise."""
    path = _experiment_path(plan, name)
    if not (plan.resume and tune.Tuner.can_restore(path)):
        return None
    tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False,
                               restart_errored=False)
    # The restored run config holds the callbacks of the killed driver; use this driver's writer.
    set_restored_callbacks(tuner, [writer])
    writer.echo(f"resuming {path}")
    return tuner


def _search(plan, trainable, writer: ResultsWriter) -> None:
    spec = plan.spec
    tuner = _restored(plan, SEARCH_EXPERIMENT, trainable, writer)
    if tuner is None:
        storage = optuna.storages.RDBStorage(f"sqlite:///{plan.run_dir.resolve() / 'optuna.db'}")
        searcher = StudySearch(
            optuna_space(spec), metric="val_bpc", mode="min", sampler=make_sampler(spec, plan.seed),
            study_name=spec.name, storage=storage,
        )
        if plan.max_concurrent:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=plan.max_concurrent)
        if spec.scheduler["name"] == "asha":
            scheduler = ASHAScheduler(
                time_attr="chars_seen", max_t=spec.budget_chars,
                grace_period=spec.eval_every * spec.scheduler["grace_evals"],
                reduction_factor=spec.scheduler["reduction_factor"],
            )
        else:
            scheduler = FIFOScheduler()
        tuner = tune.Tuner(
            trainable,
            param_space={**spec.fixed, **spec.run_settings(), "seed": plan.seed},
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=plan.trials,
                                        metric="val_bpc", mode="min",
                                        max_concurrent_trials=plan.max_concurrent,
                                        reuse_actors=_reuse_actors(plan),
                                        trial_dirname_creator=_trial_dirname),
            run_config=_run_config(plan, SEARCH_EXPERIMENT, writer),
        )
    _fit(tuner, plan.trials)
    _fail_orphans(plan)


def _fail_orphans(plan) -> None:
    """Tell FAIL to the Optuna trials still RUNNING once the search is over.

    A driver killed between Optuna's ask and Tune's saving of the trial leaves an Optuna trial that no Tune
    trial will ever finish (seen after SIGKILL + --resume). Left RUNNING, TPE's constant liar would keep
    treating it as in flight and the dashboard would show it running forever.
    """
    storage = optuna.storages.RDBStorage(f"sqlite:///{plan.run_dir.resolve() / 'optuna.db'}")
    study = optuna.load_study(study_name=plan.spec.name, storage=storage)
    study_id = storage.get_study_id_from_name(plan.spec.name)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_user_attr(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number),
                                    "status", "orphaned")
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def _reuse_actors(plan) -> bool:
    """Reuse trial processes on one machine, where starting one (and importing torch) is ~2 s per trial.

    On a cluster a reused process keeps its trials on the node it started on, so nodes that join later
    (or start slower) would get no work: there every trial gets a fresh placement.
    """
    return plan.address is None


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def best_search_trial(trials: pd.DataFrame) -> pd.Series | None:
    """The search trial with the lowest val_bpc among those that trained their whole budget."""
    search = trials[(trials.get("role", "search") == "search")]
    done = search[(search["status"] == "completed") & search["val_bpc"].notna()]
    if done.empty:
        done = search[search["val_bpc"].notna() & search["status"].isin(["completed", "stopped"])]
    if done.empty:
        return None
    return done.loc[done["val_bpc"].idxmin()]


def _repeat_best(plan, trainable, writer: ResultsWriter) -> None:
    """Retrain the best configuration with `repeats` other seeds: the seed noise floor for the report."""
    trials = writer.trials_frame()
    best = best_search_trial(trials)
    if best is None:
        writer.echo("no trial finished; skipping the seed repeats")
        return
    seeds = [plan.seed + k for k in range(1, plan.repeats + 1)]
    params = {name: best[f"param.{name}"] for name in plan.spec.search}
    params = {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
    writer.role, writer.total_trials = "repeat", plan.repeats
    writer.extra = {"repeat_of": str(best["trial_id"])}
    tuner = _restored(plan, REPEAT_EXPERIMENT, trainable, writer)
    if tuner is not None:
        _fit(tuner, plan.repeats)
        return
    writer.echo(f"retraining the best configuration (trial {best['trial_id']}) with seeds {seeds}")
    tuner = tune.Tuner(
        trainable,
        param_space={**plan.spec.fixed, **plan.spec.run_settings(), **params, "seed": tune.grid_search(seeds)},
        tune_config=tune.TuneConfig(metric="val_bpc", mode="min", max_concurrent_trials=plan.max_concurrent,
                                    reuse_actors=_reuse_actors(plan), trial_dirname_creator=_trial_dirname),
        run_config=_run_config(plan, REPEAT_EXPERIMENT, writer),
    )
    _fit(tuner, len(seeds))


def _summary(plan, run_dir: Path, writer: ResultsWriter) -> str:
    trials = writer.trials_frame()
    search = trials[trials["role"] == "search"]
    counts = search["status"].value_counts().to_dict()
    lines = [f"study {plan.spec.name}: {len(search)} trials "
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    best = best_search_trial(trials)
    if best is None:
        lines.append("no trial reached an evaluation.")
    else:
        params = ", ".join(f"{n}={_fmt(best[f'param.{n}'])}" for n in plan.spec.search)
        lines.append(f"best trial {best['trial_id']}: val_bpc {best['val_bpc']:.4f} after "
                     f"{int(best['chars_seen']):,} chars ({best['wall_s']:.0f} s)")
        lines.append(f"  {params}")
        repeats = trials[(trials["role"] == "repeat") & trials["val_bpc"].notna()]
        if len(repeats):
            lines.append(f"  retrained with {len(repeats)} other seeds: val_bpc "
                         + ", ".join(f"{v:.4f}" for v in repeats["val_bpc"]))
        samples = pd.DataFrame(writer.samples)
        mine = samples[samples["trial_id"] == best["trial_id"]] if len(samples) else samples
        if len(mine):
            finals = mine[mine["kind"] == "final"]
            pick = (finals.iloc[(finals["temperature"] - 0.8).abs().argsort()].iloc[0] if len(finals)
                    else mine.iloc[-1])
            lines.append(f"  sample (temperature {pick['temperature']}):")
            lines.append("    " + str(pick["text"]).strip().replace("\n", "\n    "))
        if best.get("checkpoint"):
            lines.append(f"  checkpoint: {best['checkpoint']}/model.pt")
    lines.append(f"run directory: {run_dir}")
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)
