"""The study itself: start or join Ray, search with Optuna under ASHA, retrain the best with other seeds.

Only `study.run` calls this, after every input has been checked.
"""
from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pyarrow.fs
import ray
import torch
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from charrnn.baselines import compute_baselines
from charrnn.checkpoint import MODEL_FILE
from charrnn.config import BASE_LR, TrainConfig
from charrnn.metrics import corpus_words, ngram_hashes
from study._compat import restored_searcher, set_restored_callbacks
from study import selection
from study.closing import summary
from study.cluster import check_storage_reachable, final_resources, gpus_per_trial, start_ray
from study.inputs import UsageError
from study.outcomes import told
from study.results import ResultsWriter, checkpoint_exists, delete_trial_checkpoints
from study.rundir import FINISHED, RunDir, RunDirWriteError, TextIndex
from study.schedule import HalvingASHA
from study.search import StudySearch
from study.space import make_sampler, optuna_space
from study.stopping import Interrupted, StudyStop, sigterm_as_sigint
from study.timeplan import PlanError, TimePlan, final_seconds, make_plan, planned_counts
from study.trainable import run_trial

SEARCH_EXPERIMENT = "tune"
REPEAT_EXPERIMENT = "tune-repeats"
FINAL_EXPERIMENT = "tune-final"


def _fit(tuner, expected_trials: int, stop: StudyStop):
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


def make_text_index(corpus) -> TextIndex:
    text = corpus.vocab.decode_array(corpus.train)
    return TextIndex(corpus_words(text), ngram_hashes(corpus.train), corpus.vocab.encode)


def run_study(plan) -> str:
    """Run (or resume) the search, the seed repeats and the final model; returns the closing summary text."""
    spec, run_dir = plan.spec, plan.run_dir.resolve()
    stop = StudyStop()  # this study's: the signal handler, the writer and the searcher note why it must stop
    baselines = _start_baselines(plan)
    start_ray(plan.address, plan.verbose)
    try:
        check_storage_reachable(_storage(plan))
        gpus = gpus_per_trial(plan.gpus_per_trial)
        cpus = plan.cpus_per_trial
        _plan_time(plan, cpus, gpus)
        spec = plan.spec
        val_chars = spec.val_chars or len(plan.corpus.val)
        # Into the object store once; every trial reads these arrays without re-reading or re-encoding.
        # The test text is not among them: only the final model sees it, once.
        data = {"train": plan.corpus.train, "val": plan.corpus.val[:val_chars], "vocab": plan.corpus.vocab.chars}
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, data=data, cpus=cpus, gpus=gpus), {"cpu": cpus, "gpu": gpus}
        )
        index = make_text_index(plan.corpus)
        writer = ResultsWriter(run_dir, list(spec.search), index, stop=stop)
        try:
            _search(plan, trainable, writer)
            _record_rungs(plan, writer.table.trials_frame())
            chosen = _choose_final(plan, trainable, writer)
            if plan.final_chars > 0 and chosen is not None:
                _final(plan, chosen, writer)
            _retire_checkpoints(plan, writer)
        finally:
            _last_write(writer)
    finally:
        ray.shutdown()
        baselines.join()
    return summary(plan, run_dir, writer.table.trials_frame(), pd.DataFrame(writer.table.samples))


def _retire_checkpoints(plan, writer: ResultsWriter) -> None:
    """Retention: the study is over, so no resume can use a trial checkpoint; delete them all (study.results)."""
    delete_trial_checkpoints(_storage(plan), set(writer.table.trials))
    writer.table.forget_checkpoints()


def _last_write(writer: ResultsWriter) -> None:
    """Write the tables once more as the study ends or stops; after a failed write the tables stay as last
    written, and the failure stops the study."""
    writer.write()
    writer.stop.raise_write_failure()


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
    # The restored run config holds the callbacks of the killed driver, and its searcher the killed driver's stop
    # reasons; use this driver's writer and stop.
    set_restored_callbacks(tuner, [writer])
    searcher = restored_searcher(tuner)
    if isinstance(searcher, StudySearch):
        searcher.stop = writer.stop
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


