"""The study itself: start or join Ray, search with Optuna under ASHA, retrain the best with other seeds.

Only `study.run` calls this, after every input has been checked.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pyarrow.fs
import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from charrnn.baselines import compute_baselines
from charrnn.checkpoint import MODEL_FILE
from charrnn.metrics import corpus_words, ngram_hashes
from charrnn.sample import printable
from study._compat import set_restored_callbacks
from study.cluster import check_storage_reachable, final_resources, gpus_per_trial, start_ray
from study.results import ResultsWriter, checkpoint_exists, delete_trial_checkpoints
from study.rundir import BASELINES_FILE, FINISHED, RunDir, RunDirWriteError, TextIndex, clear_write_failures, write_failure
from study.schedule import QuorumASHA
from study.search import StudySearch
from study.space import make_sampler, optuna_space
from study.trainable import run_trial

SEARCH_EXPERIMENT = "tune"
REPEAT_EXPERIMENT = "tune-repeats"
FINAL_EXPERIMENT = "tune-final"
# When the best configuration diverges in a seed repeat, the next best is tried, up to this many in all.
MAX_FINAL_CANDIDATES = 3


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


def _fit(tuner, expected_trials: int):
    """Run a Tuner to the end and return its ResultGrid; raise Interrupted if a signal cut it short, and the
    write error if the run directory refused a write (study.rundir.write_failure)."""
    with _sigterm_as_sigint():
        results = tuner.fit()
    if write_failure() is not None:
        raise write_failure()
    if _TERMINATED.is_set():
        raise Interrupted("SIGTERM")
    # After Ctrl-C Tune returns normally, leaving trials unfinished or never started.
    if results.num_terminated + results.num_errors < expected_trials:
        raise Interrupted("SIGINT")
    return results


def make_text_index(corpus) -> TextIndex:
    text = corpus.vocab.decode_array(corpus.train)
    return TextIndex(corpus_words(text), ngram_hashes(corpus.train), corpus.vocab.encode)


def run_study(plan) -> str:
    """Run (or resume) the search, the seed repeats and the final model; returns the closing summary text."""
    spec, run_dir = plan.spec, plan.run_dir.resolve()
    clear_write_failures()
    baselines = _start_baselines(plan)
    start_ray(plan.address, plan.verbose)
    try:
        check_storage_reachable(_storage(plan))
        gpus = gpus_per_trial(plan.gpus_per_trial)
        cpus = plan.cpus_per_trial
        val_chars = spec.val_chars or len(plan.corpus.val)
        # Into the object store once; every trial reads these arrays without re-reading or re-encoding.
        # The test text is not among them: only the final model sees it, once.
        data = {"train": plan.corpus.train, "val": plan.corpus.val[:val_chars], "vocab": plan.corpus.vocab.chars}
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, data=data, cpus=cpus, gpus=gpus), {"cpu": cpus, "gpu": gpus}
        )
        index = make_text_index(plan.corpus)
        writer = ResultsWriter(run_dir, list(spec.search), index)
        try:
            _search(plan, trainable, writer)
            chosen = _choose_final(plan, trainable, writer)
            if plan.final_chars > 0 and chosen is not None:
                _final(plan, chosen, writer)
            _retire_checkpoints(plan, writer)
        finally:
            _last_write(writer)
    finally:
        ray.shutdown()
        baselines.join()
    return _summary(plan, run_dir, writer)


def _retire_checkpoints(plan, writer: ResultsWriter) -> None:
    """Retention: the study is over, so no resume can use a trial checkpoint; delete them all (study.results)."""
    delete_trial_checkpoints(_storage(plan), set(writer.table.trials))
    writer.table.forget_checkpoints()


def _last_write(writer: ResultsWriter) -> None:
    """Write the tables once more as the study ends or stops; after a failed write the tables stay as last
    written, and the failure stops the study."""
    writer.write()
    if write_failure() is not None:
        raise write_failure()


def _start_baselines(plan) -> threading.Thread:
    """Score the compressor baselines on the validation and test text, beside the study (lzma and PPMd
    release the GIL); written once to baselines.parquet, kept when resuming."""
    run_dir = RunDir(plan.run_dir)

    def work():
        if run_dir.has_baselines():
            return
        c, vocab = plan.corpus, plan.corpus.vocab
        rows = compute_baselines(vocab.decode_array(c.train), vocab.decode_array(c.val), vocab.decode_array(c.test),
                                 vocab.chars)
        try:
            run_dir.write_baselines(rows)
        except RunDirWriteError as exc:  # the study itself stops at its next write, with the same reason
            print(f"warning: {exc}", flush=True)

    thread = threading.Thread(target=work, name="baselines", daemon=True)
    thread.start()
    return thread


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
        # The latest checkpoint is enough: its model.pt holds the trial's best weights so far. All go when the
        # study is over (retention: _retire_checkpoints).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        verbose=0,
    )


def _restored(plan, name: str, trainable, writer: ResultsWriter, param_space: dict) -> tune.Tuner | None:
    """The Tuner of an interrupted experiment, when resuming one that Tune saved; None otherwise.

    A driver killed after Tune wrote its tuner file but before the first snapshot of the experiment's state leaves
    nothing to resume: `Tuner.restore` would then start the experiment over without its param space (trials with
    the searched parameters only, on the trainer's defaults). That stage starts afresh instead.
    """
    path = _experiment_path(plan, name)
    if not (plan.resume and tune.Tuner.can_restore(path) and _has_experiment_state(path)):
        return None
    tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False,
                               restart_errored=False, param_space=param_space)
    # The restored run config holds the callbacks of the killed driver; use this driver's writer.
    set_restored_callbacks(tuner, [writer])
    writer.echo(f"resuming {path}")
    return tuner


def _has_experiment_state(path: str) -> bool:
    """Whether Tune has saved the state of the experiment at `path` (a local path or a pyarrow URI)."""
    fs, root = pyarrow.fs.FileSystem.from_uri(path) if "://" in path else (pyarrow.fs.LocalFileSystem(), path)
    try:
        entries = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except OSError:
        return False
    return any(e.base_name.startswith("experiment_state") and e.base_name.endswith(".json") for e in entries)


def _search(plan, trainable, writer: ResultsWriter) -> None:
    spec = plan.spec
    writer.stage("search", plan.trials)
    param_space = {**spec.fixed, **spec.run_settings(), "seed": plan.seed}
    tuner = _restored(plan, SEARCH_EXPERIMENT, trainable, writer, param_space)
    if tuner is None:
        storage = optuna.storages.RDBStorage(RunDir(plan.run_dir).optuna_url)
        searcher = StudySearch(
            optuna_space(spec), metric="best_val_bpc", mode="min", sampler=make_sampler(spec, plan.seed),
            study_name=plan.study_name, storage=storage,
        )
        if plan.max_concurrent:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=plan.max_concurrent)
        if spec.scheduler["name"] == "asha":
            rungs, rf = spec.rungs(), spec.scheduler["reduction_factor"]
            scheduler = QuorumASHA(
                time_attr="chars_seen", max_t=spec.budget_chars, grace_period=spec.grace_chars,
                reduction_factor=rf, rungs=rungs, quorum=spec.quorum(),
            )
        else:
            scheduler = FIFOScheduler()
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=plan.trials,
                                        metric="best_val_bpc", mode="min",
                                        max_concurrent_trials=plan.max_concurrent,
                                        reuse_actors=_reuse_actors(plan),
                                        trial_dirname_creator=_trial_dirname),
            run_config=_run_config(plan, SEARCH_EXPERIMENT, writer),
        )
    _fit(tuner, plan.trials)
    _settle_optuna(plan, writer.table)


def _settle_optuna(plan, table) -> None:
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
        state = _TOLD_AS.get(status, optuna.trial.TrialState.FAIL)  # as study.search.outcome tells them
        value = row["best_val_bpc"] if state == optuna.trial.TrialState.COMPLETE else None
        if status != "completed":
            storage.set_trial_user_attr(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number),
                                        "status", status)
        study.tell(trial.number, value, state=state)


_TOLD_AS = {"completed": optuna.trial.TrialState.COMPLETE, "stopped": optuna.trial.TrialState.PRUNED}


def _reuse_actors(plan) -> bool:
    """Reuse trial processes on one machine, where starting one (and importing torch) is ~2 s per trial.

    On a cluster a reused process keeps its trials on the node it started on, so nodes that join later
    (or start slower) would get no work: there every trial gets a fresh placement.
    """
    return plan.address is None


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def ranked_search_trials(trials: pd.DataFrame, eval_at: list[int]) -> pd.DataFrame:
    """Search trials that trained normally, best first: those that got to a later evaluation point first (a
    value at a smaller budget is not comparable with one at a larger), by val_bpc among equals."""
    search = trials[trials.get("role", "search") == "search"]
    ok = search[search["best_val_bpc"].notna() & search["status"].isin(["completed", "stopped"])].copy()
    ok["_reached"] = np.searchsorted(np.asarray(eval_at), ok["chars_seen"].to_numpy(), side="right")
    return ok.sort_values(["_reached", "best_val_bpc"], ascending=[False, True]).drop(columns="_reached")


def best_search_trial(trials: pd.DataFrame, eval_at: list[int]) -> pd.Series | None:
    """The search trial with the lowest best_val_bpc among those that got furthest (normally: the whole budget)."""
    ranked = ranked_search_trials(trials, eval_at)
    return None if ranked.empty else ranked.iloc[0]


def _params(plan, trial: pd.Series) -> dict:
    params = {name: trial[f"param.{name}"] for name in plan.spec.search}
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}


def unstable_repeats(trials: pd.DataFrame, trial_id: str) -> tuple[int, int]:
    """(repeats that diverged or failed, repeats) of one search trial's configuration."""
    rep = trials[(trials.get("role", "search") == "repeat") & (trials.get("repeat_of") == trial_id)]
    return int(rep["status"].isin(["diverged", "failed"]).sum()), len(rep)


def _choose_final(plan, trainable, writer: ResultsWriter) -> pd.Series | None:
    """Retrain the best configuration with `repeats` other seeds (the noise floor for the report, and a check
    that it trains reliably); a configuration that diverges in any seed is not handed over as the final model,
    and the next best is checked instead. Returns the search trial whose configuration the final model trains."""
    ranked = ranked_search_trials(writer.table.trials_frame(), plan.spec.eval_at())
    if ranked.empty:
        writer.echo("no trial finished; skipping the seed repeats and the final model")
        return None
    if plan.repeats == 0:
        return ranked.iloc[0]
    for k, (_, candidate) in enumerate(ranked.head(MAX_FINAL_CANDIDATES).iterrows()):
        _repeat(plan, trainable, writer, candidate, REPEAT_EXPERIMENT if k == 0 else f"{REPEAT_EXPERIMENT}-{k + 1}")
        bad, n = unstable_repeats(writer.table.trials_frame(), str(candidate["trial_id"]))
        if not bad:
            return candidate
        writer.echo(f"trial {candidate['trial_id']}'s configuration is unstable: it diverged or failed in {bad} of "
                    f"{n} seed repeats; it is not handed over as the final model")
    writer.echo(f"none of the {MAX_FINAL_CANDIDATES} best configurations trained reliably in every seed; "
                "no final model")
    return None


def _repeat(plan, trainable, writer: ResultsWriter, best: pd.Series, experiment: str) -> None:
    """Retrain one configuration with `repeats` other seeds, on the search's schedule up to `repeat_chars`."""
    seeds = [plan.seed + k for k in range(1, plan.repeats + 1)]
    writer.stage("repeat", plan.repeats, repeat_of=str(best["trial_id"]))
    stop = plan.spec.repeat_chars or plan.spec.budget_chars
    param_space = {**plan.spec.fixed, **plan.spec.run_settings(), **_params(plan, best), "stop_chars": stop,
                   "seed": tune.grid_search(seeds)}
    tuner = _restored(plan, experiment, trainable, writer, param_space)
    if tuner is not None:
        _fit(tuner, plan.repeats)
        return
    writer.echo(f"retraining the best configuration (trial {best['trial_id']}) with seeds {seeds} "
                f"to {stop:,} characters")
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric="best_val_bpc", mode="min", max_concurrent_trials=plan.max_concurrent,
                                    reuse_actors=_reuse_actors(plan), trial_dirname_creator=_trial_dirname),
        run_config=_run_config(plan, experiment, writer),
    )
    _fit(tuner, len(seeds))


