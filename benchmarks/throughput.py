"""How fast one CharRNN trains, against what this machine's matrix multiply can do.

    python -m benchmarks.throughput                      # the lab's model at batch 64 for 10 s
    python -m benchmarks.throughput --baseline --json    # and the lab's batch-1 loop, side by side
    python -m benchmarks.throughput --device cuda --dtype bf16 --cell lstm --num-layers 2 --batch-size 256

Model FLOPs come from the architecture: forward multiply-adds per character x 2
(`charrnn.model.flops_per_char`), x 3 for forward plus backward. The peak is the best torch.matmul
rate measured in the same process, thread count and dtype, over the model's own matmul shapes and
a large square one; it is measured before and after training and the better of the two is kept, so
load from other processes lowers the peak no more than it lowers the training rate.
Our figure is the real trainer (`charrnn.train.train`, timed by `charrnn.speed.trainer_throughput`, the
function the study plans with), evaluation time and warm-up excluded. Run from the repository root.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import torch

from benchmarks.lab_loop import lab_loop_throughput
from charrnn import corpora
from charrnn.config import TrainConfig
from charrnn.corpus import Corpus, CorpusError, load_corpus
from charrnn.model import CELLS, CharRNN, ModelConfig, flops_per_char
from charrnn.speed import trainer_throughput
from charrnn.train import EVAL_STREAMS

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SQUARE = {"cpu": 2048, "cuda": 8192}
MATMUL_SECONDS = 0.25  # per shape and pass
DEFAULT_CORPUS = "sherlock"


def train_flops_per_char(config: ModelConfig) -> int:
    """FLOPs to train on one character: forward multiply-adds x 2, x 3 for forward plus backward."""
    return 3 * flops_per_char(config)


def forward_matmuls(config: ModelConfig, batch_size: int, seq_len: int) -> list[tuple[int, int, int]]:
    """Every (m, k, n) matmul of one forward pass over a (batch_size, seq_len) chunk.

    As PyTorch runs an RNN: each layer's input projection for the whole chunk at once, then one
    (batch, hidden) x (hidden, gates*hidden) product per time step; then the decoder.
    """
    gates = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}[config.cell]
    rows, width = batch_size * seq_len, gates * config.hidden_size
    shapes = []
    for layer in range(config.num_layers):
        inp = config.embedding_dim if layer == 0 else config.hidden_size
        shapes.append((rows, inp, width))
        shapes += [(batch_size, config.hidden_size, width)] * seq_len
    shapes.append((rows, config.hidden_size, config.vocab_size))
    return shapes


def peak_shapes(config: ModelConfig, batch_size: int, seq_len: int, device: str) -> list[tuple[int, int, int]]:
    """The distinct model matmul shapes plus a large square one."""
    n = SQUARE[device]
    return sorted(set(forward_matmuls(config, batch_size, seq_len))) + [(n, n, n)]


def shape_label(shape: tuple[int, int, int]) -> str:
    return "x".join(str(d) for d in shape)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_s(
    shapes: list[tuple[int, int, int]], device: str, dtype: torch.dtype, seconds: float = MATMUL_SECONDS
) -> dict[str, float]:
    """torch.matmul FLOP/s (2*m*k*n per product) for each (m, k, n), keyed by "MxKxN"."""
    dev = torch.device(device)
    rates = {}
    for m, k, n in shapes:
        a = torch.randn(m, k, device=dev).to(dtype)
        b = torch.randn(k, n, device=dev).to(dtype)
        out = torch.empty(m, n, device=dev, dtype=dtype)
        torch.matmul(a, b, out=out)
        _sync(dev)
        calls, batch, t0 = 0, 1, time.perf_counter()
        while True:
            for _ in range(batch):
                torch.matmul(a, b, out=out)
            _sync(dev)
            calls += batch
            dt = time.perf_counter() - t0
            if dt >= seconds:
                break
            batch = max(1, int(0.05 * calls / dt))  # about 50 ms between syncs
        rates[shape_label((m, k, n))] = 2 * m * k * n * calls / dt
    return rates


def cpu_pressure_us() -> float:
    """Linux PSI: total microseconds in which some runnable task waited for a CPU (NaN where unavailable).

    The share of a period spent so is how contended the machine was while we measured.
    """
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as f:
            some = f.readline().split()
    except OSError:
        return math.nan
    return float(dict(kv.split("=") for kv in some[1:])["total"])


@dataclass
class BenchResult:
    """One benchmark run; `to_dict` is what --json prints."""

    settings: dict
    vocab_size: int
    num_params: int
    train_flops_per_char: int
    chars: int
    measured_s: float
    matmul_flops_per_s: dict[str, float]
    peak_dtype: str
    load_avg_1min: float
    cpu_wait_share: float  # share of the timed run in which some task on this machine waited for a CPU
    baseline_chars: int | None = None
    baseline_measured_s: float | None = None
    baseline_cpu_wait_share: float | None = None

    @property
    def chars_per_s(self) -> float:
        return self.chars / self.measured_s

    @property
    def model_flops_per_s(self) -> float:
        return self.chars_per_s * self.train_flops_per_char

    @property
    def peak_flops_per_s(self) -> float:
        return max(self.matmul_flops_per_s.values())

    @property
    def fraction_of_peak(self) -> float:
        return self.model_flops_per_s / self.peak_flops_per_s

    @property
    def baseline_chars_per_s(self) -> float | None:
        if self.baseline_chars is None:
            return None
        return self.baseline_chars / self.baseline_measured_s

    def to_dict(self) -> dict:
        d = {
            **self.settings,
            "vocab_size": self.vocab_size,
            "num_params": self.num_params,
            "train_flops_per_char": self.train_flops_per_char,
            "chars_per_s": self.chars_per_s,
            "measured_s": self.measured_s,
            "model_flops_per_s": self.model_flops_per_s,
            "peak_flops_per_s": self.peak_flops_per_s,
            "peak_dtype": self.peak_dtype,
            "fraction_of_peak": self.fraction_of_peak,
            "matmul_flops_per_s": self.matmul_flops_per_s,
            "load_avg_1min": self.load_avg_1min,
            "cpu_wait_share": self.cpu_wait_share,
        }
        if self.baseline_chars is not None:
            d.update(
                baseline_chars_per_s=self.baseline_chars_per_s,
                baseline_measured_s=self.baseline_measured_s,
                baseline_model_flops_per_s=self.baseline_chars_per_s * self.train_flops_per_char,
                speedup=self.chars_per_s / self.baseline_chars_per_s,
                baseline_cpu_wait_share=self.baseline_cpu_wait_share,
            )
        return d


class CpuWaitShare:
    """Context manager: the share of its wall time in which some task waited for a CPU (see cpu_pressure_us)."""

    share = math.nan

    def __enter__(self) -> CpuWaitShare:
        self._p0, self._t0 = cpu_pressure_us(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.share = (cpu_pressure_us() - self._p0) / 1e6 / (time.perf_counter() - self._t0)


def run_bench(config: TrainConfig, corpus: Corpus, seconds: float, baseline: bool = False) -> BenchResult:
    """Measure matmul peak, our trainer and (optionally) the lab's loop, one after another in this process."""
    model_config = config.model_config(len(corpus.vocab))
    if config.device == "cpu":
        torch.set_num_threads(config.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    dtype = torch.bfloat16 if config.bf16 else torch.float32
    shapes = peak_shapes(model_config, config.batch_size, config.seq_len, torch.device(config.device).type)
    before = matmul_flops_per_s(shapes, config.device, dtype, MATMUL_SECONDS)
    with CpuWaitShare() as ours:
        chars, measured = trainer_throughput(config, corpus, seconds)
    base, lab = (None, None), CpuWaitShare()
    if baseline:
        with lab:
            base = lab_loop_throughput(model_config, corpus.train, config.seq_len, seconds, device=config.device,
                                       seed=config.seed)
    after = matmul_flops_per_s(shapes, config.device, dtype, MATMUL_SECONDS)
    settings = dict(
        cell=config.cell, embedding_dim=config.embedding_dim, hidden_size=config.hidden_size,
        num_layers=config.num_layers, seq_len=config.seq_len, batch_size=config.batch_size,
        device=config.device, dtype="bf16" if config.bf16 else "fp32", threads=config.threads,
        torch_version=torch.__version__,
    )
    return BenchResult(
        settings=settings,
        vocab_size=len(corpus.vocab),
        num_params=CharRNN(model_config).num_params(),
        train_flops_per_char=train_flops_per_char(model_config),
        chars=chars,
        measured_s=measured,
        matmul_flops_per_s={k: max(before[k], after[k]) for k in before},
        peak_dtype=settings["dtype"],
        load_avg_1min=load,
        cpu_wait_share=ours.share,
        baseline_chars=base[0],
        baseline_measured_s=base[1],
        baseline_cpu_wait_share=lab.share if baseline else None,
    )


def format_text(r: BenchResult) -> str:
    """The human-readable report of a `BenchResult`."""
    s = r.settings
    where = f"{s['device']}, {s['threads']} thread{'s' if s['threads'] != 1 else ''}" if s["device"] == "cpu" \
        else s["device"]
    matmuls = ", ".join(f"{k}: {v / 1e9:.1f}" for k, v in r.matmul_flops_per_s.items())
    lines = [
        f"model     {s['cell']} {s['num_layers']}x{s['hidden_size']}, embedding {s['embedding_dim']}, "
        f"vocab {r.vocab_size}: {r.num_params:,} parameters, {r.train_flops_per_char / 1e6:.2f} MFLOP per "
        "training character (forward + backward)",
        f"ours      batch {s['batch_size']} x seq {s['seq_len']}, {s['dtype']}, {where}: "
        f"{r.chars_per_s:,.0f} chars/s = {r.model_flops_per_s / 1e9:.1f} GFLOP/s ({r.measured_s:.1f} s timed)",
        f"matmul    peak {r.peak_flops_per_s / 1e9:.1f} GFLOP/s {r.peak_dtype} (GFLOP/s by MxKxN: {matmuls})",
        f"ratio     {100 * r.fraction_of_peak:.0f}% of the matmul peak",
    ]
    if r.baseline_chars is not None:
        base = r.baseline_chars_per_s
        lines += [
            f"lab loop  batch 1 x seq {s['seq_len']}, fp32: {base:,.0f} chars/s = "
            f"{base * r.train_flops_per_char / 1e9:.1f} GFLOP/s ({r.baseline_measured_s:.1f} s timed)",
            f"speedup   {r.chars_per_s / base:.1f}x the lab loop",
        ]
    waits = f"{100 * r.cpu_wait_share:.0f}% of our run"
    if r.baseline_cpu_wait_share is not None:
        waits += f", {100 * r.baseline_cpu_wait_share:.0f}% of the lab loop's"
    lines.append(f"load      1-minute load average at start {r.load_avg_1min:.2f}; a task waited for a CPU in {waits} "
                 "(other processes; 0% = a quiet machine)")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and status 2, instead of usage + message
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m benchmarks.throughput", description="Training speed of one CharRNN vs the matmul peak.")
    p.add_argument("--cell", choices=CELLS, default="rnn_relu")
    p.add_argument("--embedding-dim", type=_positive(int), default=100)
    p.add_argument("--hidden-size", type=_positive(int), default=512)
    p.add_argument("--num-layers", type=_positive(int), default=3)
    p.add_argument("--seq-len", type=_positive(int), default=50)
    p.add_argument("--batch-size", type=_positive(int), default=64)
    p.add_argument("--seconds", type=_positive(float), default=10.0, help="timed seconds per loop (default 10)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="bf16 = bf16 autocast in the trainer")
    p.add_argument("--threads", type=_positive(int), default=_cpu_count(),
                   help="torch threads on CPU (default: the CPUs this process may use)")
    p.add_argument("--baseline", action="store_true", help="also run the lab's batch-1 loop and print the ratio")
    p.add_argument("--corpus", help=f"a UTF-8 text file (default: the corpus named {DEFAULT_CORPUS}: "
                                    "$CHARRNN_DATA, ./data, then the copy bundled with the package)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _checked_inputs(args: argparse.Namespace) -> tuple[TrainConfig, Corpus]:
    """Flags -> (TrainConfig, Corpus); raises CorpusError with one line for what the user can fix."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise CorpusError("--device cuda but torch sees no CUDA GPU")
    corpus = load_corpus(args.corpus or corpora.find(DEFAULT_CORPUS))
    need = max(args.batch_size * (args.seq_len + 1), args.seq_len + 102)  # the lab loop's start is random
    if len(corpus.train) < need or len(corpus.val) < 2:
        raise CorpusError(f"corpus has {len(corpus.train):,} training chars; batch {args.batch_size} x "
                          f"seq_len {args.seq_len} needs {need:,}")
    config = TrainConfig(
        cell=args.cell, embedding_dim=args.embedding_dim, hidden_size=args.hidden_size, num_layers=args.num_layers,
        seq_len=args.seq_len, batch_size=args.batch_size, device=args.device, threads=args.threads,
        precision=args.dtype, seed=args.seed,
        # Evaluation is excluded from the figure; keep it small so the run is mostly training.
        val_chars=2 * EVAL_STREAMS + 1, sample_chars=1, final_temperatures=(),
    )
    return config, corpus


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config, corpus = _checked_inputs(args)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = run_bench(config, corpus, args.seconds, baseline=args.baseline)
    print(json.dumps(result.to_dict()) if args.json else format_text(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
