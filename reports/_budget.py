"""Equal-budget comparison and the seed noise floor.

Early-stopped trials have seen fewer characters, so their best val_bpc is not comparable with that of
full trials. We compare every trial by its best val_bpc up to one evaluation milestone: the lowest of its
curve's evaluations (curves' `val_bpc`) up to there. The primary budget is
the highest milestone that (nearly) all valid search trials reached, normally ASHA's first rung: later
milestones hold only the trials the scheduler promoted, which were selected for being good (and, under TPE,
sit in one corner of the search space), so the spread among them is range-restricted and says little about
the search space. The highest milestone with enough survivors is kept as a secondary check.

A budget must also be one at which quality had formed: trials learn per optimizer step, not per character, and
a trial that has taken fewer steps than it needs to leave the unigram plateau (study.json's
`scheduler.min_steps`, else 100; see `reports._steps`) is compared on how far it got, not on what its
hyperparameters do. So a compared budget *qualifies* only if every compared trial had taken at least that many
steps by it. `choose_budget` keeps the milestone above when it qualifies; else it moves to the first later
milestone that qualifies and still holds a rankable number of trials (`rank_need`: max(10, 2 per
hyperparameter), the fewest the answer ranks at all; fewer would trade an unformed comparison for one that
cannot rank); else the budget is *not formed*, and the report says so instead of naming a winner.

A milestone is nominal: evaluations sit at the first step past each listed character count (study.json's
`eval.eval_at_chars`, an increasing list; ASHA's rungs are among them) or, in run directories written before
that list existed, past each multiple of `eval.eval_every_chars`. Their chars_seen therefore differ a little
from trial to trial (125,200 vs 128,000 for a 125k milestone) and are mapped back to the milestone they belong
to: the largest listed count (or multiple) not above them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports._load import RunData
from reports._steps import Formation, formation, min_steps, with_steps
from runcontract import REPEAT, SEARCH, UNSTABLE

EXCLUDED_STATUSES = UNSTABLE  # a trial of these statuses has no value the fit may use
NEARLY_ALL = 0.9  # share of the valid search trials the primary budget must hold
# Trials per hyperparameter a ranking needs: the GP fits one amplitude and one length scale per hyperparameter,
# and below two trials each the calibration's small shapes already lose coverage. With fewer, the answer says so.
TRIALS_PER_PARAM, MIN_RANK_TRIALS = 2, 10


def rank_need(k: int) -> int:
    """Comparable trials a ranking of k hyperparameters needs (see TRIALS_PER_PARAM)."""
    return max(MIN_RANK_TRIALS, TRIALS_PER_PARAM * k)


@dataclass(frozen=True)
class TrialCounts:
    """How many trials of each kind the run holds, and how many the fit may use."""

    total: int
    search: int
    repeats: int
    diverged: int
    failed: int
    no_value: int  # not diverged/failed but best_val_bpc is NaN
    valid: int  # search trials usable for the importance fit


@dataclass(frozen=True)
class Budget:
    """The budget at which trials are compared.

    `values` has one row per compared search trial: trial_id, `y` (best val_bpc up to `chars`) and `steps` (the
    optimizer steps it had taken by then). `milestones` lists every evaluation milestone with the number of valid
    search trials that reached it and the fewest steps any of them had taken there. `formation` says whether
    quality had formed (None only for budgets built by hand); `moved_from` is the milestone the trial count alone
    would have chosen, when the formed-budget rule moved the comparison later.
    """

    chars: float
    n_trials: int
    rung: int | None
    is_full: bool
    values: pd.DataFrame
    milestones: pd.DataFrame
    min_trials: int = 0  # trials the budget had to have
    survivors: bool = False  # a later milestone holding only the trials the scheduler promoted
    formation: Formation | None = None
    moved_from: float = math.nan

    @property
    def formed(self) -> bool:
        """Every compared trial had taken the steps it needs to leave the plateau (True when not measured)."""
        return self.formation is None or self.formation.qualifies


@dataclass(frozen=True)
class NoiseFloor:
    """Seed noise: the spread of best val_bpc up to the compared budget over repeats of one configuration."""

    n_repeats: int
    sd: float  # NaN when unknown (fewer than two repeats reached the budget)
    values: tuple[float, ...]

    @property
    def known(self) -> bool:
        return self.n_repeats >= 2 and math.isfinite(self.sd)


def valid_mask(trials: pd.DataFrame) -> pd.Series:
    """Trials whose scores the fit may use: not diverged/failed and with a finite best_val_bpc. A `running` trial
    (a study stopped midway) counts at the budgets it reached; which trial is *handed over* is another rule, the
    selection's (runcontract.TRAINED, recorded in study.json and read by reports._selection)."""
    return ~trials["status"].isin(EXCLUDED_STATUSES) & np.isfinite(trials["best_val_bpc"])


