"""The study itself: start or join Ray, then run the stages in order (study.stages: the search, the seed repeats,
the final model), with the compressor baselines scored beside them; ends with the closing summary.

Only `study.run` calls this, after every input has been checked.
"""
from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs
import ray
import torch
from ray import tune

from charrnn.baselines import compute_baselines
from charrnn.checkpoint import MODEL_FILE
from charrnn.config import BASE_LR, TrainConfig
from charrnn.metrics import corpus_words, ngram_hashes
from study.closing import summary
from study.cluster import check_storage_reachable, concurrent_trials, final_resources, gpus_per_trial, start_ray
from study.inputs import UsageError
from study.results import ResultsWriter, checkpoint_exists, delete_trial_checkpoints
from study.rundir import RunDir, RunDirWriteError, TextIndex
from study.stages import repeats, search
from study.stages.experiment import expect as _expect
from study.stages.experiment import fit as _fit
from study.stages.experiment import restored as _restored
from study.stages.experiment import run_config as _run_config
from study.stages.experiment import storage as _storage
from study.stages.experiment import trial_dirname as _trial_dirname
from study.stages.experiment import trial_params as _params
from study.stopping import StudyStop
from study.timeplan import PlanError, TimePlan, final_seconds, make_plan
from study.trainable import run_trial

FINAL_EXPERIMENT = "tune-final"


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
            search.run(plan, trainable, writer)
            search.record_rungs(plan, writer.table.trials_frame())
            chosen = repeats.choose_final(plan, trainable, writer)
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


def _parallel(plan, cpus: float, gpus: float) -> int:
    """How many trials run at once on this cluster."""
    res = ray.cluster_resources()
    return concurrent_trials(res.get("CPU", 1), res.get("GPU", 0), cpus, gpus, plan.max_concurrent, plan.trials)


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


