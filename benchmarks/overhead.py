"""What Ray Tune costs per trial, and what a second concurrent one-CPU trial adds.

    python -m benchmarks.overhead            # under a minute on a 2-core CPU
    python -m benchmarks.overhead --json     # one JSON object
    python -m benchmarks.overhead --smoke    # tiny models, for a quick check that it runs
    python -m benchmarks.overhead --gpu-share 4 --json   # on a GPU: 1, 2 and 4 trials sharing it

One local Ray instance (`ray.init(address="local")`, as `study.run` starts it) runs the real
trainable (`study.trainable.run_trial`) with the corpus in the object store, three times:

1. overhead: `--overhead-trials` tiny trials one after another. A trial's first training step is
   placed on the driver's clock as (arrival of its first result) - (the trainer's own wall_s at that
   result), so the figure also holds the first report's checkpoint and transfer: an upper bound.
   Per-trial overhead = previous trial complete -> this trial's first step (the CPU is free, so this
   is when Tune schedules it); also reported: Tune's actor start -> first step, and fit() -> first step.
2. one trial of `--model` alone on one CPU, then 3. two of them at once, one CPU each. A trial's
   rate is characters / training seconds between its first and last results (warm-up excluded,
   evaluation excluded, checkpointing included); the pair's rate is the sum of its two. Each trial's
   characters per CPU-second of its own process are reported too: on a machine shared with other
   work, they tell trials slowing each other down apart from other processes taking the CPUs.

With `--gpu-share K` it measures instead what sharing one GPU gives (`--gpus-per-trial 1/K` in
`study.run`): 1, 2, 4, ... up to K trials of `--model` at once, each with 1 CPU and 1/K of the GPU,
and their summed chars/s against one alone.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
if __name__ == "__main__":  # a local Ray on loopback, as study.run starts it: set before Ray is imported
    from study.cluster import local_only

    local_only()

import ray  # noqa: E402
from ray import tune  # noqa: E402

from benchmarks.throughput import CpuWaitShare  # noqa: E402
from charrnn.corpus import CorpusError, load_corpus  # noqa: E402
from study.cluster import start_ray  # noqa: E402
from study.inputs import UsageError, resolve_corpus  # noqa: E402
from study.trainable import run_trial  # noqa: E402

# Flat Tune configs (TrainConfig keys). Evaluation is kept small: this measures Ray and training, not scoring.
QUICK_EVAL = dict(val_chars=2_000, sample_chars=20, final_sample_chars=20, final_temperatures=[0.8])
TINY = dict(cell="rnn_tanh", embedding_dim=16, hidden_size=32, num_layers=1, seq_len=50, batch_size=16,
            budget_chars=8_000, evals_per_trial=2, **QUICK_EVAL)
MODELS = {
    "lab": dict(cell="rnn_relu", embedding_dim=100, hidden_size=512, num_layers=3, seq_len=50, batch_size=64),
    "small": dict(cell="gru", embedding_dim=32, hidden_size=128, num_layers=2, seq_len=50, batch_size=32),
    "tiny": {k: TINY[k] for k in ("cell", "embedding_dim", "hidden_size", "num_layers", "seq_len", "batch_size")},
}


class Timeline(tune.Callback):
    """Driver-side times (time.perf_counter) of each trial's start, results and completion."""

    def __init__(self) -> None:
        self.start: dict[str, float] = {}
        self.results: dict[str, list[tuple[float, dict]]] = {}
        self.complete: dict[str, float] = {}
        self.order: list[str] = []

    def on_trial_start(self, iteration, trials, trial, **info):
        self.start[trial.trial_id] = time.perf_counter()
        self.order.append(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        keep = {k: result[k] for k in ("chars_seen", "wall_s", "eval_s")}
        keep["cpu_s"] = _process_cpu_s(result.get("pid"))
        self.results.setdefault(trial.trial_id, []).append((time.perf_counter(), keep))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.complete[trial.trial_id] = time.perf_counter()

    def first_step(self, tid: str) -> float:
        arrived, result = self.results[tid][0]
        return arrived - result["wall_s"]

    def rate(self, tid: str) -> float:
        """Training chars/s between the first and the last result (warm-up and evaluation excluded)."""
        (_, a), (_, b) = self.results[tid][0], self.results[tid][-1]
        return (b["chars_seen"] - a["chars_seen"]) / ((b["wall_s"] - b["eval_s"]) - (a["wall_s"] - a["eval_s"]))

    def chars_per_cpu_s(self, tid: str) -> float:
        """Characters per CPU-second of the trial's process between its first and last results.

        Unlike chars/s this does not fall when other processes take the CPU; it falls when the
        trials slow each other down (oversubscribed threads, shared caches and memory bandwidth).
        """
        (_, a), (_, b) = self.results[tid][0], self.results[tid][-1]
        return (b["chars_seen"] - a["chars_seen"]) / (b["cpu_s"] - a["cpu_s"])

    def window(self, tid: str) -> tuple[float, float]:
        return self.results[tid][0][0], self.results[tid][-1][0]


def _process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a local process, from /proc (NaN where unavailable)."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, TypeError, ValueError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@dataclass
class OverheadResult:
    """Seconds; lists run over trials in start order (`gap_s` from the second trial on)."""

    ray_init_s: float
    fit_to_first_step_s: float
    gap_s: list[float]  # previous trial complete -> this trial's first training step
    actor_start_to_first_step_s: list[float]
    one_trial_chars_per_s: float
    two_trials_chars_per_s: list[float]
    two_trials_overlap: float  # share of the shorter measuring window during which both trials ran
    one_trial_chars_per_cpu_s: float
    two_trials_chars_per_cpu_s: list[float]
    cpu_wait_share_one: float  # share of the phase in which some task waited for a CPU (Linux PSI)
    cpu_wait_share_two: float
    model: str
    reuse_actors: bool
    cpus: float
    load_avg_1min: float
    notes: list[str] = field(default_factory=list)

    @property
    def per_trial_overhead_s(self) -> float:
        return statistics.median(self.gap_s)

    @property
    def concurrency_speedup(self) -> float:
        return sum(self.two_trials_chars_per_s) / self.one_trial_chars_per_s

    @property
    def concurrency_speedup_per_cpu(self) -> float:
        """Two vs one on an otherwise idle machine, if each trial kept its measured chars per CPU-second."""
        return sum(self.two_trials_chars_per_cpu_s) / self.one_trial_chars_per_cpu_s

    def to_dict(self) -> dict:
        return {**asdict(self), "per_trial_overhead_s": self.per_trial_overhead_s,
                "concurrency_speedup": self.concurrency_speedup,
                "concurrency_speedup_per_cpu": self.concurrency_speedup_per_cpu}


def _fit(trainable, param_space: dict, max_concurrent: int, storage: str, name: str,
         reuse_actors: bool = False) -> tuple[Timeline, float]:
    timeline = Timeline()
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(name=name, storage_path=storage, callbacks=[timeline], verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    t_fit = time.perf_counter()
    grid = tuner.fit()
    errors = [r.error for r in grid if r.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} benchmark trial(s) failed; the first: {errors[0]}")
    return timeline, t_fit


def _trial_data(corpus_path: Path) -> dict:
    """What every benchmark trial gets through the object store, as `study.run` passes it."""
    corpus = load_corpus(corpus_path)
    return {"train": corpus.train, "val": corpus.val[: QUICK_EVAL["val_chars"]], "vocab": corpus.vocab.chars}


def _overlap(timeline: Timeline) -> float:
    """Share of the shortest measuring window during which all of the timeline's trials ran."""
    windows = [timeline.window(tid) for tid in timeline.order]
    both = min(b for _, b in windows) - max(a for a, _ in windows)
    return max(0.0, both) / min(b - a for a, b in windows)


def run_overhead(corpus_path: Path, model: str, chars: int, overhead_trials: int,
                 reuse_actors: bool = False) -> OverheadResult:
    """Start Ray, run the three measurements, shut Ray down."""
    data = _trial_data(corpus_path)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    start_ray(None)
    ray_init_s = time.perf_counter() - t0
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < 2:
            raise UsageError(f"Ray sees {cpus:g} CPUs; two concurrent one-CPU trials need 2")
        trainable = tune.with_resources(tune.with_parameters(run_trial, data=data, cpus=1, gpus=0),
                                        {"cpu": 1, "gpu": 0})
        with tempfile.TemporaryDirectory(prefix="charrnn-overhead-") as storage:
            seeds = tune.grid_search(list(range(overhead_trials)))
            seq, t_fit = _fit(trainable, {**TINY, "seed": seeds}, 1, storage, "overhead", reuse_actors)
            first = {tid: seq.first_step(tid) for tid in seq.order}
            prev = seq.order[:-1]
            gaps = [first[tid] - seq.complete[p] for p, tid in zip(prev, seq.order[1:])]
            actor = [first[tid] - seq.start[tid] for tid in seq.order]

            timed = {**MODELS[model], **QUICK_EVAL, "budget_chars": chars, "evals_per_trial": 5}
            with CpuWaitShare() as alone_wait:
                alone, _ = _fit(trainable, {**timed, "seed": 0}, 1, storage, "alone")
            with CpuWaitShare() as pair_wait:
                pair, _ = _fit(trainable, {**timed, "seed": tune.grid_search([0, 1])}, 2, storage, "pair")
    finally:
        ray.shutdown()
    overlap = _overlap(pair)
    result = OverheadResult(
        ray_init_s=ray_init_s,
        fit_to_first_step_s=first[seq.order[0]] - t_fit,
        gap_s=gaps,
        actor_start_to_first_step_s=actor,
        one_trial_chars_per_s=alone.rate(alone.order[0]),
        two_trials_chars_per_s=[pair.rate(tid) for tid in pair.order],
        two_trials_overlap=overlap,
        one_trial_chars_per_cpu_s=alone.chars_per_cpu_s(alone.order[0]),
        two_trials_chars_per_cpu_s=[pair.chars_per_cpu_s(tid) for tid in pair.order],
        cpu_wait_share_one=alone_wait.share,
        cpu_wait_share_two=pair_wait.share,
        model=model,
        reuse_actors=reuse_actors,
        cpus=cpus,
        load_avg_1min=load,
    )
    if overlap < 0.9:
        result.notes.append(f"the two trials overlapped for only {overlap:.0%} of their measuring windows")
    return result


def run_gpu_share(corpus_path: Path, model: str, chars: int, share: int) -> dict:
    """1, 2, 4, ... `share` trials at once on one GPU, each with 1 CPU and 1/share of the GPU."""
    import torch

    if not torch.cuda.is_available():
        raise UsageError(f"--gpu-share {share} but torch sees no CUDA GPU")
    data = _trial_data(corpus_path)
    start_ray(None)
    try:
        have = ray.cluster_resources()
        if have.get("GPU", 0) < 1 or have.get("CPU", 0) < share:
            raise UsageError(f"--gpu-share {share} needs a GPU and {share} CPUs; Ray sees "
                             f"{have.get('GPU', 0):g} GPUs and {have.get('CPU', 0):g} CPUs")
        gpus = 1.0 / share
        trainable = tune.with_resources(tune.with_parameters(run_trial, data=data, cpus=1, gpus=gpus),
                                        {"cpu": 1, "gpu": gpus})
        timed = {**MODELS[model], **QUICK_EVAL, "budget_chars": chars, "evals_per_trial": 5}
        counts = sorted({min(2 ** i, share) for i in range(share.bit_length() + 1)})
        phases = []
        with tempfile.TemporaryDirectory(prefix="charrnn-overhead-") as storage:
            for k in counts:
                seeds = tune.grid_search(list(range(k)))
                timeline, _ = _fit(trainable, {**timed, "seed": seeds}, k, storage, f"share{k}")
                if any(len(timeline.results[tid]) < 2 for tid in timeline.order):
                    raise RuntimeError(f"a {model} trial stopped after one result (diverged?); try --model small")
                print(f"{k} at once: done", file=sys.stderr, flush=True)
                rates = [timeline.rate(tid) for tid in timeline.order]
                phases.append({"trials": k, "chars_per_s": rates, "total_chars_per_s": sum(rates),
                               "overlap": _overlap(timeline) if k > 1 else 1.0})
    finally:
        ray.shutdown()
    one = phases[0]["total_chars_per_s"]
    for phase in phases:
        phase["vs_one"] = phase["total_chars_per_s"] / one
    return {"model": model, "gpus_per_trial": gpus, "chars": chars, "phases": phases}


def format_gpu_share(r: dict) -> str:
    lines = [f"{r['model']} trials sharing one GPU, {r['gpus_per_trial']:g} GPU and 1 CPU each"]
    for ph in r["phases"]:
        lines.append(f"{ph['trials']:2d} at once   {ph['total_chars_per_s']:>12,.0f} chars/s   {ph['vs_one']:.2f}x one"
                     f"   (each: {', '.join(f'{x:,.0f}' for x in ph['chars_per_s'])}; overlap {ph['overlap']:.0%})")
    return "\n".join(lines)


def format_text(r: OverheadResult) -> str:
    def secs(xs: list[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in xs)

    lines = [
        f"ray.init                      {r.ray_init_s:.2f} s (local instance, {r.cpus:g} CPUs)",
        f"per-trial overhead            {r.per_trial_overhead_s:.2f} s median (previous trial complete -> "
        f"first training step; each: {secs(r.gap_s)}; reuse_actors={r.reuse_actors})",
        f"actor start -> first step     {statistics.median(r.actor_start_to_first_step_s):.2f} s median "
        f"(each: {secs(r.actor_start_to_first_step_s)})",
        f"fit() -> first step           {r.fit_to_first_step_s:.2f} s (the first trial)",
        f"one {r.model} trial, 1 CPU     {r.one_trial_chars_per_s:,.0f} chars/s",
        f"two at once, 1 CPU each      {sum(r.two_trials_chars_per_s):,.0f} chars/s "
        f"({' + '.join(f'{x:,.0f}' for x in r.two_trials_chars_per_s)}; overlap {r.two_trials_overlap:.0%})",
        f"two vs one                    {r.concurrency_speedup:.2f}x",
        f"chars per CPU-second          one {r.one_trial_chars_per_cpu_s:,.0f}, two "
        f"{' + '.join(f'{x:,.0f}' for x in r.two_trials_chars_per_cpu_s)}: two vs one on an idle machine "
        f"{r.concurrency_speedup_per_cpu:.2f}x (if each kept its rate per CPU-second)",
        f"load                          1-minute load average at start {r.load_avg_1min:.2f}; a task waited for a "
        f"CPU in {100 * r.cpu_wait_share_one:.0f}% of the one-trial phase, {100 * r.cpu_wait_share_two:.0f}% of "
        "the two-trial phase",
    ]
    return "\n".join(lines + [f"note: {n}" for n in r.notes])


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and status 2, instead of usage + message
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m benchmarks.overhead", description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default="sherlock", help="corpus name or path (default: sherlock)")
    p.add_argument("--model", choices=tuple(MODELS), default="lab",
                   help="model of the one-vs-two trials (default: the lab's 3x512 rnn_relu, batch 64)")
    p.add_argument("--chars", type=int, default=48_000, help="training chars per one-vs-two trial (default 48k)")
    p.add_argument("--overhead-trials", type=int, default=3, help="sequential tiny trials (default 3)")
    p.add_argument("--reuse-actors", action="store_true",
                   help="let Tune reuse a finished trial's actor for the next overhead trial")
    p.add_argument("--smoke", action="store_true", help="tiny models and budgets: checks that it runs")
    p.add_argument("--gpu-share", type=int, metavar="K",
                   help="instead: 1, 2, 4, ... K trials of --model at once on one GPU, 1/K GPU each")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.model, args.chars, args.overhead_trials = "tiny", 16_000, 2
    try:
        if args.chars < 1 or args.overhead_trials < 2:
            raise UsageError("--chars must be >= 1 and --overhead-trials >= 2")
        if args.gpu_share is not None and args.gpu_share < 1:
            raise UsageError(f"--gpu-share must be >= 1, got {args.gpu_share}")
        _, path = resolve_corpus(args.corpus)
        if args.gpu_share:
            share = run_gpu_share(path, args.model, args.chars, args.gpu_share)
            print(json.dumps(share) if args.json else format_gpu_share(share))
            return 0
        result = run_overhead(path, args.model, args.chars, args.overhead_trials, args.reuse_actors)
    except (UsageError, CorpusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict()) if args.json else format_text(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
