"""The final stage alone: one configuration trained as the study's final model trains it, and scored on the test text.

    python -m benchmarks.final --minutes 8.5                                  # seed 0's chosen GRU 2x512, rate capped
    python -m benchmarks.final --minutes 8.5 --set lr_scale=2.82             # at the trial's own rate
    python -m benchmarks.final --set cell=lstm --set hidden_size=256 --minutes 5
    python -m benchmarks.final --preset lab --minutes 27.5                      # the hand-picked baseline

The settings are the final stage's, from the same function (study.stages.final.final_config, on the sherlock spec):
the whole training text, the final model's step size, a cosine schedule fitted to the time limit after every
evaluation, its evaluations on its share of the validation text (final_texts), its patience once half the schedule
is behind, precision "auto"; besides, every CPU of this machine and one short sample. Prints each evaluation and,
at the end, the test bits/char and a sample; the figure in BENCHMARKS.md ("The cap, measured on the same
configuration") comes from it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from charrnn import corpora
from charrnn.config import TrainConfig
from charrnn.corpus import load_corpus
from charrnn.sample import printable
from charrnn.train import train
from study.inputs import resolve_spec
from study.stages.final import final_config, final_texts

# Seed 0's chosen configuration in the default study (BENCHMARKS.md), its rate capped at Adam's usual one.
SEED0 = dict(embedding_dim=16, hidden_size=512, num_layers=2, cell="gru", lr_scale=1.0, optimizer="adam", seq_len=25,
             step_chars=800, dropout=0.00288, grad_clip=2.28)

# The hand-picked baseline a study must beat (issue 27): the spec's final.baseline (the lab handout's own choice),
# which the final stage races against the study's configuration.
LAB = dict(resolve_spec("sherlock").final["baseline"])
PRESETS = {"seed0": SEED0, "lab": LAB}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.final", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=8.5)
    p.add_argument("--preset", choices=sorted(PRESETS), default="seed0",
                   help="the configuration: seed 0's chosen one (default) or the lab handout's (the baseline)")
    p.add_argument("--corpus", default="sherlock")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a hyperparameter of the configuration (JSON value), e.g. lr_scale=2.82")
    p.add_argument("--step-chars", type=int, default=0,
                   help="characters a step (default: the spec's final.step_chars)")
    args = p.parse_args(argv)
    config = dict(PRESETS[args.preset])
    for item in args.set:
        name, _, value = item.partition("=")
        try:
            config[name] = json.loads(value)
        except json.JSONDecodeError:
            config[name] = value
    corpus = load_corpus(corpora.find(args.corpus))
    spec = resolve_spec("sherlock")
    final = final_config(spec, config, spec.final["chars"], 60 * args.minutes, spec.seed)
    final.update({"step_chars": args.step_chars} if args.step_chars else {})
    # This bench's own: every CPU here (the final stage gets a whole node's), and one short sample at the end.
    cfg = TrainConfig.from_flat({**final, "threads": os.cpu_count() or 1, "sample_chars": 1,
                                 "final_temperatures": (0.8,), "final_sample_chars": 300})
    texts = final_texts(spec, corpus)
    t = time.time()
    result = train(cfg, texts["train"], texts["val"], corpus.vocab, test_ids=texts["test"],
                   report=lambda r: print(f"{r.chars_seen:>11,} chars  val {r.val_bpc:.4f}  {r.wall_s:6.0f} s",
                                          flush=True))
    print(f"test {result.test_bpc:.4f} bits/char, best val {result.best_val_bpc:.4f}, {result.chars_seen:,} chars "
          f"in {time.time() - t:.0f} s ({cfg.threads} threads, {'bf16' if cfg.bf16 else 'fp32'})")
    print(printable(result.records[-1].final_samples.get(0.8, "")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