def count_trials(trials: pd.DataFrame) -> TrialCounts:
    """Count trials by role and by why they are excluded from the fit."""
    search = trials["role"] == SEARCH
    bad = trials["status"].isin(EXCLUDED_STATUSES)
    return TrialCounts(
        total=len(trials),
        search=int(search.sum()),
        repeats=int((trials["role"] == REPEAT).sum()),
        diverged=int((search & (trials["status"] == "diverged")).sum()),
        failed=int((search & (trials["status"] == "failed")).sum()),
        no_value=int((search & ~bad & ~np.isfinite(trials["best_val_bpc"])).sum()),
        valid=int((search & valid_mask(trials)).sum()),
    )


def rungs(study: dict) -> list[float]:
    """ASHA's rungs in characters: study.json's `scheduler.rungs` as the study recorded them; for run directories
    written before it did, recomputed from grace_period x reduction_factor^k below max_t (the rule ASHA applied)."""
    sched = study.get("scheduler") or {}
    recorded = sched.get("rungs")
    if isinstance(recorded, (list, tuple)):
        try:
            return [float(r) for r in recorded]
        except (TypeError, ValueError):
            pass
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


def rung_counts(study: dict) -> pd.DataFrame:
    """Per rung, the trials the study planned to send (synchronous successive halving) and those that reached it,
    as study.json's `scheduler.rung_counts` records them; empty for runs that do not."""
    rows = (study.get("scheduler") or {}).get("rung_counts")
    cols = ["chars", "steps", "planned", "reached"]
    if not isinstance(rows, list):
        return pd.DataFrame(columns=cols)
    rows = [r for r in rows if isinstance(r, dict)]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)


def _every(study: dict) -> float | None:
    ev = study.get("eval") or {}
    try:
        every = ev.get("eval_every_chars") or float(study["budget_chars"]) / float(ev["evals_per_trial"])
        every = float(every)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return every if math.isfinite(every) and every > 0 else None


def _eval_at(study: dict) -> np.ndarray | None:
    at = (study.get("eval") or {}).get("eval_at_chars")
    if not isinstance(at, (list, tuple)) or not at:
        return None
    try:
        m = np.array([float(x) for x in at])
    except (TypeError, ValueError):
        return None
    return np.unique(m[np.isfinite(m) & (m > 0)]) if np.isfinite(m).any() else None


def milestone_of(chars_seen: pd.Series, study: dict) -> pd.Series | None:
    """The nominal milestone of each chars_seen (None when study.json does not say when trials evaluate).

    With `eval.eval_at_chars`: the largest listed count <= chars_seen (NaN below the first). Else with
    `eval_every_chars` (or budget_chars / evals_per_trial): the largest multiple of it <= chars_seen.
    """
    at = _eval_at(study)
    if at is not None and len(at):
        c = np.asarray(chars_seen, dtype=float)
        i = np.searchsorted(at, c * (1 + 1e-9), side="right") - 1
        out = np.where(i >= 0, at[np.clip(i, 0, None)], np.nan)
        return pd.Series(out, index=getattr(chars_seen, "index", None))
    every = _every(study)
    return None if every is None else np.floor(chars_seen / every + 1e-9) * every


