"""The selection rule: which search trial's configuration a study hands over. Its one owner.

The study applies it (study.stages.repeats) while the seed repeats run and records its decision in study.json
(`selection`: the rule, the candidates in order with why each was skipped, and the choice). A report reads that
decision, and applies this same rule only to a run directory written before the decision was recorded.

- Candidates: search trials that trained normally (`TRAINED`, a finite best_val_bpc); those that got to a later
  evaluation point first (a score at a smaller budget is not comparable with one at a larger), by best_val_bpc among
  equals.
- The choice, on expected score rather than on one lucky draw: of the best `MAX_CANDIDATES`, those whose seed
  repeats (role repeat, repeat_of its id) neither diverged nor failed, the one whose repeats scored best on average.
  Only the repeats count: the candidates' own scores were selected for being low, so they are biased (by +0.14 to
  +0.46 bits/char in the default study: BENCHMARKS.md). Among candidates without repeats (a study without repeats,
  or an older run that repeated only its first), the first. None when every candidate was unstable. A
  configuration without repeats is not known to be unstable.

Pure: a trials table in (trials.parquet's columns), a decision out. Imports pandas, so `runcontract` itself does not
import this module.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from runcontract import MAX_CANDIDATES, TRAINED, UNSTABLE

RULE = (f"of the {MAX_CANDIDATES} best search trials by best_val_bpc among those that got furthest, each retrained "
        "with other seeds, the one whose seed repeats scored best on average; a configuration that diverged or failed "
        "in a seed repeat is skipped")


def ranked(trials: pd.DataFrame, reached) -> pd.DataFrame:
    """The candidates, best first. `reached`, one value per row of `trials` (larger = a later evaluation point), says
    how far each trial got: the study counts its own evaluation points, a report the milestones study.json names."""
    t = trials.assign(_reached=np.nan_to_num(np.asarray(reached, dtype=float), nan=-1.0))
    role = t["role"] if "role" in t else pd.Series("search", index=t.index)
    ok = t[(role == "search") & t["status"].isin(TRAINED) & np.isfinite(t["best_val_bpc"].astype(float))]
    return ok.sort_values(["_reached", "best_val_bpc"], ascending=[False, True], kind="stable").drop(
        columns="_reached")


def points_reached(trials: pd.DataFrame, eval_at: list[int]) -> np.ndarray:
    """How many of the evaluation points `eval_at` each trial's chars_seen has passed: `ranked`'s `reached`."""
    return np.searchsorted(np.asarray(eval_at), trials["chars_seen"].to_numpy(), side="right")


def unstable_repeats(trials: pd.DataFrame, trial_id: str) -> tuple[int, int]:
    """(seed repeats that diverged or failed, seed repeats) of one search trial's configuration."""
    if "repeat_of" not in trials:
        return 0, 0
    rep = trials[(trials["role"] == "repeat") & (trials["repeat_of"].astype(str) == str(trial_id))]
    return int(rep["status"].isin(UNSTABLE).sum()), len(rep)


def skipped(trials: pd.DataFrame, trial_id: str) -> str | None:
    """Why a candidate whose seed repeats have run is not handed over, or None when it trained reliably."""
    bad, n = unstable_repeats(trials, trial_id)
    return f"unstable: diverged or failed in {bad} of {n} seed repeats" if bad else None


def repeat_mean(trials: pd.DataFrame, trial_id: str) -> float:
    """The mean best_val_bpc of one search trial's seed repeats that trained normally (NaN without any)."""
    if "repeat_of" not in trials:
        return float("nan")
    rep = trials[(trials["role"] == "repeat") & (trials["repeat_of"].astype(str) == str(trial_id))
                 & trials["status"].isin(TRAINED)]
    values = rep["best_val_bpc"].astype(float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def decide(trials: pd.DataFrame, candidates: list[str]) -> tuple[str | None, list[tuple[str, str | None]]]:
    """The choice among `candidates` (best first) whose repeats have run: (the chosen id or None, each candidate
    with why it was not chosen, None for the chosen one)."""
    why = {tid: skipped(trials, tid) for tid in candidates}
    stable = [tid for tid in candidates if why[tid] is None]
    scored = [tid for tid in stable if np.isfinite(repeat_mean(trials, tid))]
    chosen = min(scored, key=lambda tid: repeat_mean(trials, tid)) if scored else (stable[0] if stable else None)
    if chosen is not None and scored:
        best = repeat_mean(trials, chosen)
        for tid in scored:
            if tid != chosen:
                why[tid] = f"its seed repeats scored {repeat_mean(trials, tid):.3f} on average, against {best:.3f}"
    for tid in stable:
        if tid != chosen and why[tid] is None:
            why[tid] = "a candidate ranked above it trained reliably"
    return chosen, [(tid, why[tid]) for tid in candidates]


def choose(trials: pd.DataFrame, reached) -> tuple[str | None, list[tuple[str, str | None]]]:
    """The rule applied to a finished study's table: (the chosen trial id or None, the candidates with why each was
    not chosen). Candidates whose repeats never ran (an older study stopped at its first reliable one) are left out,
    unless none has repeats."""
    top = ranked(trials, reached)["trial_id"].astype(str).head(MAX_CANDIDATES).tolist()
    ran = [tid for tid in top if unstable_repeats(trials, tid)[1] > 0]
    return decide(trials, ran or top[:1])


def record(candidates: list[tuple[str, str | None]], chosen: str | None) -> dict:
    """study.json's `selection`: the rule, the candidates in order with why each was skipped, and the choice."""
    return {"rule": RULE, "chosen": chosen, "candidates": [{"trial_id": t, "skipped": why} for t, why in candidates]}
