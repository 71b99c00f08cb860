"""The selection rule: which search trial's configuration a study hands over. Its one owner.

The study applies it (study.stages.repeats) while the seed repeats run and records its decision in study.json
(`selection`: the rule, the candidates in order with why each was skipped, and the choice). A report reads that
decision, and applies this same rule only to a run directory written before the decision was recorded.

- Candidates: search trials that trained normally (`TRAINED`, a finite best_val_bpc); those that got to a later
  evaluation point first (a score at a smaller budget is not comparable with one at a larger), by best_val_bpc among
  equals.
- The choice: the first of the best `MAX_CANDIDATES` whose seed repeats (role repeat, repeat_of its id) neither
  diverged nor failed; none when all of them did. A configuration without repeats is not known to be unstable.

Pure: a trials table in (trials.parquet's columns), a decision out. Imports pandas, so `runcontract` itself does not
import this module.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from runcontract import MAX_CANDIDATES, TRAINED, UNSTABLE

RULE = ("the best search trial by best_val_bpc among those that got furthest; a configuration that diverged or "
        "failed in a seed repeat is skipped for the next")


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


def choose(trials: pd.DataFrame, reached) -> tuple[str | None, list[tuple[str, str | None]]]:
    """The rule applied to a finished study's table: (the chosen trial id or None, the candidates checked in order
    with why each was skipped)."""
    checked: list[tuple[str, str | None]] = []
    for tid in ranked(trials, reached)["trial_id"].astype(str).head(MAX_CANDIDATES):
        why = skipped(trials, tid)
        checked.append((tid, why))
        if why is None:
            return tid, checked
    return None, checked


def record(candidates: list[tuple[str, str | None]], chosen: str | None) -> dict:
    """study.json's `selection`: the rule, the candidates in order with why each was skipped, and the choice."""
    return {"rule": RULE, "chosen": chosen, "candidates": [{"trial_id": t, "skipped": why} for t, why in candidates]}
