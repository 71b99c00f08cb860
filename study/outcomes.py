"""How a trial ended, in one table: its `status` in the results tables, what Tune saw, and what Optuna is told.

| status    | Tune's end                                                  | Optuna state | value told        |
|-----------|-------------------------------------------------------------|--------------|-------------------|
| completed | last result `finished` (trained its whole budget)            | COMPLETE     | the metric        |
| stopped   | ended by the scheduler (or early stopping) before its budget | PRUNED       | none              |
| diverged  | last result `diverged` (loss NaN/inf or exploding)           | FAIL         | none              |
| failed    | errored, or ended without a result, or with no finite metric | FAIL         | none              |

`ended` reads the table one way (a Tune trial's end -> status), `OPTUNA_STATE` the other (status -> Optuna state);
the trial table, the searcher and the driver's clean-up all go through them.
"""
from __future__ import annotations

import math

from optuna.trial import TrialState

OPTUNA_STATE = {"completed": TrialState.COMPLETE, "stopped": TrialState.PRUNED,
                "diverged": TrialState.FAIL, "failed": TrialState.FAIL}


def ended(last_result: dict | None, error: bool = False, metric: str | None = None) -> tuple[str, str | None]:
    """(status, why) of a Tune trial that ended with `last_result` (after an error when `error`).

    With `metric`, a trial whose last value of it is missing or not finite counts as failed (Optuna is told
    nothing it cannot rank); the trial table, which keeps the trial's curve either way, passes none.
    """
    if error:
        return "failed", "the trial raised an error"
    if not last_result or "chars_seen" not in last_result:  # Tune's own fields only: the trainer never reported
        return "failed", "trial ended without reporting a result"
    if last_result.get("diverged"):
        val = last_result.get("val_bpc")
        if val is not None and math.isfinite(float(val)):  # a finite last score: it ended, having learned nothing
            return "diverged", (f"never scored better than a uniform guess (best val_bpc "
                                f"{float(last_result.get('best_val_bpc', val)):.2f})")
        return "diverged", f"loss diverged (NaN/inf or exploding) at {int(last_result['chars_seen']):,} chars"
    if metric is not None:
        value = last_result.get(metric)
        if value is None or not math.isfinite(float(value)):
            return "failed", f"no finite {metric}"
    return ("completed" if last_result.get("finished") else "stopped"), None


def told(status: str) -> TrialState:
    """The Optuna state of a trial with this status (FAIL for any status not in the table, e.g. "orphaned")."""
    return OPTUNA_STATE.get(status, TrialState.FAIL)
