"""Optuna's own evaluators (fANOVA, PED-ANOVA) on an in-memory study rebuilt from the tables.

They are point estimates shown for reference next to ours, normalized to sum to 1 as Optuna reports them.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from reports._load import ParamSpec

MAX_TRIALS = 300


def _distribution(spec: ParamSpec):
    if spec.is_categorical:
        return CategoricalDistribution(list(spec.choices))
    if spec.kind == "int":
        step = 1 if spec.log else max(1, int(spec.step))  # the sampler's own grid (Optuna allows no step on a log)
        low = int(math.floor(spec.low))
        return IntDistribution(low, low + (int(math.ceil(spec.high)) - low) // step * step, log=spec.log, step=step)
    return FloatDistribution(spec.low, spec.high, log=spec.log)


def _value(spec: ParamSpec, v):
    if spec.is_categorical:
        return v if v in spec.choices else spec.choices[0]
    v = float(np.clip(v, spec.low, spec.high)) if np.isfinite(v) else (spec.low + spec.high) / 2
    if spec.kind != "int":
        return v
    step = 1 if spec.log else max(1, int(spec.step))
    low = int(math.floor(spec.low))
    return int(min(low + round((v - low) / step) * step, low + (int(math.ceil(spec.high)) - low) // step * step))


def rebuild_study(specs: list[ParamSpec], params: pd.DataFrame, y: np.ndarray) -> optuna.Study:
    """An in-memory Optuna study with one COMPLETE trial per row (values clipped into the search space)."""
    dists = {s.name: _distribution(s) for s in specs}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    for (_, row), value in zip(params.iterrows(), y):
        p = {s.name: _value(s, row[s.column]) for s in specs}
        study.add_trial(optuna.trial.create_trial(params=p, distributions=dists, value=float(value)))
    return study


def optuna_importances(specs: list[ParamSpec], params: pd.DataFrame, y: np.ndarray,
                       random_state: int = 0) -> pd.DataFrame:
    """Columns param, optuna_fanova, optuna_ped_anova (NaN where Optuna cannot evaluate)."""
    out = pd.DataFrame({"param": [s.name for s in specs]})
    if len(y) < 3 or not specs:
        out["optuna_fanova"] = out["optuna_ped_anova"] = math.nan
        return out
    if len(y) > MAX_TRIALS:  # a forest's marginalization grows with its leaves; a random subset, as for the GP
        keep = np.sort(np.random.default_rng(random_state).choice(len(y), MAX_TRIALS, replace=False))
        params, y = params.iloc[keep], np.asarray(y)[keep]
    study = rebuild_study(specs, params, y)
    evaluators = {"optuna_fanova": optuna.importance.FanovaImportanceEvaluator(seed=random_state),
                  "optuna_ped_anova": optuna.importance.PedAnovaImportanceEvaluator()}
    for col, ev in evaluators.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                imp = optuna.importance.get_param_importances(study, evaluator=ev)
            except (RuntimeError, ValueError):  # e.g. zero variance in every tree
                imp = {}
        out[col] = [imp.get(s.name, math.nan) for s in specs]
    return out