def with_milestones(curves: pd.DataFrame, study: dict) -> pd.DataFrame:
    """`curves` with a `milestone` column: the nominal budget (characters) each evaluation belongs to.

    With `eval_at_chars` in study.json, an evaluation gets the largest listed count not above its chars_seen;
    with `eval_every_chars` (or budget_chars / evals_per_trial), an evaluation at the first step past k * every
    gets milestone k * every; without, the k-th evaluation of every trial is milestone k, named
    by the median chars_seen of those evaluations.
    """
    c = curves.copy()
    nominal = milestone_of(c["chars_seen"], study)
    if nominal is not None:
        c["milestone"] = nominal
    else:
        k = c.sort_values("chars_seen").groupby("trial_id", sort=False).cumcount()
        c["milestone"] = k.groupby(k).transform(lambda g: c.loc[g.index, "chars_seen"].median())
    return c


def best_up_to(curves: pd.DataFrame, trial_ids: list[str], chars: float) -> pd.DataFrame:
    """Best (lowest) val_bpc each trial reached up to `chars`, for trials whose curve reached `chars`: the
    minimum of the evaluations (`val_bpc`), which needs no trust in the order `best_val_bpc` was kept in.

    Budgets are read from the `milestone` column where `curves` has one (see `with_milestones`), else from
    chars_seen.
    """
    at = "milestone" if "milestone" in curves.columns else "chars_seen"
    c = curves[curves["trial_id"].isin(trial_ids)]
    reached = c.groupby("trial_id", sort=False)[at].max()
    reached = reached[reached >= chars * (1 - 1e-9)].index
    c = c[c["trial_id"].isin(reached) & (c[at] <= chars * (1 + 1e-9))]
    y = c.groupby("trial_id", sort=False)["val_bpc"].min()
    y = y[np.isfinite(y)]
    return pd.DataFrame({"trial_id": y.index.astype(str), "y": y.to_numpy(float)})


def _search_ids(run: RunData) -> list[str]:
    trials = run.trials
    return trials.loc[(trials["role"] == SEARCH) & valid_mask(trials), "trial_id"].tolist()


def _curves(run: RunData) -> pd.DataFrame:
    """The run's curves with `milestone` and `steps` columns."""
    return with_steps(with_milestones(run.curves, run.study), run)


def steps_at(curves: pd.DataFrame, trial_ids: list[str], chars: float) -> pd.Series:
    """Optimizer steps each trial had taken by budget `chars`: at its last evaluation up to it (`curves` as from
    `with_milestones` and `reports._steps.with_steps`)."""
    c = curves[curves["trial_id"].isin(trial_ids) & (curves["milestone"] <= chars * (1 + 1e-9))]
    return c.sort_values("chars_seen").groupby("trial_id", sort=False)["steps"].last()


def _milestone_table(run: RunData, curves: pd.DataFrame) -> pd.DataFrame:
    c = curves[curves["trial_id"].isin(_search_ids(run)) & np.isfinite(curves["val_bpc"])
               & np.isfinite(curves["milestone"])]
    reached = c.groupby("trial_id", sort=False)["milestone"].max()
    milestones = np.sort(c["milestone"].unique())
    counts = np.array([(reached >= m).sum() for m in milestones], dtype=int)
    need, fewest, short = min_steps(run.study), [], []
    for m in milestones:
        s = steps_at(c, reached[reached >= m].index.tolist(), m)
        fewest.append(float(s.min()) if len(s) and np.isfinite(s).all() else math.nan)
        short.append(int((~np.isfinite(s) | (s < need)).sum()))
    return pd.DataFrame({"chars_seen": milestones, "n_trials": counts, "fewest_steps": fewest, "n_short": short})


def _budget_at(run: RunData, curves: pd.DataFrame, table: pd.DataFrame, chars: float, need: int,
               survivors: bool, moved_from: float = math.nan) -> Budget:
    rung = next((i + 1 for i, r in enumerate(rungs(run.study)) if math.isclose(r, chars, rel_tol=1e-6)), None)
    full = run.study.get("budget_chars")
    is_full = full is not None and chars >= float(full) * (1 - 1e-9)
    values = best_up_to(curves, _search_ids(run), chars)
    values["steps"] = values["trial_id"].map(steps_at(curves, values["trial_id"].tolist(), chars)).astype(float)
    return Budget(chars, len(values), rung, bool(is_full), values, table, need, survivors,
                  formation(run, values), moved_from)


