"""Which search trial the study handed over: the report's "best trial", whose seed repeats measure the noise floor.

The study decides it and records it in study.json's `selection` ({"chosen": trial_id or null, "candidates":
[{"trial_id", "skipped": reason or null}, ...]}); the report reads that decision. A run directory written before
`selection` existed gets the same rule applied here (runcontract.selection, its one owner), with one exception for
runs older still, whose repeats have no repeat_of (before repeats were attributed): there the first candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports._load import RunData
from runcontract import selection as rule


@dataclass(frozen=True)
class Selection:
    """The chosen search trial (None when no configuration trained reliably), the candidates in the order they
    were checked with why each was skipped (None for the chosen one and those never reached), and whether the
    decision was read from study.json (`recorded`) or made here by the documented rule."""

    chosen: str | None
    candidates: tuple[tuple[str, str | None], ...]
    recorded: bool


def ranked_candidates(run: RunData) -> pd.DataFrame:
    """Search trials that trained normally, best first (runcontract.selection.ranked, by the milestones study.json
    names)."""
    return rule.ranked(run.trials, _reached(run))


def _reached(run: RunData) -> np.ndarray:
    from reports._budget import milestone_of  # _budget's noise floor reads the selection

    reached = milestone_of(run.trials["chars_seen"], run.study)
    return np.zeros(len(run.trials)) if reached is None else reached.fillna(0.0).to_numpy(float)


def _attributed(run: RunData) -> bool:
    """Whether the run says which configuration each repeat trains (older runs have no repeat_of for repeats)."""
    rep = run.trials[run.trials["role"] == "repeat"]
    return "repeat_of" in rep.columns and bool(rep["repeat_of"].notna().any())


def repeats_of(run: RunData, trial_id: str) -> pd.DataFrame:
    """The seed repeats of one search trial's configuration (every repeat in runs that do not attribute them)."""
    t = run.trials
    rep = t[t["role"] == "repeat"]
    if not _attributed(run):
        return rep
    return rep[rep["repeat_of"].astype(str) == str(trial_id)]


def selection(run: RunData) -> Selection:
    """The search trial whose configuration the study handed over: study.json's `selection` when recorded, else
    the same rule (module docstring)."""
    rec = run.study.get("selection")
    if isinstance(rec, dict) and "chosen" in rec:
        cands = tuple((str(c.get("trial_id")), c.get("skipped")) for c in rec.get("candidates") or []
                      if isinstance(c, dict))
        chosen = rec.get("chosen")
        return Selection(None if chosen is None else str(chosen), cands, True)
    if not _attributed(run):
        first = ranked_candidates(run)["trial_id"].astype(str).head(1).tolist()
        return Selection(first[0] if first else None, tuple((t, None) for t in first), False)
    chosen, checked = rule.choose(run.trials, _reached(run))
    return Selection(chosen, tuple(checked), False)