def _parallel(plan, cpus: float, gpus: float) -> int:
    """How many trials run at once on this cluster."""
    res = ray.cluster_resources()
    slots = int(res.get("CPU", 1) // cpus) if cpus else plan.trials
    if gpus:
        slots = min(slots, int(res.get("GPU", 0) // gpus))
    return max(1, min(slots, plan.max_concurrent or slots, plan.trials))


def _plan_time(plan, cpus: float, gpus: float) -> None:
    """On a cluster (--address), with `--minutes`: measure and plan here, once Ray says how many trials run at once
    (a local study is planned before Ray starts, by study.run); recorded in study.json."""
    if plan.minutes <= 0 or plan.time_plan is not None:
        return
    print("measuring this machine's training speed ...", flush=True)
    device = "cuda" if gpus and torch.cuda.is_available() else "cpu"
    try:
        spec, time_plan = make_plan(plan.spec, plan.corpus, trials=plan.trials, seed=plan.seed, repeats=plan.repeats,
                                    minutes=plan.minutes, parallel=_parallel(plan, cpus, gpus), device=device,
                                    threads=max(1, int(cpus)),
                                    final_minutes_cap=plan.final_minutes if plan.final_minutes_asked else 0.0)
    except PlanError as exc:
        raise UsageError(str(exc)) from None
    plan.spec, plan.time_plan = spec, time_plan.to_dict()
    RunDir(plan.run_dir).update_study({
        "plan": plan.time_plan, "budget_chars": spec.budget_chars, "repeat_chars": spec.repeat_chars,
        "eval": {"eval_at_chars": spec.eval_at()},
        "scheduler": {"grace_period": spec.grace_chars, "max_t": spec.budget_chars, "rungs": spec.rungs()},
    })
    print(time_plan.describe(), flush=True)


def _record_rungs(plan, trials: pd.DataFrame) -> None:
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


def _search(plan, trainable, writer: ResultsWriter) -> None:
    spec = plan.spec
    writer.stage("search", plan.trials, expect=_expect(plan, "search"))
    param_space = {**spec.fixed, **spec.run_settings(), "seed": plan.seed}
    tuner = _restored(plan, SEARCH_EXPERIMENT, trainable, writer, param_space)
    if tuner is None:
        storage = optuna.storages.RDBStorage(RunDir(plan.run_dir).optuna_url)
        searcher = StudySearch(
            optuna_space(spec), metric="best_val_bpc", mode="min", sampler=make_sampler(spec, plan.seed),
            study_name=plan.study_name, storage=storage, stop=writer.stop,
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
                                        reuse_actors=_reuse_actors(plan),
                                        trial_dirname_creator=_trial_dirname),
            run_config=_run_config(plan, SEARCH_EXPERIMENT, writer),
        )
    _fit(tuner, plan.trials, writer.stop)
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
        state = told(status)
        value = row["best_val_bpc"] if state == optuna.trial.TrialState.COMPLETE else None
        if status != "completed":
            storage.set_trial_user_attr(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number),
                                        "status", status)
        study.tell(trial.number, value, state=state)


def _reuse_actors(plan) -> bool:
    """Reuse trial processes on one machine, where starting one (and importing torch) is ~2 s per trial.

    On a cluster a reused process keeps its trials on the node it started on, so nodes that join later
    (or start slower) would get no work: there every trial gets a fresh placement.
    """
    return plan.address is None


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def _params(plan, trial: pd.Series) -> dict:
    params = {name: trial[f"param.{name}"] for name in plan.spec.search}
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}


def _choose_final(plan, trainable, writer: ResultsWriter) -> pd.Series | None:
    """Retrain the best configuration with `repeats` other seeds (the noise floor for the report, and a check
    that it trains reliably); a configuration that diverges in any seed is not handed over as the final model,
    and the next best is checked instead (study.selection decides). Returns the search trial whose configuration
    the final model trains, and records the choice in study.json (`selection`)."""
    ranked = selection.ranked_search_trials(writer.table.trials_frame(), plan.spec.eval_at())
    candidates: list[dict] = []

    def decided(chosen: pd.Series | None) -> pd.Series | None:
        RunDir(plan.run_dir).update_study({"selection": selection.record(
            candidates, None if chosen is None else str(chosen["trial_id"]))})
        return chosen

    if ranked.empty:
        writer.echo("no trial finished; skipping the seed repeats and the final model")
        return decided(None)
    if plan.repeats == 0:
        candidates.append({"trial_id": str(ranked.iloc[0]["trial_id"]), "skipped": None})
        return decided(ranked.iloc[0])
    for k, (_, candidate) in enumerate(ranked.head(selection.MAX_CANDIDATES).iterrows()):
        _repeat(plan, trainable, writer, candidate, REPEAT_EXPERIMENT if k == 0 else f"{REPEAT_EXPERIMENT}-{k + 1}")
        why = selection.verdict(writer.table.trials_frame(), str(candidate["trial_id"]))
        candidates.append({"trial_id": str(candidate["trial_id"]), "skipped": why})
        if why is None:
            return decided(candidate)
        writer.echo(f"trial {candidate['trial_id']}'s configuration is unstable: it {why}; it is not handed over "
                    "as the final model")
    writer.echo(f"none of the {selection.MAX_CANDIDATES} best configurations trained reliably in every seed; "
                "no final model")
    return decided(None)


