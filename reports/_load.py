"""Read a run directory through the results contract (study.json + three Parquet tables).

The reader is the only place that touches files; everything downstream works on `RunData`.

Schema 2 gives each name one meaning: `val_bpc` is one evaluation (a curve point), `best_val_bpc` a trial's
best evaluation so far (trials.parquet: over the whole trial; curves.parquet: up to and including that point).
Schema 1 (study.json without schema_version, or 1) called the trial's best `val_bpc` in trials.parquet and
kept the evaluation in curves.parquet as `val_bpc` and `eval_val_bpc`; it is mapped to schema 2 on load.
"""

from __future__ import annotations

import json
import math
import pathlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from runcontract import (BASELINES_FILE, BASELINES_REQUIRED, CURVES_FILE, CURVES_REQUIRED, FINAL, PARAM_PREFIX, RACE,
                         ROLES, SAMPLES_FILE, SAMPLES_REQUIRED, SCHEMA_VERSIONS, SEARCH, STUDY_FILE, TRIALS_FILE,
                         TRIALS_REQUIRED)


class RunDirError(ValueError):
    """A run directory that does not satisfy the results contract (a user error, said in one line)."""


@dataclass(frozen=True)
class ParamSpec:
    """One searched hyperparameter: `kind` is "float", "int" or "categorical".

    An int range is the sampler's discrete distribution (Optuna's IntDistribution): the integers low, low + step,
    ..., high, uniform, or log-uniform over the integers where `log` (value v has probability proportional to
    log(v + 1/2) - log(v - 1/2)).
    """

    name: str
    kind: str
    low: float = math.nan
    high: float = math.nan
    log: bool = False
    choices: tuple[str, ...] = ()
    step: int = 1

    @property
    def is_categorical(self) -> bool:
        return self.kind == "categorical"

    @property
    def column(self) -> str:
        return PARAM_PREFIX + self.name


@dataclass(frozen=True)
class RunData:
    """The contract's tables, validated and in schema 2's names whatever the run's schema_version.

    `trials.best_val_bpc` is a trial's best evaluation (NaN if it never evaluated or diverged); in `curves`,
    `val_bpc` is one evaluation and `best_val_bpc` the trial's best up to and including it. There is no
    `val_bpc` in `trials` and no `eval_val_bpc` anywhere. `study` is study.json as written (its
    "schema_version" says what the directory held, not these names); `study["metric"]` names what is
    measured (val_bpc), and a trial is scored by its best_val_bpc.
    `trials` always has a `role` column ("search"/"repeat").

    The final model's row (role "final") is kept apart in `final`, so that nothing that fits or compares the
    search trials can mistake it for one; its curve and samples stay in `curves` and `samples`. So are the final
    stage's race trials (role "race", `race`: the chosen configuration and the hand-picked baseline).
    `baselines` holds baselines.parquet (method, split, bpc), empty for runs written before it existed.
    """

    run_dir: pathlib.Path
    study: dict[str, Any]
    params: tuple[ParamSpec, ...]
    trials: pd.DataFrame
    curves: pd.DataFrame
    samples: pd.DataFrame
    final: pd.DataFrame = field(default_factory=pd.DataFrame)
    baselines: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(BASELINES_REQUIRED)))
    race: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def metric(self) -> str:
        return str(self.study.get("metric", "val_bpc"))

    def param(self, name: str) -> ParamSpec:
        return next(p for p in self.params if p.name == name)


