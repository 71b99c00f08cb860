"""Sensitivity report for a hyperparameter study: which hyperparameter matters most, with evidence.

Compute first, draw second: `load_run` reads the results contract, `analyze` returns an `Analysis`
(DataFrames and small dataclasses), and `write_report` renders it as HTML, Markdown, PNG and CSV.
"""

from __future__ import annotations

from reports._analysis import Analysis, analyze
from reports._budget import Budget, NoiseFloor, choose_budget, noise_floor, survivor_budget
from reports._importance import ImportanceResult, compute_importance
from reports._load import ParamSpec, RunData, RunDirError, load_run


def __getattr__(name: str):
    # Lazy, so that `python -m reports.build` does not find reports.build already imported.
    if name in ("build_report", "main", "write_report"):
        from reports import build

        return getattr(build, name)
    raise AttributeError(f"module 'reports' has no attribute {name!r}")


__all__ = [
    "Analysis", "Budget", "ImportanceResult", "NoiseFloor", "ParamSpec", "RunData", "RunDirError", "analyze",
    "build_report", "choose_budget", "compute_importance", "load_run", "main", "noise_floor", "survivor_budget",
    "write_report",
]
