"""Which search trial's configuration the study hands over: the policy, pure (tables in, decision out).

The driver runs the seed repeats a candidate needs; these functions decide. The decision is recorded in
study.json (`selection`) and `reports` reads it from there.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

# When the best configuration diverges in a seed repeat, the next best is tried, up to MAX_CANDIDATES in all.
from runcontract import MAX_CANDIDATES, REPEAT, SEARCH, TRAINED, UNSTABLE  # noqa: F401 - MAX_CANDIDATES: the driver's

RULE = ("the best search trial by best_val_bpc among those that got furthest; a configuration that diverged or "
        "failed in a seed repeat is skipped for the next")


def ranked_search_trials(trials: pd.DataFrame, eval_at: list[int]) -> pd.DataFrame:
    """Search trials that trained normally, best first: those that got to a later evaluation point first (a
    value at a smaller budget is not comparable with one at a larger), by val_bpc among equals."""
    search = trials[trials.get("role", SEARCH) == SEARCH]
    ok = search[search["best_val_bpc"].notna() & search["status"].isin(TRAINED)].copy()
    ok["_reached"] = np.searchsorted(np.asarray(eval_at), ok["chars_seen"].to_numpy(), side="right")
    return ok.sort_values(["_reached", "best_val_bpc"], ascending=[False, True]).drop(columns="_reached")


def best_search_trial(trials: pd.DataFrame, eval_at: list[int]) -> pd.Series | None:
    """The search trial with the lowest best_val_bpc among those that got furthest (normally: the whole budget)."""
    ranked = ranked_search_trials(trials, eval_at)
    return None if ranked.empty else ranked.iloc[0]


def unstable_repeats(trials: pd.DataFrame, trial_id: str) -> tuple[int, int]:
    """(repeats that diverged or failed, repeats) of one search trial's configuration."""
    rep = trials[(trials.get("role", SEARCH) == REPEAT) & (trials.get("repeat_of") == trial_id)]
    return int(rep["status"].isin(UNSTABLE).sum()), len(rep)


def verdict(trials: pd.DataFrame, trial_id: str) -> str | None:
    """Why a candidate whose seed repeats have run is not handed over, or None when it trained reliably."""
    bad, n = unstable_repeats(trials, trial_id)
    return f"diverged or failed in {bad} of {n} seed repeats" if bad else None


def record(candidates: list[dict], chosen: str | None) -> dict:
    """study.json's `selection`: the rule, the candidates in order with why each was skipped, and the choice."""
    return {"rule": RULE, "chosen": chosen, "candidates": candidates}