def _final(plan, chosen: pd.Series, writer: ResultsWriter) -> None:
    """Train the chosen configuration to convergence and score it once on the test text."""
    final = plan.spec.final
    cpus, gpus = final_resources()
    corpus = plan.corpus
    data = {"train": corpus.train, "val": corpus.val[: final["val_chars"] or len(corpus.val)], "test": corpus.test,
            "vocab": corpus.vocab.chars}
    trainable = tune.with_resources(tune.with_parameters(run_trial, data=data, cpus=cpus, gpus=gpus),
                                    {"cpu": cpus, "gpu": gpus})
    writer.stage("final", 1, repeat_of=str(chosen["trial_id"]))
    minutes = plan.final_minutes
    param_space = {**plan.spec.fixed, **plan.spec.run_settings(), **_params(plan, chosen),
                   "budget_chars": plan.final_chars, "eval_at": [], "evals_per_trial": final["evals"],
                   "val_chars": 0, "patience": final["patience"], "min_delta": final["min_delta"],
                   "time_limit_s": 60.0 * minutes, "seed": plan.seed}
    tuner = _restored(plan, FINAL_EXPERIMENT, trainable, writer, param_space)
    if tuner is None:
        writer.echo(f"final model: trial {chosen['trial_id']}'s configuration, up to {plan.final_chars:,} characters"
                    + (f" or {minutes:g} minutes" if minutes else "") + f", on {cpus:g} CPUs"
                    + (" and a GPU" if gpus else "") + "; scored once on the test text")
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(metric="best_val_bpc", mode="min", num_samples=1,
                                        trial_dirname_creator=_trial_dirname),
            run_config=_run_config(plan, FINAL_EXPERIMENT, writer),
        )
    results = _fit(tuner, 1)
    result = results[0]
    # A resume of a study that had ended finds the checkpoint deleted (retention) and the model installed.
    if result.checkpoint is not None and not result.error and checkpoint_exists(result.checkpoint):
        with result.checkpoint.as_directory() as directory:
            RunDir(plan.run_dir).install_final_model(Path(directory) / MODEL_FILE)


