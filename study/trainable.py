"""The Tune trainable: runs charrnn.train for one trial and reports through Tune.

This is the only module that calls `tune.report`. It builds the trial's TrainConfig once from the flat
Tune config, picks the device Ray gave it, resumes from Tune's checkpoint after a retry, and turns
each EvalRecord into a Tune result with the checkpoint the trainer wrote for it (the best weights plus the
resume state).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray
import torch
from ray import tune

from charrnn.config import TrainConfig
from runcontract import CHOSEN, LABELS
from charrnn.corpus import Vocab
from charrnn.train import CheckpointError, EvalRecord, train

# Test-only hook, to prove that a crashing trial neither takes the study down nor loses its work:
# "once:N" makes a trial raise after its Nth report on its first attempt only (the retry succeeds),
# "always:N" on every attempt (the trial ends failed once --max-failures retries are spent).
FAIL_ENV = "CHARRNN_TEST_FAIL"
# Test-only hook, to kill a process at a moment chosen by progress rather than by a sleep: "<dir>:<N>" makes the
# first trial of the run that reaches its Nth report (of its current attempt) write its checkpoint files, then
# `<dir>/hold-<trial_id>` holding its pid, then wait (up to HOLD_MAX_S, or until `<dir>/release` exists) before
# handing the checkpoint to Tune. Only one trial ever holds (`<dir>/claimed`), so retries and resumes run on.
HOLD_ENV = "CHARRNN_TEST_HOLD"
HOLD_MAX_S = 120.0


class InjectedFailure(RuntimeError):
    """Raised on purpose by the test-only hook."""


def _test_hold(report_number: int) -> None:
    """The HOLD_ENV hook (test-only); a no-op unless the variable is set."""
    where, _, at = os.environ.get(HOLD_ENV, "").rpartition(":")
    if not where or int(at) != report_number:
        return
    directory = Path(where)
    try:
        os.close(os.open(directory / "claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    tmp = directory / f".hold-{os.getpid()}.tmp"  # renamed into place: a reader never sees it empty
    tmp.write_text(str(os.getpid()), encoding="utf-8")
    os.replace(tmp, directory / f"hold-{tune.get_context().get_trial_id()}")
    deadline = time.monotonic() + HOLD_MAX_S
    while time.monotonic() < deadline and not (directory / "release").exists():
        time.sleep(0.1)


def _trial_device(gpus: float) -> str:
    if gpus > 0 and torch.cuda.is_available():
        return "cuda"
    return "cpu"


# Below this many multiply-adds in a step's recurrent matmul per time step (streams x hidden units squared), a
# second thread waits at every op more than it helps: a GRU 1x128 on 16 streams ran 20% slower on 2 threads than on
# 1, a GRU 1x256 on 8 streams 15% faster (BENCHMARKS.md, "Threads for the final model").
MIN_WORK_PER_EXTRA_THREAD = 8 * 256 * 256


def useful_threads(cpus: float, config: TrainConfig) -> int:
    """Torch threads for a trial given `cpus`: all of them, unless the model is too small to use them."""
    threads = max(1, int(math.floor(cpus)))
    work = config.batch_size * config.hidden_size ** 2
    return threads if work >= MIN_WORK_PER_EXTRA_THREAD else 1


def tune_metrics(record: EvalRecord, labels: dict) -> dict:
    """The Tune result for one EvalRecord; `labels` (device, node, seed, threads, precision) are the trial's own."""
    return {
        "chars_seen": record.chars_seen,
        "steps": record.steps,
        "wall_s": record.wall_s,
        "eval_s": record.eval_s,
        "train_bpc": record.train_bpc,
        # val_bpc is this evaluation (Optuna's intermediate value); ASHA and Optuna rank by best_val_bpc, the best
        # so far. Both NaN once diverged, so that Optuna records a failure.
        "val_bpc": math.nan if record.diverged else record.val_bpc,
        "best_val_bpc": math.nan if record.diverged else record.best_val_bpc,
        "lr": record.lr,
        "sample": record.sample,
        "sample_temperature": record.sample_temperature,
        "final_samples_json": json.dumps({str(t): s for t, s in record.final_samples.items()}),
        "budget_chars": record.budget_chars,
        # What a time limit made of the budget (charrnn.pacer): decided once, cut at most once; "" without one.
        "budget_decision_json": json.dumps(record.budget_decision.to_dict()) if record.budget_decision else "",
        "stopped_early": record.stopped_early,
        "test_bpc": record.test_bpc,
        "finished": record.done and not record.diverged,
        "diverged": record.diverged,
        **labels,
    }


