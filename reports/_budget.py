"""Equal-budget comparison and the seed noise floor.

Early-stopped trials have seen fewer characters, so their final val_bpc is not comparable with that of
full trials. We pick one budget (a chars_seen milestone from curves.parquet) that enough trials reached
and compare every trial by its best val_bpc up to that budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports._load import RunData

EXCLUDED_STATUSES = ("diverged", "failed")


@dataclass(frozen=True)
class TrialCounts:
    """How many trials of each kind the run holds, and how many the fit may use."""

    total: int
    search: int
    repeats: int
    diverged: int
    failed: int
    no_value: int  # not diverged/failed but val_bpc is NaN
    valid: int  # search trials usable for the importance fit


@dataclass(frozen=True)
class Budget:
    """The budget at which trials are compared.

    `values` has one row per compared search trial: trial_id and `y` (best val_bpc up to `chars`).
    `milestones` lists every evaluation milestone with the number of valid search trials that reached it.
    """

    chars: float
    n_trials: int
    rung: int | None
    is_full: bool
    values: pd.DataFrame
    milestones: pd.DataFrame
    min_trials: int = 0  # trials the budget had to have


@dataclass(frozen=True)
class NoiseFloor:
    """Seed noise: the spread of val_bpc (at the compared budget) over repeats of one configuration."""

    n_repeats: int
    sd: float  # NaN when unknown (fewer than two repeats reached the budget)
    values: tuple[float, ...]

    @property
    def known(self) -> bool:
        return self.n_repeats >= 2 and math.isfinite(self.sd)


def valid_mask(trials: pd.DataFrame) -> pd.Series:
    """Trials that trained normally: not diverged/failed and with a finite val_bpc."""
    return ~trials["status"].isin(EXCLUDED_STATUSES) & np.isfinite(trials["val_bpc"])


def count_trials(trials: pd.DataFrame) -> TrialCounts:
    """Count trials by role and by why they are excluded from the fit."""
    search = trials["role"] != "repeat"
    bad = trials["status"].isin(EXCLUDED_STATUSES)
    return TrialCounts(
        total=len(trials),
        search=int(search.sum()),
        repeats=int((~search).sum()),
        diverged=int((search & (trials["status"] == "diverged")).sum()),
        failed=int((search & (trials["status"] == "failed")).sum()),
        no_value=int((search & ~bad & ~np.isfinite(trials["val_bpc"])).sum()),
        valid=int((search & valid_mask(trials)).sum()),
    )


def _rungs(study: dict) -> list[float]:
    sched = study.get("scheduler") or {}
    try:
        grace, rf, max_t = float(sched["grace_period"]), float(sched["reduction_factor"]), float(sched["max_t"])
    except (KeyError, TypeError, ValueError):
        return []
    if grace <= 0 or rf <= 1:
        return []
    rungs, t = [], grace
    while t < max_t and len(rungs) < 64:
        rungs.append(t)
        t *= rf
    return rungs


def best_up_to(curves: pd.DataFrame, trial_ids: list[str], chars: float) -> pd.DataFrame:
    """Best (lowest) val_bpc each trial reached up to `chars`, for trials whose curve reached `chars`."""
    c = curves[curves["trial_id"].isin(trial_ids)]
    reached = c.groupby("trial_id")["chars_seen"].max()
    reached = reached[reached >= chars].index
    c = c[c["trial_id"].isin(reached) & (c["chars_seen"] <= chars)]
    y = c.groupby("trial_id")["val_bpc"].min()
    y = y[np.isfinite(y)]
    return pd.DataFrame({"trial_id": y.index.astype(str), "y": y.to_numpy(float)})


def choose_budget(run: RunData, min_trials: int | None = None) -> Budget:
    """Pick the highest evaluation milestone that at least `min_trials` valid search trials reached.

    Args:
        run: the loaded run.
        min_trials: trials required at the budget; default max(20, half the valid search trials),
            capped at the largest count any milestone has.

    Returns:
        The chosen `Budget` (n_trials may be 0 when no curves exist).
    """
    trials = run.trials
    ids = trials.loc[(trials["role"] != "repeat") & valid_mask(trials), "trial_id"].tolist()
    c = run.curves[run.curves["trial_id"].isin(ids) & np.isfinite(run.curves["val_bpc"])]
    reached = c.groupby("trial_id")["chars_seen"].max()
    milestones = np.sort(c["chars_seen"].unique())
    counts = np.array([(reached >= m).sum() for m in milestones], dtype=int)
    table = pd.DataFrame({"chars_seen": milestones, "n_trials": counts})
    if len(milestones) == 0:
        return Budget(math.nan, 0, None, False, pd.DataFrame({"trial_id": pd.Series([], dtype=str),
                                                              "y": pd.Series([], dtype=float)}), table)
    need = min_trials if min_trials is not None else max(20, math.ceil(len(ids) / 2))
    need = min(need, int(counts.max()))
    chars = float(milestones[counts >= need].max())
    rungs = _rungs(run.study)
    rung = next((i + 1 for i, r in enumerate(rungs) if math.isclose(r, chars, rel_tol=1e-6)), None)
    full = run.study.get("budget_chars")
    is_full = full is not None and chars >= float(full) * (1 - 1e-9)
    values = best_up_to(run.curves, ids, chars)
    return Budget(chars, len(values), rung, bool(is_full), values, table, need)


def noise_floor(run: RunData, chars: float) -> NoiseFloor:
    """Seed noise from trials with role == "repeat", measured at budget `chars` like the search trials."""
    trials = run.trials
    ids = trials.loc[(trials["role"] == "repeat") & valid_mask(trials), "trial_id"].tolist()
    if not ids or not math.isfinite(chars):
        return NoiseFloor(0, math.nan, ())
    vals = best_up_to(run.curves, ids, chars)["y"].to_numpy(float)
    sd = float(np.std(vals, ddof=1)) if len(vals) >= 2 else math.nan
    return NoiseFloor(len(vals), sd, tuple(float(v) for v in vals))