def _summary(plan, run_dir: Path, writer: ResultsWriter) -> str:
    """The closing summary: the final model first (its test score beside the baselines, its text, how to sample
    more), then the search."""
    trials = writer.table.trials_frame()
    samples = pd.DataFrame(writer.table.samples)
    lines = _final_lines(plan, run_dir, trials, samples)
    search = trials[trials["role"] == "search"]
    counts = search["status"].value_counts().to_dict()
    lines.append(f"study {plan.spec.name}: {len(search)} search trials "
                 + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    best = best_search_trial(trials, plan.spec.eval_at())
    if best is None:
        lines.append("no trial reached an evaluation.")
    else:
        params = ", ".join(f"{n}={_fmt(best[f'param.{n}'])}" for n in plan.spec.search)
        lines.append(f"best search trial {best['trial_id']}: best val_bpc {best['best_val_bpc']:.4f} after "
                     f"{int(best['chars_seen']):,} chars ({best['wall_s']:.0f} s)")
        lines.append(f"  {params}")
        repeats = trials[(trials["role"] == "repeat") & (trials.get("repeat_of") == best["trial_id"])]
        if len(repeats):
            lines.append(f"  retrained with {len(repeats)} other seeds to {int(repeats['chars_seen'].max()):,} chars: "
                         + ", ".join(f"{v:.4f}" if np.isfinite(v) else s
                                     for v, s in zip(repeats["best_val_bpc"], repeats["status"])))
            bad, n = unstable_repeats(trials, str(best["trial_id"]))
            if bad:
                lines.append(f"  unstable: it diverged or failed in {bad} of {n} seeds, so it is not the final model")
    lines.append(f"run directory: {run_dir}")
    return "\n".join(lines)


def _final_lines(plan, run_dir: Path, trials: pd.DataFrame, samples: pd.DataFrame) -> list[str]:
    final = trials[trials["role"] == "final"]
    if final.empty:
        why = ("--final-chars 0" if plan.final_chars == 0 else "no configuration trained reliably"
               if len(trials[trials["role"] == "repeat"]) else "no search trial finished")
        return [f"no final model ({why})."]
    row = final.iloc[-1]
    if row["status"] != "completed" or not np.isfinite(row.get("test_bpc", np.nan)):
        return [f"final model {row['trial_id']}: {row['status']}" + (f" ({row['error']})" if row.get("error") else "")]
    refs = _baseline_refs(run_dir)
    lines = [f"final model: test {row['test_bpc']:.3f} bits/char" + (f" ({refs})" if refs else "")
             + f"; val {row['best_val_bpc']:.3f} after {int(row['chars_seen']):,} chars in {row['wall_s'] / 60:.1f} min",
             "  " + ", ".join(f"{n}={_fmt(row[f'param.{n}'])}" for n in plan.spec.search)
             + f" (search trial {row['repeat_of']}'s configuration)"]
    mine = samples[(samples["trial_id"] == row["trial_id"]) & (samples["kind"] == "final")] if len(samples) else samples
    for _, s in mine.sort_values("temperature").iterrows():
        lines.append(f"  sample at temperature {s['temperature']:g}:")
        lines.append("    " + printable(str(s["text"]).strip()).replace("\n", "\n    "))
    lines.append(f"  more text: python -m charrnn.sample --run {run_dir} --temperature 0.8 --length 1000")
    return lines


def _baseline_refs(run_dir: Path) -> str:
    if not RunDir(run_dir).has_baselines():
        return ""
    b = pd.read_parquet(RunDir(run_dir) / BASELINES_FILE)
    b = b[b["split"] == "test"].set_index("method")["bpc"]
    names = {"ppmd": "PPMd", "xz": "xz", "unigram": "unigram"}
    return ", ".join(f"{names.get(m, m)} {v:.3f}" for m, v in b.items())


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)