def _repeat(plan, trainable, writer: ResultsWriter, best: pd.Series, experiment: str) -> None:
    """Retrain one configuration with `repeats` other seeds, on the search's schedule up to `repeat_chars`."""
    seeds = [plan.seed + k for k in range(1, plan.repeats + 1)]
    writer.stage("repeat", plan.repeats, expect=_expect(plan, "repeat"), repeat_of=str(best["trial_id"]))
    stop = plan.spec.repeat_chars or plan.spec.budget_chars
    param_space = {**plan.spec.fixed, **plan.spec.run_settings(), **_params(plan, best), "stop_chars": stop,
                   "seed": tune.grid_search(seeds)}
    tuner = _restored(plan, experiment, trainable, writer, param_space)
    if tuner is not None:
        _fit(tuner, plan.repeats, writer.stop)
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
    _fit(tuner, len(seeds), writer.stop)


def _trial_weights(plan, chosen: pd.Series) -> dict | None:
    """The best weights a search trial saved (its last checkpoint's model.pt), or None where they cannot be read."""
    where = chosen.get("checkpoint")
    if not isinstance(where, str) or not where:
        return None
    storage = _storage(plan)
    try:
        if "://" in storage:
            fs, _ = pyarrow.fs.FileSystem.from_uri(storage)
            with fs.open_input_file(f"{where.rstrip('/')}/{MODEL_FILE}") as f:
                data = f.read()
        else:
            data = (Path(where) / MODEL_FILE).read_bytes()
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)["state_dict"]
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        print(f"warning: cannot read trial {chosen['trial_id']}'s weights ({exc}); the final model starts afresh",
              flush=True)
        return None


def _expect(plan, stage: str, limit_s: float = 0.0) -> tuple[float | None, float]:
    """(seconds planned for `stage`, seconds planned for the stages after it), for the progress line."""
    if plan.time_plan is None:
        return (limit_s or None, 0.0)
    p = plan.time_plan
    final = p["final_s"] if plan.final_chars > 0 else 0.0
    return {"search": (p["search_s"], p["repeats_s"] + final + p["report_s"]),
            "repeat": (p["repeats_s"], final + p["report_s"]),
            "final": (limit_s or final, p["report_s"])}[stage]


def _final_limit_s(plan) -> float:
    """Seconds the final model may train: under a time plan, what is left of the study's minutes (at most
    --final-minutes when given); else --final-minutes (0 = no limit)."""
    if plan.time_plan is None:
        return 60.0 * plan.final_minutes
    left = final_seconds(TimePlan.from_dict(plan.time_plan), time.monotonic() - plan.started)
    return min(left, 60.0 * plan.final_minutes) if plan.final_minutes_asked and plan.final_minutes else left


def _final_rate(plan, params: dict) -> dict:
    """The final model's learning rate: the chosen trial's, at most the optimizer's usual rate (BASE_LR).

    A short search favours rates that make fast early progress: the default study chose Adam at 2.8x its usual rate
    (5.6e-3) for a GRU 2x512, and trained for 13 minutes at that rate its validation score rose from 2.55 to 2.92
    bits/char over its first 1.5M characters. Returns the keys to override ({} when the trial's rate is no higher).
    """
    config = TrainConfig.from_flat({k: v for k, v in {**plan.spec.fixed, **params}.items()
                                    if k in TrainConfig.__dataclass_fields__})
    usual = BASE_LR[config.optimizer]
    if config.lr <= usual:
        return {}
    return {"lr_scale": 1.0} if config.lr_scale > 0 else {"lr": usual}