def _qualifies(table: pd.DataFrame, need_steps: int) -> pd.Series:
    return np.isfinite(table["fewest_steps"]) & (table["fewest_steps"] >= need_steps)


def choose_budget(run: RunData, min_trials: int | None = None) -> Budget:
    """Pick the primary budget: the highest evaluation milestone that at least `min_trials` valid search
    trials reached, if quality had formed there; else the first later milestone where it had, with enough
    trials to rank; else the first one, not formed (see the module docstring).

    Args:
        run: the loaded run.
        min_trials: trials required at the budget; default 90% of the valid search trials (so, under ASHA,
            normally the first rung: the only milestone where the compared trials are not selected by the
            scheduler), capped at the largest count any milestone has.

    Returns:
        The chosen `Budget` (n_trials may be 0 when no curves exist); `budget.formed` says whether it qualifies.
    """
    curves = _curves(run)
    table = _milestone_table(run, curves)
    if table.empty:
        return Budget(math.nan, 0, None, False, pd.DataFrame({"trial_id": pd.Series([], dtype=str),
                                                              "y": pd.Series([], dtype=float),
                                                              "steps": pd.Series([], dtype=float)}), table)
    n_valid = len(_search_ids(run))
    need = min_trials if min_trials is not None else math.ceil(NEARLY_ALL * n_valid)
    need = min(need, int(table["n_trials"].max()))
    chars = float(table.loc[table["n_trials"] >= need, "chars_seen"].max())
    ok = _qualifies(table, min_steps(run.study))
    here = np.isclose(table["chars_seen"], chars)
    if ok[here].any():
        return _budget_at(run, curves, table, chars, need, survivors=False)
    later = table[ok & (table["chars_seen"] > chars * (1 + 1e-9))
                  & (table["n_trials"] >= min(need, rank_need(len(run.params))))]
    if later.empty:
        return _budget_at(run, curves, table, chars, need, survivors=False)
    to = later.iloc[0]  # the first that qualifies: the most trials, the least selected by the scheduler
    fewer = int(to["n_trials"]) < int(table.loc[here, "n_trials"].iloc[0])
    return _budget_at(run, curves, table, float(to["chars_seen"]), int(to["n_trials"]), survivors=fewer,
                      moved_from=chars)


def survivor_budget(run: RunData, primary: Budget, min_trials: int | None = None) -> Budget | None:
    """The secondary check: the highest milestone past `primary` that at least `min_trials` valid search
    trials reached (default max(10, a third of them)), or None. Its trials are the scheduler's survivors."""
    if not math.isfinite(primary.chars):
        return None
    curves = _curves(run)
    table = _milestone_table(run, curves)
    need = min_trials if min_trials is not None else max(10, math.ceil(len(_search_ids(run)) / 3))
    later = table[(table["chars_seen"] > primary.chars * (1 + 1e-9)) & (table["n_trials"] >= need)]
    if later.empty:
        return None
    return _budget_at(run, curves, table, float(later["chars_seen"].max()), need, survivors=True)


def noise_floor(run: RunData, chars: float) -> NoiseFloor:
    """Seed noise from the repeats of the chosen configuration (`reports._selection`: the search trial the study
    handed over), measured at budget `chars` like the search trials. Repeats of a candidate the study skipped
    (unstable: some of its repeats diverged) measure another configuration and are left out."""
    from reports._selection import repeats_of, selection  # it ranks trials by the milestones above

    chosen = selection(run).chosen
    if chosen is None or not math.isfinite(chars):
        return NoiseFloor(0, math.nan, ())
    reps = repeats_of(run, chosen)
    ids = reps.loc[valid_mask(reps), "trial_id"].tolist()
    if not ids:
        return NoiseFloor(0, math.nan, ())
    vals = best_up_to(with_milestones(run.curves, run.study), ids, chars)["y"].to_numpy(float)
    sd = float(np.std(vals, ddof=1)) if len(vals) >= 2 else math.nan
    return NoiseFloor(len(vals), sd, tuple(float(v) for v in vals))
