"""How fast the real trainer trains one configuration on this machine: what `study.timeplan` plans with.

The benchmark built on it, against the matmul peak and the lab's loop, is `python -m benchmarks.throughput`
(a tool, not part of the package).
"""
from __future__ import annotations

import dataclasses
import math

from charrnn.config import TrainConfig
from charrnn.corpus import Corpus
from charrnn.train import EvalRecord, train

WARMUP_STEPS = 3


class _TimeUp(Exception):
    """Raised from the report callback to end a timed run: train() counts its budget in characters."""


def trainer_throughput(config: TrainConfig, corpus: Corpus, seconds: float) -> tuple[int, float]:
    """Train with `charrnn.train.train` for about `seconds` after a warm-up; (chars, seconds) timed.

    A short pilot run sizes the interval between evaluations (the only points where train() calls
    back); the first interval of the timed run is its warm-up. Evaluation time is excluded, as in
    `TrainResult.chars_per_s`.
    """
    step_chars = config.batch_size * config.seq_len
    pilot = train(dataclasses.replace(config, budget_chars=WARMUP_STEPS * step_chars, evals_per_trial=1),
                  corpus.train, corpus.val, corpus.vocab)
    step_s = max(pilot.wall_s - pilot.eval_s, 1e-6) / WARMUP_STEPS  # high: it includes the first steps
    steps = max(WARMUP_STEPS, math.ceil(min(1.0, seconds / 10) / step_s))
    evals = 10**6  # never reached: the callback stops the run
    timed = dataclasses.replace(config, budget_chars=evals * steps * step_chars, evals_per_trial=evals)
    marks: list[tuple[int, float]] = []

    def report(record: EvalRecord) -> None:
        if record.diverged:
            raise RuntimeError("the model diverged during the benchmark")
        marks.append((record.chars_seen, record.wall_s - record.eval_s))
        if marks[-1][1] - marks[0][1] >= seconds:
            raise _TimeUp

    try:
        train(timed, corpus.train, corpus.val, corpus.vocab, report=report)
    except _TimeUp:
        pass
    (c0, t0), (c1, t1) = marks[0], marks[-1]
    return c1 - c0, t1 - t0
