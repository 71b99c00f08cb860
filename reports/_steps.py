"""Optimizer steps: how far each trial had trained, in the unit a model learns in.

Trials are compared at a budget in characters, but a model learns per optimizer step, and the characters one
step takes (batch_size x seq_len) vary 30-fold in a typical search space: at 100k characters one trial has taken
250 steps and another 7. A trial that has not taken enough steps sits on the unigram plateau (it predicts
character frequencies and nothing else), whatever its hyperparameters would do once trained; comparing it with
trained ones measures the steps, not the hyperparameters. This module measures, from the contract, the steps
each trial had taken and whether quality had formed:

- steps at an evaluation: curves' `steps` column; in run directories written before it existed,
  chars_seen // step_chars;
- characters per step of a trial (`step_chars`): trials' `step_chars` column; else batch_size x seq_len from
  the trial's searched values, study.json's `fixed`, or the trainer's defaults (64 x 50); a `step_chars`
  setting (characters per step) gives batch_size = round(step_chars / seq_len);
- the steps a trial needs to leave the plateau: study.json's `scheduler.min_steps`, else 100 (what real
  sherlock curves show; `plateau_exit` measures it from the run's own curves);
- formed: at least 1 bit/char below the unigram baseline (baselines.parquet, method unigram, split val).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports._load import RunData
from runcontract import batch_size_for

DEFAULT_BATCH_SIZE, DEFAULT_SEQ_LEN = 64, 50  # the trainer's defaults (charrnn.config.TrainConfig)
DEFAULT_MIN_STEPS = 100
FORMED_BITS = 1.0  # a trial has formed once it is this many bits/char below the unigram baseline
STEP_SETTERS = ("batch_size", "seq_len", "step_chars")  # hyperparameters that set characters per step
CARRIED_RHO = -0.5  # a Spearman of score with steps at or below this: steps, not the setting, carry the score


def min_steps(study: dict) -> int:
    """Optimizer steps a trial needs to leave the unigram plateau: `scheduler.min_steps` as the study recorded it
    (0 included: the study's decision), else 100."""
    v = (study.get("scheduler") or {}).get("min_steps")
    try:
        v = int(v)
    except (TypeError, ValueError):
        return DEFAULT_MIN_STEPS
    return v if v >= 0 else DEFAULT_MIN_STEPS


def _setting(trials: pd.DataFrame, study: dict, name: str) -> pd.Series | None:
    """A per-trial setting: the searched column where it has a value, else study.json's `fixed`, else None."""
    fixed = (study.get("fixed") or {}).get(name)
    col = f"param.{name}"
    out = pd.Series(np.nan, index=trials.index)
    if col in trials.columns:
        out = pd.to_numeric(trials[col], errors="coerce").astype(float)
    if fixed is not None:
        try:
            out = out.fillna(float(fixed))
        except (TypeError, ValueError):
            pass
    return None if out.isna().all() else out


def step_chars(run: RunData) -> pd.Series:
    """Characters per optimizer step of every trial (float, indexed by trial_id; see the module docstring)."""
    t = run.trials
    if "step_chars" in t.columns:
        given = pd.to_numeric(t["step_chars"], errors="coerce").astype(float)
        given = given.where(given > 0)
    else:
        given = pd.Series(np.nan, index=t.index)
    seq = _setting(t, run.study, "seq_len")
    seq = (seq if seq is not None else pd.Series(float(DEFAULT_SEQ_LEN), index=t.index)).fillna(DEFAULT_SEQ_LEN)
    per_step = _setting(t, run.study, "step_chars")
    if per_step is not None:
        batch = pd.Series([batch_size_for(c, s) if math.isfinite(c) and math.isfinite(s) else math.nan
                           for c, s in zip(per_step.astype(float), seq.astype(float))], index=t.index, dtype=float)
    else:
        batch = _setting(t, run.study, "batch_size")
        batch = batch if batch is not None else pd.Series(float(DEFAULT_BATCH_SIZE), index=t.index)
    derived = (batch.fillna(DEFAULT_BATCH_SIZE) * seq).astype(float)
    return pd.Series(given.fillna(derived).to_numpy(float), index=t["trial_id"].astype(str).to_numpy())


def with_steps(curves: pd.DataFrame, run: RunData) -> pd.DataFrame:
    """`curves` with a float `steps` column: optimizer steps taken at each evaluation (from the column where the
    run has it, else chars_seen // step_chars; NaN for a trial with neither). A recorded 0 past the first
    character is a result that did not say (the writer's default), and is derived like a missing one."""
    c = curves.copy()
    per = c["trial_id"].map(step_chars(run)).astype(float)
    derived = np.floor(c["chars_seen"].astype(float) / per)
    if "steps" in c.columns:
        given = pd.to_numeric(c["steps"], errors="coerce").astype(float)
        c["steps"] = given.where((given > 0) | (c["chars_seen"] <= 0)).fillna(derived)
    else:
        c["steps"] = derived
    return c


def unigram_bpc(run: RunData) -> float:
    """The unigram baseline on the validation text (NaN when the run has no baselines.parquet)."""
    b = run.baselines
    if b is None or b.empty:
        return math.nan
    v = b[(b["method"] == "unigram") & (b["split"] == "val")]["bpc"]
    return float(v.iloc[0]) if len(v) and math.isfinite(v.iloc[0]) else math.nan


@dataclass(frozen=True)
class Formation:
    """Whether quality had formed at one compared budget.

    `steps` is NaN-free over the compared trials; `formed_share` is the share of them at least FORMED_BITS below
    the unigram baseline (NaN without a baseline); `spearman` is the rank correlation of their scores with the
    steps they had taken (NaN when every one took the same number, `same_steps`).
    """

    need_steps: int  # steps a trial needs to leave the plateau
    n_compared: int
    fewest_steps: float
    n_short: int  # compared trials with fewer than need_steps
    unigram: float
    n_formed: int
    spearman: float
    same_steps: float  # the one step count every compared trial took (NaN when they differ)
    step_chars_vary: bool  # characters per step differ among the compared trials
    max_step_chars: float = math.nan  # the most characters a step of any compared trial takes

    @property
    def same_step_chars(self) -> float:
        """The characters every compared trial's step takes (NaN when they differ)."""
        return math.nan if self.step_chars_vary else self.max_step_chars

    @property
    def qualifies(self) -> bool:
        """Every compared trial had taken at least the steps it needs to leave the plateau."""
        return self.n_compared > 0 and self.n_short == 0

    @property
    def formed_share(self) -> float:
        return self.n_formed / self.n_compared if self.n_compared and math.isfinite(self.unigram) else math.nan


def formation(run: RunData, values: pd.DataFrame, need_steps: int | None = None) -> Formation:
    """Formation over compared trials: `values` has trial_id, `y` (score at the budget) and `steps` (the steps
    each had taken by it)."""
    from scipy.stats import spearmanr

    need = min_steps(run.study) if need_steps is None else need_steps
    steps = values["steps"].to_numpy(float) if "steps" in values else np.full(len(values), np.nan)
    y = values["y"].to_numpy(float)
    ok = np.isfinite(steps)
    uni = unigram_bpc(run)
    n_formed = int((y <= uni - FORMED_BITS).sum()) if math.isfinite(uni) else 0
    same = float(steps[ok][0]) if ok.any() and np.ptp(steps[ok]) == 0 else math.nan
    rho = math.nan
    if ok.sum() >= 3 and not math.isfinite(same):
        rho = float(spearmanr(steps[ok], y[ok]).statistic)
    per = step_chars(run).reindex(values["trial_id"].astype(str)).to_numpy(float)
    vary = bool(np.isfinite(per).any() and np.nanmax(per) > np.nanmin(per))
    return Formation(need, len(values), float(steps[ok].min()) if ok.any() else math.nan,
                     int((~ok | (steps < need)).sum()), uni, n_formed, rho, same, vary,
                     float(np.nanmax(per)) if np.isfinite(per).any() else math.nan)


def step_carried(leader: str, f: Formation | None) -> bool:
    """The leader sets characters per step, those vary among the compared trials, and scores fall with the steps
    taken (Spearman <= CARRIED_RHO): its lead is the steps it sets, not what it does to a trained model."""
    return (f is not None and leader in STEP_SETTERS and f.step_chars_vary and math.isfinite(f.spearman)
            and f.spearman <= CARRIED_RHO)


@dataclass(frozen=True)
class PlateauExit:
    """Steps at which trials first got FORMED_BITS below the unigram baseline, measured from curves: median and
    90th percentile over the `n_left` of `n_trials` search trials that did."""

    n_trials: int
    n_left: int
    median: float
    p90: float


def plateau_exit(run: RunData, trial_ids: list[str]) -> PlateauExit:
    """When the given trials left the unigram plateau, from their curves (NaN without a baseline or steps)."""
    uni = unigram_bpc(run)
    c = run.curves[run.curves["trial_id"].isin(trial_ids)]
    if not math.isfinite(uni) or c.empty:
        return PlateauExit(len(trial_ids), 0, math.nan, math.nan)
    c = with_steps(c, run)
    below = c[(c["val_bpc"] <= uni - FORMED_BITS) & np.isfinite(c["steps"])]
    first = below.groupby("trial_id", sort=False)["steps"].min()
    if first.empty:
        return PlateauExit(len(trial_ids), 0, math.nan, math.nan)
    return PlateauExit(len(trial_ids), len(first), float(first.median()), float(np.percentile(first, 90)))