def _read_table(path: pathlib.Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise RunDirError(f"{path} is missing")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a corrupt file
        raise RunDirError(f"cannot read {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise RunDirError(f"{path} lacks required column(s): {', '.join(missing)}")
    df = df.copy()
    df["trial_id"] = df["trial_id"].astype(str)
    return df


def _param_spec(name: str, raw: Any, column: pd.Series) -> ParamSpec:
    if not isinstance(raw, dict) or raw.get("type") not in ("float", "int", "categorical"):
        raise RunDirError(f"study.json: search_space[{name!r}] needs a type of float, int or categorical")
    if raw["type"] == "categorical":
        choices = [str(c) for c in raw.get("choices") or []]
        # Values outside the declared choices still form levels of their own.
        seen = [str(v) for v in pd.unique(column.dropna().astype(str))]
        choices += [v for v in seen if v not in choices]
        return ParamSpec(name, "categorical", choices=tuple(choices))
    values = pd.to_numeric(column, errors="coerce")
    log = bool(raw.get("log", False))
    low = float(raw["low"]) if raw.get("low") is not None else float(values.min())
    high = float(raw["high"]) if raw.get("high") is not None else float(values.max())
    if log and (low <= 0 or high <= 0):
        raise RunDirError(f"study.json: search_space[{name!r}] is log-scaled but not positive")
    step = raw.get("step") or 1
    if raw["type"] == "int":
        if not (isinstance(step, (int, float)) and float(step).is_integer() and step >= 1):
            raise RunDirError(f"study.json: search_space[{name!r}] has a step that is not a positive integer")
        if not (math.isfinite(low) and math.isfinite(high) and high >= low):
            raise RunDirError(f"study.json: search_space[{name!r}] needs low <= high")
        low, high = float(math.ceil(low)), float(math.floor(high))
    return ParamSpec(name, raw["type"], low=low, high=high, log=log, step=int(step))


def load_run(run_dir: str | pathlib.Path) -> RunData:
    """Read and validate a run directory.

    Args:
        run_dir: directory holding study.json, trials.parquet, curves.parquet and samples.parquet.

    Returns:
        `RunData` with numeric param columns coerced to float and categorical ones to str.

    Raises:
        RunDirError: the directory is missing, is not a run directory, or a table is unreadable.
    """
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a directory")
    study_path = run_dir / STUDY_FILE
    if not study_path.is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no {STUDY_FILE})")
    try:
        study = json.loads(study_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"cannot read {study_path}: {exc}") from exc
    if not isinstance(study, dict) or not isinstance(study.get("search_space"), dict):
        raise RunDirError(f"{study_path} has no search_space object")
    version = study.get("schema_version", 1)
    if isinstance(version, bool) or version not in SCHEMA_VERSIONS:
        raise RunDirError(f"{study_path}: unsupported schema_version {study.get('schema_version')!r}")

    trials = _read_table(run_dir / TRIALS_FILE, TRIALS_REQUIRED[version])
    curves = _read_table(run_dir / CURVES_FILE, CURVES_REQUIRED[version])
    samples = _read_table(run_dir / SAMPLES_FILE, SAMPLES_REQUIRED)

    params = []
    for name, raw in study["search_space"].items():
        column = PARAM_PREFIX + str(name)
        if column not in trials.columns:
            raise RunDirError(f"{TRIALS_FILE} lacks column {column!r} for a searched hyperparameter")
        spec = _param_spec(str(name), raw, trials[column])
        if spec.is_categorical:
            trials[column] = trials[column].astype(object).where(trials[column].notna(), None)
            trials[column] = [None if v is None else str(v) for v in trials[column]]
        else:
            trials[column] = pd.to_numeric(trials[column], errors="coerce").astype(float)
        params.append(spec)

    trials["status"] = trials["status"].astype(str)
    if "role" not in trials.columns:
        trials["role"] = SEARCH
    trials["role"] = trials["role"].fillna(SEARCH).astype(str)
    if version == 1:
        trials, curves = _from_schema_1(trials, curves)
    for df, cols in ((trials, ("best_val_bpc", "wall_s", "chars_seen")),
                     (curves, ("chars_seen", "wall_s", "train_bpc", "val_bpc", "best_val_bpc")),
                     (samples, ("chars_seen", "temperature"))):
        for c in cols:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    samples["text"] = samples["text"].fillna("").astype(str)
    curves = curves.replace([np.inf, -np.inf], np.nan)
    trials, curves, samples = _in_creation_order(trials, curves, samples)
    final = trials[trials["role"] == FINAL].reset_index(drop=True)
    race = trials[trials["role"] == RACE].reset_index(drop=True)
    trials = trials[~trials["role"].isin([FINAL, RACE])]
    return RunData(run_dir, study, tuple(params), trials.reset_index(drop=True),
                   curves.reset_index(drop=True), samples.reset_index(drop=True), final, _baselines(run_dir), race)


def _in_creation_order(trials: pd.DataFrame, curves: pd.DataFrame,
                       samples: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The tables in an order that does not depend on Tune's (random) trial ids nor on the order the writer met
    the trials: trials by role (search, repeat, local, race, final) then `trial_index` (the order of creation; without
    it, as written); curves and samples by that trial order, then chars_seen (rows of trials not in the table
    last). Resamples, fits and ties in a table then follow the trials, not their ids."""
    role = trials["role"].map({r: k for k, r in enumerate(ROLES)}).fillna(len(ROLES))
    index = pd.to_numeric(trials["trial_index"], errors="coerce") if "trial_index" in trials else 0
    trials = (trials.assign(_role=role, _index=index).sort_values(["_role", "_index"], kind="stable")
              .drop(columns=["_role", "_index"]).reset_index(drop=True))
    place = {tid: k for k, tid in enumerate(trials["trial_id"])}

    def by_trial(df: pd.DataFrame, then: list[str]) -> pd.DataFrame:
        pos = df["trial_id"].map(place).fillna(len(place))
        return df.assign(_pos=pos).sort_values(["_pos", *then], kind="stable").drop(columns="_pos")

    return trials, by_trial(curves, ["chars_seen"]), by_trial(samples, ["chars_seen"])


def _from_schema_1(trials: pd.DataFrame, curves: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Schema 1's tables under schema 2's names (see the module docstring)."""
    trials = trials.rename(columns={"val_bpc": "best_val_bpc"})
    curves = curves.reset_index(drop=True)
    if "eval_val_bpc" in curves.columns:
        curves["val_bpc"] = curves["eval_val_bpc"]
        curves = curves.drop(columns="eval_val_bpc")
    curves["val_bpc"] = pd.to_numeric(curves["val_bpc"], errors="coerce").astype(float)
    curves["best_val_bpc"] = running_best(curves)
    return trials, curves


def running_best(curves: pd.DataFrame) -> pd.Series:
    """Each trial's best val_bpc up to and including each evaluation, in chars_seen order (aligned with
    `curves`). A NaN or infinite evaluation is skipped: the best stays the earlier one, NaN before any."""
    v = curves["val_bpc"].where(np.isfinite(curves["val_bpc"]), np.inf)
    order = pd.to_numeric(curves["chars_seen"], errors="coerce").sort_values(kind="stable").index
    best = v.loc[order].groupby(curves.loc[order, "trial_id"]).cummin()
    return best.reindex(curves.index).replace(np.inf, np.nan)


def _baselines(run_dir: pathlib.Path) -> pd.DataFrame:
    """baselines.parquet when the run has one (optional in the contract), else an empty frame."""
    path = run_dir / BASELINES_FILE
    empty = pd.DataFrame(columns=list(BASELINES_REQUIRED))
    if not path.is_file():
        return empty
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a corrupt file
        raise RunDirError(f"cannot read {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if not set(BASELINES_REQUIRED) <= set(df.columns):
        raise RunDirError(f"{path} lacks required column(s) {', '.join(BASELINES_REQUIRED)}")
    df = df.astype({"method": str, "split": str})
    df["bpc"] = pd.to_numeric(df["bpc"], errors="coerce").astype(float)
    return df


def load_runs(run_dirs: list[str | pathlib.Path]) -> RunData:
    """Read one run directory, or pool the search trials of several studies of one search space.

    Pooling is for a question one 50-trial study leaves open: a second study with another seed adds
    trials, and the importance is then fitted on all of them. The runs must share the search space and
    the metric (and, to compare trials at one budget, the evaluation schedule). Search trials come from
    every run; repeat trials (the seed noise floor, repeats of one configuration) from the first run only.
    A trial id that occurs in more than one run is prefixed with its run's position ("2/ab12cd34").

    Raises:
        RunDirError: a directory is unreadable, or the runs differ in search space, metric or evaluations.
    """
    runs = [load_run(d) for d in run_dirs]
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    for run in runs[1:]:
        for key in ("search_space", "metric", "eval"):
            if run.study.get(key) != first.study.get(key):
                raise RunDirError(f"{run.run_dir} and {first.run_dir} differ in {key}; pool only runs of one spec")
    seen: set[str] = set()
    tables: dict[str, list[pd.DataFrame]] = {"trials": [], "curves": [], "samples": []}
    for k, run in enumerate(runs, start=1):
        trials = run.trials if k == 1 else run.trials[run.trials["role"] != "repeat"]
        ids = set(trials["trial_id"])
        rename = {i: f"{k}/{i}" for i in ids & seen}
        seen |= {rename.get(i, i) for i in ids}
        for name, df in (("trials", trials), ("curves", run.curves), ("samples", run.samples)):
            df = df[df["trial_id"].isin(ids)].copy()
            df["trial_id"] = df["trial_id"].map(lambda i: rename.get(i, i))
            tables[name].append(df)
    study = {**first.study, "pooled_from": [str(r.run_dir) for r in runs]}
    pooled = {name: pd.concat(dfs, ignore_index=True) for name, dfs in tables.items()}
    return RunData(first.run_dir, study, first.params, pooled["trials"], pooled["curves"], pooled["samples"],
                   first.final, first.baselines, first.race)
