"""Seed noise against budget, unpaired and paired: what `study.timeplan` prints before a study starts.

Trains one typical center configuration and one move of it (lr_scale x2.2) with several seeds, each pair with the
same seed, and prints at each budget (in optimizer steps) the sd over seeds of the center's validation bits/char
and the sd of the paired differences move - center. Run from the repository:

    python -m benchmarks.seed_noise [--seeds 4] [--steps 400] [--jobs 2]
"""
from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ProcessPoolExecutor

from charrnn.config import TrainConfig
from study.inputs import load_checked_corpus, resolve_spec

CENTER = {"cell": "gru", "hidden_size": 256, "num_layers": 1, "embedding_dim": 48, "seq_len": 100, "step_chars": 800,
          "optimizer": "adam", "lr_scale": 1.5, "dropout": 0.05, "grad_clip": 1.5, "train_chars": 1_000_000,
          "lr_schedule": "cosine", "precision": "auto", "val_chars": 15_000, "threads": 1, "sample_chars": 1,
          "final_temperatures": ()}


def _run(args: tuple[dict, int, int]) -> list[tuple[int, float]]:
    from charrnn.train import train

    flat, seed, steps = args
    spec = resolve_spec("sherlock")
    corpus = load_checked_corpus(spec, None, "utf-8")
    config = TrainConfig.from_flat({**flat, "seed": seed, "budget_chars": steps * 800, "evals_per_trial": 8})
    result = train(config, corpus.train, corpus.val, corpus.vocab)
    return [(r.steps, r.val_bpc) for r in result.records]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args(argv)
    move = {**CENTER, "lr_scale": CENTER["lr_scale"] * 2.2}
    jobs = [(c, s, a.steps) for s in range(a.seeds) for c in (CENTER, move)]
    with ProcessPoolExecutor(a.jobs) as pool:
        out = list(pool.map(_run, jobs))
    centers, moves = out[0::2], out[1::2]
    print(f"{'steps':>6} {'center mean':>12} {'seed sd':>8} {'paired diff mean':>17} {'paired sd':>10}")
    for k, (steps, _) in enumerate(centers[0]):
        c = [run[k][1] for run in centers]
        d = [m[k][1] - run[k][1] for m, run in zip(moves, centers)]
        print(f"{steps:>6} {statistics.mean(c):>12.3f} {statistics.stdev(c):>8.3f} {statistics.mean(d):>+17.3f} "
              f"{statistics.stdev(d):>10.3f}")


if __name__ == "__main__":
    main()
