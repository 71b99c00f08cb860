"""The study itself: start or join Ray, then run the stages in order (study.stages: the search, the seed repeats,
the final model), with the compressor baselines scored beside them; ends with the closing summary.

Only `study.run` calls this, after every input has been checked.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
import threading
import time

import pandas as pd
import ray
import torch
from ray import tune

from charrnn.baselines import PPMD_MEM, PPMD_ORDER, XZ_PRESET, compute_baselines
from charrnn.metrics import corpus_words, ngram_hashes
from study.closing import summary
from study.cluster import check_storage_reachable, concurrent_trials, gpus_per_trial, start_ray
from study.inputs import UsageError
from study.machine import recall_baselines, remember_baselines
from study.plan import Plan, fit_to_minutes
from study.results import ResultsWriter, delete_trial_checkpoints
from study.rundir import RunDir, RunDirWriteError, TextIndex
from study.stages import final, local, repeats, search
from study.stages.experiment import storage
from study.stopping import StudyStop
from study.timeplan import PlanError
from study.trainable import run_trial


def make_text_index(corpus) -> TextIndex:
    text = corpus.vocab.decode_array(corpus.train)
    return TextIndex(corpus_words(text), ngram_hashes(corpus.train), corpus.vocab.encode)


def run_study(plan: Plan) -> str:
    """Run (or resume) the search, the seed repeats and the final model; returns the closing summary text."""
    # This study's: the signal handler, the writer and the searcher note why it must stop; after a refused write it
    # ends the process if Ray's teardown does not return (study.stopping.STOP_GRACE_S).
    stop = StudyStop(plan.run_dir)
    try:
        return _run(plan, stop)
    finally:
        stop.disarm()


def _run(plan: Plan, stop: StudyStop) -> str:
    spec, run_dir = plan.spec, plan.run_dir.resolve()
    baselines = _start_baselines(plan)
    start_ray(plan.address, plan.verbose)
    try:
        check_storage_reachable(storage(plan))
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
            with _timed(plan, "search"):
                search.run(plan, trainable, writer)
            search.record_rungs(plan, writer.table.trials_frame())
            with _timed(plan, "repeats"):
                chosen = repeats.choose_final(plan, trainable, writer)
            fixed_center = plan.spec.local_center() is not None
            if (chosen is not None or fixed_center) and int(plan.spec.local["seeds"]) > 0:
                with _timed(plan, "local"):
                    chosen = _local_design(plan, trainable, writer, chosen)
            if plan.final_chars > 0 and chosen is not None:
                with _timed(plan, "final"):
                    final.run(plan, chosen, writer)
            _retire_checkpoints(plan, writer)
        finally:
            _last_write(writer)
    finally:
        ray.shutdown()
        baselines.join()
    return summary(plan, run_dir, writer.table.trials_frame(), pd.DataFrame(writer.table.samples))


@contextlib.contextmanager
def _timed(plan: Plan, stage: str):
    """Record a stage's wall seconds in study.json (`stage_s`), for the idle-core figure (BENCHMARKS.md)."""
    start = time.monotonic()
    yield
    RunDir(plan.run_dir).update_study({"stage_s": {stage: round(time.monotonic() - start, 2)}})


def _local_design(plan: Plan, trainable, writer: ResultsWriter, center: pd.Series | None) -> pd.Series | None:
    """Run the local design and return the trial whose configuration the final model trains.

    Around the search's best (`center`): the local design's choice (study.local.choose), or `center` itself where
    the local design confirmed nothing. Around the spec's fixed center (`local.center`), the local design answers
    the question and the search's choice (`center`, chosen on its repeats) stays the final model's: the fixed
    center is a reference point, not a candidate the search found."""
    choice = local.run(plan, trainable, writer, center, math.log2(max(len(plan.corpus.vocab.chars), 2)))
    if plan.spec.local_center() is not None:
        return center
    trials = writer.table.trials_frame()
    if choice is None or choice.trial_id is None:
        return center
    return trials[trials["trial_id"] == choice.trial_id].iloc[0]


def _retire_checkpoints(plan: Plan, writer: ResultsWriter) -> None:
    """Retention: the study is over, so no resume can use a trial checkpoint; delete them all (study.results)."""
    delete_trial_checkpoints(storage(plan), set(writer.table.trials))
    writer.table.forget_checkpoints()


def _last_write(writer: ResultsWriter) -> None:
    """Write the tables once more as the study ends or stops; after a failed write the tables stay as last
    written, and the failure stops the study."""
    writer.write()
    writer.stop.raise_write_failure()


def baselines_key(corpus) -> str:
    """What a corpus's baselines depend on: its text and split, and the compressors and their settings."""
    import pyppmd

    what = {"sha256": corpus.sha256, "split": [len(corpus.train), len(corpus.val), len(corpus.test)],
            "vocab": corpus.vocab.chars, "xz": [XZ_PRESET, sys.version], "ppmd": [PPMD_ORDER, PPMD_MEM,
                                                                                 pyppmd.__version__]}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _start_baselines(plan: Plan) -> threading.Thread:
    """Score the compressor baselines on the validation and test text, beside the study (lzma and PPMd
    release the GIL); written once to baselines.parquet, kept when resuming, and remembered for the next study
    of the same corpus on this machine (study.machine)."""
    run_dir = RunDir(plan.run_dir)

    def work():
        if run_dir.has_baselines():
            return
        c, vocab = plan.corpus, plan.corpus.vocab
        key = baselines_key(c)
        rows = recall_baselines(key)
        if rows is None:
            rows = compute_baselines(vocab.decode_array(c.train), vocab.decode_array(c.val),
                                     vocab.decode_array(c.test), vocab.chars)
            remember_baselines(key, rows)
        try:
            run_dir.write_baselines(rows)
        except RunDirWriteError as exc:  # the study itself stops at its next write, with the same reason
            print(f"warning: {exc}", flush=True)

    thread = threading.Thread(target=work, name="baselines", daemon=True)
    thread.start()
    return thread


def _parallel(plan: Plan, cpus: float, gpus: float) -> int:
    """How many trials run at once on this cluster."""
    res = ray.cluster_resources()
    return concurrent_trials(res.get("CPU", 1), res.get("GPU", 0), cpus, gpus, plan.max_concurrent, plan.trials)


def _plan_time(plan: Plan, cpus: float, gpus: float) -> None:
    """On a cluster (--address), with `--minutes`: measure and plan here, once Ray says how many trials run at once
    (a local study is planned before Ray starts, by study.run); recorded in study.json."""
    if plan.minutes <= 0 or plan.time_plan is not None:
        return
    print("measuring this machine's training speed ...", flush=True)
    device = "cuda" if gpus and torch.cuda.is_available() else "cpu"
    try:
        time_plan = fit_to_minutes(plan, parallel=_parallel(plan, cpus, gpus), device=device)
    except PlanError as exc:
        raise UsageError(str(exc)) from None
    spec = plan.spec
    RunDir(plan.run_dir).update_study({
        "plan": plan.time_plan, "budget_chars": spec.budget_chars, "repeat_chars": spec.repeat_chars,
        "eval": {"eval_at_chars": spec.eval_at()},
        "scheduler": {"grace_period": spec.grace_chars, "max_t": spec.budget_chars, "rungs": spec.rungs()},
    })
    print(time_plan.describe(), flush=True)
