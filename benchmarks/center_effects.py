"""Does the local design's answer depend on the seed? The design around the spec's fixed center, seed pair by pair.

A study with seed S trains its local design (study/local.py) around the spec's `[local.center]` with the local
seeds of S (`study.local.seeds_for`: seed 0 → 1000, 1001; seed 1 → 1002, 1003; ...). This script trains the same
design, the center and every move, with the local seeds of studies 0 .. K-1 at one budget, with the real trainer
and no Ray (each trial built as study/stages/local.py builds it: `benchmarks.reference_effects`). Then, for each
study seed, each move's paired effect y(move, s) - y(center, s) averaged over that study's seeds, each
hyperparameter's importance (its largest |effect| over the moves that trained in every seed), and the leader. It
says whether the K studies' leaders agree, and by how much the leader leads.

    python -m benchmarks.center_effects [--spec sherlock] [--steps 140] [--studies 3] [--jobs 2] [--out FILE.jsonl]

The steps are the local design's budget in optimizer steps (the plan prints them: 140 for the slow case, 400 for
the README's first command on a 17-19k chars/s machine). Every finished trial is appended to FILE.jsonl as it
ends, so a killed run resumes where it stopped. This is the design's leader on point estimates; the report's
verdict adds intervals (reports/_verdict.py). The figures go in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from benchmarks.reference_effects import Study, read_results, reference_points, run_points
from runcontract import TRAINED
from study.local import design, seeds_for
from study.spec import fit_to_corpus


def pair_effects(records: pd.DataFrame, studies: dict[int, list[int]], uniform: float) -> pd.DataFrame:
    """One row per move (move, param, label) with, per study seed S, its mean paired effect over S's local seeds
    (column `S`) and whether it trained in every one of them (column `S ok`). A failed trial scores `uniform`."""
    r = records.assign(y=records["best_val_bpc"].where(records["status"].isin(TRAINED), uniform).fillna(uniform),
                       ok=records["status"].isin(TRAINED))
    center = r[r["move"] == 0].set_index("seed")
    rows = []
    for (move, param, label), g in r[r["move"] > 0].groupby(["move", "param", "label"], sort=True):
        g = g.set_index("seed")
        row = {"move": move, "param": param, "label": label}
        for study, seeds in studies.items():
            have = [s for s in seeds if s in g.index and s in center.index]
            row[study] = float((g.loc[have, "y"] - center.loc[have, "y"]).mean()) if have else math.nan
            row[f"{study} ok"] = len(have) == len(seeds) and bool(g.loc[have, "ok"].all() and
                                                                 center.loc[have, "ok"].all())
        rows.append(row)
    return pd.DataFrame(rows)


def leaders(effects: pd.DataFrame, studies: list[int]) -> pd.DataFrame:
    """Per study seed: the leader (the largest importance, |effect| over the moves that trained in every seed), its
    importance, the runner-up and its importance."""
    out = []
    for study in studies:
        ok = effects[effects[f"{study} ok"]]
        imp = ok.assign(a=ok[study].abs()).groupby("param")["a"].max().sort_values(ascending=False)
        out.append({"study_seed": study, "leader": imp.index[0] if len(imp) else None,
                    "importance": float(imp.iloc[0]) if len(imp) else math.nan,
                    "second": imp.index[1] if len(imp) > 1 else None,
                    "second_importance": float(imp.iloc[1]) if len(imp) > 1 else math.nan})
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    from study.inputs import UsageError, load_checked_corpus, resolve_spec

    p = argparse.ArgumentParser(prog="python -m benchmarks.center_effects", description=__doc__.split("\n")[0])
    p.add_argument("--spec", default="sherlock", help="a bundled spec's name or a spec file with [local.center]")
    p.add_argument("--steps", type=int, default=140, help="the local design's budget in optimizer steps")
    p.add_argument("--studies", type=int, default=3, help="study seeds 0 .. K-1, each with its own local seeds")
    p.add_argument("--jobs", type=int, default=2, help="trials at once, one CPU each")
    p.add_argument("--out", type=Path, help="the results file (default center-effects-SPEC-STEPS.jsonl here)")
    a = p.parse_args(argv)
    try:
        spec = resolve_spec(a.spec)
        corpus = load_checked_corpus(spec, spec.corpus, "utf-8")
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spec, _ = fit_to_corpus(spec, len(corpus.train), len(corpus.val))
    center = spec.local_center()
    if center is None or a.steps < 1 or a.studies < 1:
        print("error: the spec has no [local.center], or --steps/--studies below 1", file=sys.stderr)
        return 2
    step = int(spec.fixed.get("step_chars") or spec.step_chars_range()[1])
    n = int(spec.local["seeds"]) or 2
    studies = {s: seeds_for(s, n) for s in range(a.studies)}
    seeds = [x for v in studies.values() for x in v]
    budget = a.steps * step
    uniform = math.log2(max(len(corpus.vocab), 2))
    study = Study(run_dir=Path("."), spec=spec, corpus=corpus, center=center, moves=tuple(design(spec, center)),
                  budget_chars=budget, steps=a.steps, seeds=tuple(seeds), uniform=uniform)
    out = a.out or Path(f"center-effects-{spec.name}-{a.steps}.jsonl")
    run_points(reference_points(study, seeds, budget), corpus, spec.val_chars, out, a.jobs)
    effects = pair_effects(pd.DataFrame(read_results(out)), studies, uniform)
    pd.set_option("display.width", 160)
    print(f"around {center} at {a.steps} steps ({budget:,} characters); effects in bits/char, study seed by study "
          "seed (its local seeds), * = a move that failed in some seed (not ranked)")
    shown = effects[["param", "label"]].copy()
    for s in studies:
        shown[f"seed {s}"] = [f"{v:+.3f}{'' if ok else '*'}" for v, ok in zip(effects[s], effects[f"{s} ok"])]
    print(shown.to_string(index=False))
    lead = leaders(effects, list(studies))
    print(lead.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    same = lead["leader"].nunique() == 1
    print(f"the {a.studies} study seeds name {'the same' if same else 'different'} leader"
          f"{'' if not same else ': ' + str(lead['leader'].iloc[0])}; the leader's lead over the runner-up: "
          + ", ".join(f"{x:+.3f}" for x in lead["importance"] - lead["second_importance"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