def _step_size(plan, params: dict) -> int:
    """Characters per optimizer step of a configuration (batch_size x seq_len, as the trainer sets them)."""
    config = TrainConfig.from_flat({k: v for k, v in {**plan.spec.fixed, **params}.items()
                                    if k in TrainConfig.__dataclass_fields__})
    return config.batch_size * config.seq_len


def _final(plan, chosen: pd.Series, writer: ResultsWriter) -> None:
    """Train the chosen configuration to convergence on the whole training text, with its search trial's weights as
    the model to beat, and score the better of the two once on the test text.

    Of the chosen trial's hyperparameters, all carry over but `train_chars`: a search trial's training-text size
    trades text for passes at the search's budget, while the final model trains many times longer, where more
    text can only help (early stopping ends it once validation stops improving). The trial's weights, scored
    first on the final model's validation text and counted as its best so far, mean the model handed over is never
    worse there than the trial it came from.
    """
    final = plan.spec.final
    cpus, gpus = final_resources()
    corpus = plan.corpus
    weights = _trial_weights(plan, chosen)
    data = {"train": corpus.train, "val": corpus.val[: final["val_chars"] or len(corpus.val)], "test": corpus.test,
            "vocab": corpus.vocab.chars, "init_weights": weights}
    trainable = tune.with_resources(tune.with_parameters(run_trial, data=data, cpus=cpus, gpus=gpus),
                                    {"cpu": cpus, "gpu": gpus})
    limit_s = _final_limit_s(plan)
    writer.stage("final", 1, expect=_expect(plan, "final", limit_s), repeat_of=str(chosen["trial_id"]))
    params = _params(plan, chosen)
    rate = _final_rate(plan, params)
    step = {"step_chars": int(final["step_chars"])} if final["step_chars"] else {}
    param_space = {**plan.spec.fixed, **plan.spec.run_settings(), **params, **rate, **step,
                   "train_chars": 0, "budget_chars": plan.final_chars, "eval_at": [],
                   "evals_per_trial": final["evals"], "val_chars": 0, "patience": final["patience"],
                   "min_delta": final["min_delta"], "time_limit_s": limit_s, "seed": plan.seed}
    tuner = _restored(plan, FINAL_EXPERIMENT, trainable, writer, param_space)
    if tuner is None:
        writer.echo(f"final model: trial {chosen['trial_id']}'s configuration"
                    + (", with its weights as the model to beat" if weights is not None else "")
                    + f", on the whole training text ({len(corpus.train):,} characters), up to "
                    f"{plan.final_chars:,} characters" + (f" or {limit_s / 60:.1f} minutes" if limit_s else "")
                    + f", on {cpus:g} CPUs" + (" and a GPU" if gpus else "") + "; scored once on the test text")
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(metric="best_val_bpc", mode="min", num_samples=1,
                                        trial_dirname_creator=_trial_dirname),
            run_config=_run_config(plan, FINAL_EXPERIMENT, writer),
        )
    RunDir(plan.run_dir).update_study({"final": {
        "train_chars": len(corpus.train), "started_from": str(chosen["trial_id"]) if weights is not None else None,
        "planned_minutes": limit_s / 60.0,
        "learning_rate": rate or None, "step_chars": step.get("step_chars"),
        "why": "every hyperparameter of the chosen trial but train_chars, which the final model takes as the whole "
               "training text (it trains many times longer than any trial, where more text can only help), and a "
               "learning rate above the optimizer's usual one, which it caps there (a rate that wins a few hundred "
               "steps made the validation score of a 13-minute run worse for its first half)"
               + (f"; it takes {step['step_chars']:,} characters a step (final.step_chars) where the search took "
                  f"{_step_size(plan, params):,}: a step's time grows less than its size, and the final model takes "
                  "thousands of them" if step else "")}})
    results = _fit(tuner, 1, writer.stop)
    result = results[0]
    # A resume of a study that had ended finds the checkpoint deleted (retention) and the model installed.
    if result.checkpoint is not None and not result.error and checkpoint_exists(result.checkpoint):
        with result.checkpoint.as_directory() as directory:
            RunDir(plan.run_dir).install_final_model(Path(directory) / MODEL_FILE)