@dataclass
class TuneReporter:
    """The trainer's `report` callback for one attempt at a trial: each EvalRecord becomes a Tune result whose
    checkpoint is `checkpoint_dir`, where the trainer has just written the matching model.pt and state.pt."""

    checkpoint_dir: str
    labels: dict
    fail_after: int = 0  # the test-only hook: raise after this many reports (0 = never)
    reports: int = 0

    def __call__(self, record: EvalRecord) -> None:
        metrics = tune_metrics(record, self.labels)
        if self.labels["device"] == "cuda":
            metrics["peak_gpu_mem_bytes"] = torch.cuda.max_memory_allocated()
        _test_hold(self.reports + 1)
        # Tune copies the directory's files into the trial's storage before it returns.
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(self.checkpoint_dir))
        self.reports += 1
        if self.fail_after and self.reports >= self.fail_after and not record.done:
            raise InjectedFailure(f"injected failure after report {self.reports} ({FAIL_ENV}={os.environ[FAIL_ENV]})")


def run_trial(config: dict, data: dict, cpus: float = 1, gpus: float = 0) -> None:
    """Train one trial; `data` holds the encoded corpus from Ray's object store and, for the final stage, the
    search trial's weights as `init_weights` (the model to beat of the chosen configuration: of a trial whose
    `candidate` label is CHOSEN or absent) or, for the race's winner going on, its checkpoint's files as
    `resume_files` (file name -> bytes), which it resumes from as from its own; in a later round of the race, each
    candidate's as `resume_by[candidate]`."""
    device = _trial_device(gpus)
    init_weights = data.get("init_weights") if config.get("candidate", CHOSEN) == CHOSEN else None
    resume_files = data.get("resume_files") or (data.get("resume_by") or {}).get(config.get("candidate"))
    config = {k: v for k, v in config.items() if k not in LABELS}
    trial_config = TrainConfig.from_flat({**config, "device": device})
    threads = useful_threads(cpus, trial_config)
    trial_config = TrainConfig.from_flat({**config, "device": device, "threads": threads})
    vocab = Vocab(data["vocab"])
    labels = {"device": device, "node_id": ray.get_runtime_context().get_node_id(), "seed": trial_config.seed,
              "threads": threads, "precision": "bf16" if trial_config.bf16 else "fp32"}
    checkpoint = tune.get_checkpoint()
    mode, _, after = os.environ.get(FAIL_ENV, "").partition(":")
    fail_after = int(after) if mode == "always" or (mode == "once" and checkpoint is None) else 0

    with contextlib.ExitStack() as stack:
        checkpoint_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="charrnn-ckpt-"))
        report = TuneReporter(checkpoint_dir, labels, fail_after)
        if checkpoint is None and resume_files:
            checkpoint = tune.Checkpoint.from_directory(_write_files(stack, resume_files))
        if checkpoint is not None:
            with checkpoint.as_directory() as resume_dir:
                try:
                    train(trial_config, data["train"], data["val"], vocab, report=report, resume_from=resume_dir,
                          test_ids=data.get("test"), checkpoint_dir=checkpoint_dir)
                    return
                except CheckpointError as exc:
                    # A damaged checkpoint would fail every retry the same way: start the trial over instead. Its
                    # curve restarts too (the results writer drops what lies past the point a trial resumes from).
                    print(f"trial {tune.get_context().get_trial_id()}: {exc}; training again from the start",
                          file=sys.stderr, flush=True)
        train(trial_config, data["train"], data["val"], vocab, report=report, test_ids=data.get("test"),
              checkpoint_dir=checkpoint_dir, init_weights=init_weights)


def _write_files(stack: contextlib.ExitStack, files: dict[str, bytes]) -> str:
    """`files` written into a temporary directory that `stack` removes; returns its path."""
    directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="charrnn-from-")))
    for name, content in files.items():
        (directory / Path(name).name).write_bytes(content)
    return str(directory)
