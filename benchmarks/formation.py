"""How many optimizer steps a trial of a spec's search space takes to leave the unigram plateau.

    python -m benchmarks.formation                       # sherlock's space, 16 configurations, up to 400 steps
    python -m benchmarks.formation --spec shakespeare --configs 24 --max-steps 600 --json

Draws configurations from a Latin hypercube over the spec's whole search space (the startup trials' design: every
optimizer, learning rate, cell, ...), trains each with the real trainer, scoring the validation text every
`--every` steps, and prints the first step at which each was at least 1 bit/char below the unigram baseline of the
training text ("formed"). The figure counts steps, not seconds, so it does not depend on the machine or its load.
It is what the spec's `scheduler.min_steps` should be: the first rung gives every trial that many steps.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from charrnn.config import TrainConfig
from charrnn.corpus import load_corpus
from charrnn.metrics import LN2
from charrnn.train import train
from study.inputs import resolve_corpus, resolve_spec
from study.space import LatinHypercubeStartup, make_sampler, optuna_space


def unigram_bpc(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int) -> float:
    """Bits/char of the training text's character frequencies (add-one smoothed) on the validation text."""
    counts = np.bincount(train_ids, minlength=vocab_size) + 1.0
    p = counts / counts.sum()
    return float(-np.log(p[val_ids]).mean() / LN2)


def formation_steps(config: TrainConfig, corpus, val: np.ndarray, unigram: float, every: int,
                    max_steps: int) -> int | None:
    """The first evaluated step at which val_bpc <= unigram - 1 (None: not within max_steps, or diverged)."""
    step_chars = config.batch_size * config.seq_len
    cfg = TrainConfig.from_flat({**config.to_dict(), "budget_chars": max_steps * step_chars,
                                 "eval_at": [every * k * step_chars for k in range(1, max_steps // every)]})
    found: list[int] = []

    class _Formed(Exception):
        pass

    def report(record) -> None:
        if math.isfinite(record.val_bpc) and record.val_bpc <= unigram - 1.0:
            found.append(record.steps)
            raise _Formed

    try:
        train(cfg, corpus.train, val, corpus.vocab, report=report)
    except _Formed:
        pass
    return found[0] if found else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.formation", description=__doc__.splitlines()[0])
    p.add_argument("--spec", default="sherlock")
    p.add_argument("--configs", type=int, default=16)
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--every", type=int, default=10, help="steps between evaluations")
    p.add_argument("--val-chars", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    spec = resolve_spec(args.spec)
    corpus = load_corpus(resolve_corpus(spec.corpus)[1])
    val = corpus.val[: args.val_chars]
    unigram = unigram_bpc(corpus.train, val, len(corpus.vocab))
    design = LatinHypercubeStartup(make_sampler(spec, args.seed), optuna_space(spec), args.configs,
                                   args.seed).design()
    rows = []
    for row in design:
        flat = {k: v for k, v in {**spec.fixed, **row, "threads": 1, "val_chars": args.val_chars, "sample_chars": 1,
                                  "final_temperatures": (), "seed": args.seed}.items()
                if k in TrainConfig.__dataclass_fields__}
        config = TrainConfig.from_flat(flat)
        steps = formation_steps(config, corpus, val, unigram, args.every, args.max_steps)
        rows.append({**row, "formed_at_steps": steps})
        if not args.json:
            print(f"{steps if steps is not None else f'>{args.max_steps}':>6} steps  {row}", flush=True)
    formed = np.array([r["formed_at_steps"] for r in rows if r["formed_at_steps"] is not None], dtype=float)
    summary = {"spec": spec.name, "unigram_bpc": unigram, "configs": len(rows), "formed": int(len(formed)),
               "median_steps": float(np.median(formed)) if len(formed) else None,
               "p90_steps": float(np.percentile(formed, 90)) if len(formed) else None,
               "max_steps_tried": args.max_steps, "every": args.every}
    if args.json:
        print(json.dumps({"summary": summary, "configs": rows}, default=str))
    else:
        print(f"unigram {unigram:.3f} bits/char; {summary['formed']} of {len(rows)} configurations formed (1 bit "
              f"below it) within {args.max_steps} steps: median {summary['median_steps']}, 90th percentile "
              f"{summary['p90_steps']} (evaluated every {args.every} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
