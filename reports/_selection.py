"""Which search trial the study handed over: the report's "best trial", whose seed repeats measure the noise floor.

The study decides it and records it in study.json's `selection` ({"chosen": trial_id or null, "candidates":
[{"trial_id", "skipped": reason or null}, ...]}); the report reads that decision. Run directories written before
`selection` existed get the rule the study applied then, from `selection` below and nowhere else:

- candidates: search trials that trained normally (status completed or stopped, finite best_val_bpc), those that
  got to a later evaluation milestone first (a score at a smaller budget is not comparable with one at a
  larger), by best_val_bpc among equals;
- the chosen one: the first of the best MAX_CANDIDATES candidates whose seed repeats (role repeat, repeat_of its
  id) neither diverged nor failed; none when all of them did. A configuration without repeats is not known to be
  unstable. In runs whose repeats have no repeat_of (before repeats were attributed), the first candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports._load import RunData
from runcontract import MAX_CANDIDATES, TRAINED as CANDIDATE_STATUSES, UNSTABLE as UNSTABLE_STATUSES


@dataclass(frozen=True)
class Selection:
    """The chosen search trial (None when no configuration trained reliably), the candidates in the order they
    were checked with why each was skipped (None for the chosen one and those never reached), and whether the
    decision was read from study.json (`recorded`) or made here by the documented rule."""

    chosen: str | None
    candidates: tuple[tuple[str, str | None], ...]
    recorded: bool


def ranked_candidates(run: RunData) -> pd.DataFrame:
    """Search trials that trained normally, best first (see the module docstring)."""
    from reports._budget import milestone_of  # _budget's noise floor reads the selection

    t = run.trials
    ok = t[(t["role"] == "search") & t["status"].isin(CANDIDATE_STATUSES) & np.isfinite(t["best_val_bpc"])].copy()
    reached = milestone_of(ok["chars_seen"], run.study)
    ok["_reached"] = 0.0 if reached is None else reached.fillna(0.0).to_numpy(float)
    return ok.sort_values(["_reached", "best_val_bpc"], ascending=[False, True], kind="stable").drop(
        columns="_reached")


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
    the documented rule (module docstring)."""
    rec = run.study.get("selection")
    if isinstance(rec, dict) and "chosen" in rec:
        cands = tuple((str(c.get("trial_id")), c.get("skipped")) for c in rec.get("candidates") or []
                      if isinstance(c, dict))
        chosen = rec.get("chosen")
        return Selection(None if chosen is None else str(chosen), cands, True)
    ranked = ranked_candidates(run)["trial_id"].astype(str).tolist()
    if not ranked:
        return Selection(None, (), False)
    if not _attributed(run):
        return Selection(ranked[0], ((ranked[0], None),), False)
    cands: list[tuple[str, str | None]] = []
    for tid in ranked[:MAX_CANDIDATES]:
        st = repeats_of(run, tid)["status"]
        bad = int(st.isin(UNSTABLE_STATUSES).sum())
        if not bad:
            return Selection(tid, (*cands, (tid, None)), False)
        cands.append((tid, f"unstable: diverged or failed in {bad} of {len(st)} seed repeats"))
    return Selection(None, tuple(cands), False)
