"""Job specs: TOML files (bundled: study/specs/) that say what a study searches, how long trials train, and how.

A spec is data: it is parsed with tomllib and validated field by field; nothing in it is evaluated.
Unknown keys are errors, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from charrnn.config import HYPERPARAMETERS, TrainConfig
from runcontract import batch_size_for


class SpecError(ValueError):
    """A job spec is malformed; the message is one line for the CLI."""


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: a float or int range (optionally log-scaled) or a list of choices."""

    name: str
    type: str  # "float" | "int" | "categorical"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: int | None = None
    choices: tuple = ()

    def describe(self) -> dict:
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out = {"type": self.type, "low": self.low, "high": self.high, "log": self.log}
        return {**out, "step": self.step} if self.step else out

    def extremes(self) -> list:
        """The values at the edges of the range (or every choice), for checking feasibility."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


@dataclass(frozen=True)
class StudySpec:
    name: str
    corpus: str = "sherlock"
    trials: int = 50
    budget_chars: int = 1_000_000
    evals_per_rung: int = 2
    val_chars: int = 40_000
    repeats: int = 2
    repeat_chars: int = 0  # where the seed repeats stop (0 = budget_chars)
    seed: int = 0
    minutes: float = 0.0  # > 0: plan the budgets so that the study ends within this many minutes (study.timeplan)
    search: dict[str, Param] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    sampler: dict[str, Any] = field(default_factory=lambda: dict(_SAMPLER_DEFAULTS))
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(_SCHEDULER_DEFAULTS))
    sampling: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=lambda: dict(_FINAL_DEFAULTS))
    local: dict[str, Any] = field(default_factory=lambda: dict(_LOCAL_DEFAULTS))
    path: str = ""

    @property
    def min_steps(self) -> int:
        """Optimizer steps a trial needs to leave the unigram plateau: no trial is stopped or compared before."""
        return int(self.scheduler["min_steps"])

    @property
    def grace_chars(self) -> int:
        return min(int(self.scheduler["grace_chars"]), self.budget_chars)

    def rungs(self) -> list[int]:
        """ASHA's milestones: grace x rf^k below the budget (the budget itself ends every full trial)."""
        rf, out, t = self.scheduler["reduction_factor"], [], self.grace_chars
        while t < self.budget_chars:
            out.append(t)
            t *= rf
        return out

    def eval_at(self) -> list[int]:
        """Where every trial is evaluated: each rung, `evals_per_rung - 1` points spaced geometrically between
        successive rungs (for the curves), and the budget. Every trial is scored at the same points."""
        rf, k = self.scheduler["reduction_factor"], self.evals_per_rung
        points = []
        for rung in self.rungs():
            points += [int(round(rung * rf ** (j / k))) for j in range(k)]
        points = sorted({p for p in points if p < self.budget_chars} | {self.budget_chars})
        if len(points) < MIN_EVALS:  # every trial gets a curve, not a dot
            points = even_points(self.budget_chars, MIN_EVALS)
        return points

    @property
    def local_budget_chars(self) -> int:
        """Characters each trial of the local design trains (the spec's, or twice the search's budget)."""
        return int(self.local["budget_chars"]) or 2 * self.budget_chars

    def local_params(self) -> list[str]:
        """The hyperparameters the local design moves, in the spec's order."""
        wanted = self.local["params"] or list(self.search)
        return [name for name in self.search if name in wanted]

    def local_center(self) -> dict[str, Any] | None:
        """The spec's fixed center of the local design (None: the search's best), each numeric value brought into its
        range as this study has it (a corpus of one's own clips the train_chars range: study.spec.fit_to_corpus)."""
        center = self.local.get("center") or {}
        if not center:
            return None
        out = {}
        for name, value in center.items():
            p = self.search[name]
            if p.type != "categorical":
                value = (int if p.type == "int" else float)(min(max(value, p.low), p.high))
            out[name] = value
        return out

    def run_settings(self) -> dict[str, Any]:
        """The TrainConfig fields every trial of this study shares (budget, evaluation, sampling)."""
        settings = {
            "budget_chars": self.budget_chars,
            "eval_at": self.eval_at(),
            "val_chars": self.val_chars,
            "seed": self.seed,
        }
        keys = {"prime": "prime", "temperature": "sample_temperature", "chars": "sample_chars",
                "final_temperatures": "final_temperatures", "final_chars": "final_sample_chars"}
        for key, value in self.sampling.items():
            settings[keys[key]] = value
        return settings

    def min_train_chars_needed(self) -> int:
        """The most training text any trial of this spec can need for one batch (batch_size x (seq_len+1))."""
        values = self._int_values
        if "step_chars" in self.search or "step_chars" in self.fixed:
            return max(batch_size_for(c, s) * (s + 1) for c in values("step_chars") for s in values("seq_len"))
        return max(values("batch_size")) * (max(values("seq_len")) + 1)

    def _int_values(self, name: str) -> list[int]:
        """The values an integer hyperparameter takes at the edges of its range (every choice of a categorical), or
        its fixed value, or the trainer's default."""
        if name in self.search:
            return [int(v) for v in self.search[name].extremes()]
        return [int(self.fixed.get(name, getattr(TrainConfig, name)))]

    def step_chars_range(self) -> tuple[int, int]:
        """The fewest and the most characters an optimizer step of this spec's trials takes."""
        values = self._int_values
        if "step_chars" in self.search or "step_chars" in self.fixed:
            sizes = [batch_size_for(c, s) * s for c in values("step_chars") for s in values("seq_len")]
        else:
            sizes = [b * s for b in values("batch_size") for s in values("seq_len")]
        return min(sizes), max(sizes)


def even_points(budget_chars: int, n: int) -> list[int]:
    """`n` evenly spaced evaluation points, the last at `budget_chars`."""
    return sorted({max(1, budget_chars * j // n) for j in range(1, n + 1)})


def _check_center(center, search: dict[str, Param]) -> None:
    """`local.center`: empty, or a value inside the space for every searched hyperparameter."""
    if not isinstance(center, dict):
        raise SpecError(f"local.center must be a table of searched hyperparameters, got {center!r}")
    if not center:
        return
    missing, unknown = sorted(set(search) - set(center)), sorted(set(center) - set(search))
    if missing or unknown:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"not searched {', '.join(unknown)}"] if unknown else [])
        raise SpecError(f"local.center must give every searched hyperparameter and no other: {'; '.join(parts)}")
    for name, value in center.items():
        p = search[name]
        if p.type == "categorical":
            ok = value in p.choices
        elif p.type == "int":
            ok = isinstance(value, int) and not isinstance(value, bool) and p.low <= value <= p.high
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and p.low <= value <= p.high
        if not ok:
            raise SpecError(f"local.center.{name} = {value!r} is outside its search space {p.describe()}")


def fit_to_corpus(spec: StudySpec, train_chars: int, val_chars: int) -> tuple[StudySpec, dict[str, dict]]:
    """Fit a spec's text sizes to a corpus with `train_chars` training and `val_chars` validation characters.

    A `train_chars` range reaching past the training text is clipped at its length: the trials keep the sizes
    the spec asked for that the text has, rather than all asking for "the whole text" under different numbers.
    When even the low end is past it, the range is scaled down to end there, keeping its low/high ratio (and
    at least one batch of text), so the study still compares small and large training sets. A fixed
    `train_chars`, or a `val_chars` (the search's or the final model's) above what the text has, becomes all of it.

    Returns:
        The spec to run, and {name: {"from", "to", "why"}} for what changed ({} when the spec fits as it is).
    """
    adjusted: dict[str, dict] = {}
    why = f"the corpus has {train_chars:,} training characters"
    param = spec.search.get("train_chars")
    if param is not None and param.high > train_chars:
        kind = int if param.type == "int" else float
        low = param.low
        if low > train_chars:
            low = max(spec.min_train_chars_needed(), kind(param.low * train_chars / param.high))
        high = train_chars if not param.step else low + (train_chars - low) // param.step * param.step
        clipped = replace(param, low=kind(low), high=kind(high))
        spec = replace(spec, search={**spec.search, "train_chars": clipped})
        adjusted["train_chars"] = {"from": {"low": param.low, "high": param.high},
                                   "to": {"low": clipped.low, "high": clipped.high}, "why": why}
    fixed = spec.fixed.get("train_chars")
    if fixed and fixed > train_chars:
        spec = replace(spec, fixed={**spec.fixed, "train_chars": train_chars})
        adjusted["train_chars"] = {"from": fixed, "to": train_chars, "why": why}
    if spec.val_chars > val_chars:
        adjusted["val_chars"] = {"from": spec.val_chars, "to": val_chars,
                                 "why": f"the corpus has {val_chars:,} validation characters"}
        spec = replace(spec, val_chars=val_chars)
    if spec.final["val_chars"] > val_chars:
        adjusted["final.val_chars"] = {"from": spec.final["val_chars"], "to": val_chars,
                                       "why": f"the corpus has {val_chars:,} validation characters"}
        spec = replace(spec, final={**spec.final, "val_chars": val_chars})
    return spec, adjusted


_TOP = {"name", "corpus", "trials", "minutes", "budget_chars", "evals_per_rung", "val_chars", "repeats", "repeat_chars",
        "seed", "search", "fixed", "sampler", "scheduler", "sampling", "final", "local"}
_PARAM_KEYS = {"type", "low", "high", "log", "step", "choices"}
_SAMPLER_DEFAULTS = {"name": "tpe", "n_startup_trials": 10, "startup": "lhs"}
_SAMPLER_KEYS = set(_SAMPLER_DEFAULTS)
_STARTUPS = {"lhs", "random"}
_SAMPLERS = {"tpe", "random"}
_SCHEDULER_DEFAULTS = {"name": "asha", "grace_chars": 100_000, "reduction_factor": 3, "min_steps": 100}
_SCHEDULER_KEYS = set(_SCHEDULER_DEFAULTS)
# The final model: the best configuration trained for `chars` characters (0 skips the stage), at most
# `minutes` (the budget shrinks to fit, 0 = no limit), evaluated `evals` times on `val_chars` validation
# characters (0 = all), stopped early after `patience` evaluations without a gain of `min_delta` bits/char, taking
# `step_chars` characters a step (0 = the chosen trial's). With a `baseline` (hyperparameters over the chosen
# trial's: the hand-picked configuration the study must beat), `alternatives` (more hand-picked ones, by name) and
# `race_evals` (the race's rungs, in evaluations: one number or an ascending list; 0 or [] = no race), the chosen
# configuration and these first race on the final model's terms, all to the first rung, the better half on to the
# next, and the best at the last goes on (study.stages.final).
_FINAL_DEFAULTS = {"chars": 0, "minutes": 0.0, "evals": 12, "val_chars": 0, "patience": 3, "min_delta": 0.002,
                   "step_chars": 0, "race_evals": 0, "baseline": {}, "alternatives": {}}
_SCHEDULERS = {"asha", "fifo"}
# The local design (study.local): around `center` (a value for every searched hyperparameter; empty = the search's
# best configuration), each of `params` (empty = every searched hyperparameter) moved one at a time, the center and
# every move trained with the same `seeds` seeds (0 skips the stage) to `budget_chars` (0 = twice the search's
# budget; under a time plan, `share` of the search's and the local design's time goes to the local design).
_LOCAL_DEFAULTS = {"seeds": 0, "budget_chars": 0, "params": [], "share": 0.65, "center": {}}
MIN_EVALS = 4  # evaluations every trial gets at least
_SAMPLING_KEYS = {"prime", "temperature", "chars", "final_temperatures", "final_chars"}


def _check_baseline(final: dict, searched: set) -> None:
    """final.baseline and each of final.alternatives: scalar values of searched hyperparameters or trainer settings;
    an alternative's name neither "chosen" nor "baseline"; final.race_evals below final.evals (the race is the start
    of the final model's schedule), normalized to an ascending list of rungs."""
    alternatives = final["alternatives"]
    if not isinstance(alternatives, dict):
        raise SpecError(f"final.alternatives must be a table of named tables, got {alternatives!r}")
    reserved = sorted({"chosen", "baseline"} & set(alternatives))
    if reserved:
        raise SpecError(f"final.alternatives: {reserved[0]!r} names the study's own candidate; choose another name")
    for where, table in [("final.baseline", final["baseline"])] + [(f"final.alternatives.{name}", table)
                                                                    for name, table in alternatives.items()]:
        if not isinstance(table, dict):
            raise SpecError(f"{where} must be a table of hyperparameters, got {table!r}")
        unknown = sorted(set(table) - searched - set(TrainConfig.__dataclass_fields__))
        if unknown:
            raise SpecError(f"{where}: unknown hyperparameter(s) {', '.join(unknown)}")
        for key, value in table.items():
            if not isinstance(value, (str, int, float, bool)):
                raise SpecError(f"{where}.{key} must be a number or a string, got {value!r}")
    raw = final["race_evals"]
    rungs = raw if isinstance(raw, list) else [raw]
    for rung in rungs:
        _int("final.race_evals", rung, 0 if rungs == [raw] else 1)
    rungs = [r for r in rungs if r]
    if rungs != sorted(set(rungs)):
        raise SpecError(f"final.race_evals must ascend, got {raw!r}")
    if rungs and rungs[-1] >= final["evals"]:
        raise SpecError(f"final.race_evals must be below final.evals ({final['evals']}), got {raw!r}")
    final["race_evals"] = rungs


def _check_keys(where: str, got: dict, allowed: set) -> None:
    unknown = sorted(set(got) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _int(where: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where} must be an integer, got {value!r}")
    if value < minimum:
        raise SpecError(f"{where} must be >= {minimum}, got {value}")
    return value


def _param(name: str, raw: Any) -> Param:
    where = f"search.{name}"
    if not isinstance(raw, dict):
        raise SpecError(f"{where} must be a table with a type")
    _check_keys(where, raw, _PARAM_KEYS)
    kind = raw.get("type")
    if kind == "categorical":
        extra = sorted(set(raw) - {"type", "choices"})
        if extra:
            raise SpecError(f"{where}: a categorical takes only choices, not {', '.join(extra)}")
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpecError(f"{where}: choices must be a non-empty list")
        if len(set(map(repr, choices))) != len(choices):
            raise SpecError(f"{where}: choices repeat a value")
        return Param(name, "categorical", choices=tuple(choices))
    if kind not in ("float", "int"):
        raise SpecError(f"{where}: type must be float, int or categorical, got {kind!r}")
    if "choices" in raw:
        raise SpecError(f"{where}: choices belong to a categorical, not a {kind}")
    if "low" not in raw or "high" not in raw:
        raise SpecError(f"{where}: a {kind} needs low and high")
    low, high, log = raw["low"], raw["high"], raw.get("log", False)
    numeric = (int,) if kind == "int" else (int, float)
    for label, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, numeric) or (isinstance(v, float) and not math.isfinite(v)):
            raise SpecError(f"{where}: {label} must be a finite {'integer' if kind == 'int' else 'number'}, got {v!r}")
    if not isinstance(log, bool):
        raise SpecError(f"{where}: log must be true or false")
    if low > high:
        raise SpecError(f"{where}: low ({low}) is greater than high ({high})")
    if log and low <= 0:
        raise SpecError(f"{where}: a log scale needs low > 0, got {low}")
    step = raw.get("step")
    if step is not None:
        if kind != "int" or log:
            raise SpecError(f"{where}: step is allowed only on a linear int range")
        _int(f"{where}.step", step, 1)
    return Param(name, kind, low=low if kind == "int" else float(low), high=high if kind == "int" else float(high),
                 log=log, step=step)


def _check_values(name: str, values: list) -> None:
    """Every value a hyperparameter can take must make a valid TrainConfig."""
    for value in values:
        try:
            TrainConfig.from_flat({name: value})
        except (ValueError, TypeError) as exc:
            raise SpecError(f"{name}={value!r} is not a valid value: {exc}") from None


def parse_spec(raw: dict, path: str = "") -> StudySpec:
    """Validate a spec dict (as read from TOML) and return a StudySpec; raises SpecError."""
    _check_keys("spec", raw, _TOP)
    if "name" not in raw or not isinstance(raw["name"], str) or not raw["name"].strip():
        raise SpecError("spec: name must be a non-empty string")
    name = raw["name"].strip()
    if any(c in name for c in "/\\\0") or name.startswith("."):
        raise SpecError(f"spec: name {name!r} must not contain path separators")
    corpus = raw.get("corpus", "sherlock")
    if not isinstance(corpus, str) or not corpus:
        raise SpecError("spec: corpus must be a corpus name or path")

    search_raw = raw.get("search", {})
    fixed_raw = raw.get("fixed", {})
    if not isinstance(search_raw, dict) or not isinstance(fixed_raw, dict):
        raise SpecError("spec: search and fixed must be tables")
    for section, names in (("search", search_raw), ("fixed", fixed_raw)):
        unknown = sorted(set(names) - set(HYPERPARAMETERS))
        if unknown:
            raise SpecError(f"{section}: unknown hyperparameter(s) {', '.join(unknown)} "
                            f"(known: {', '.join(HYPERPARAMETERS)})")
    both = sorted(set(search_raw) & set(fixed_raw))
    if both:
        raise SpecError(f"spec: {', '.join(both)} is both searched and fixed")
    if not search_raw:
        raise SpecError("spec: search must name at least one hyperparameter")
    search = {n: _param(n, r) for n, r in search_raw.items()}
    for n, p in search.items():
        _check_values(n, p.extremes())
    for n, v in fixed_raw.items():
        _check_values(n, [v])

    sampler = {**_SAMPLER_DEFAULTS, **raw.get("sampler", {})}
    _check_keys("sampler", sampler, _SAMPLER_KEYS)
    if sampler["name"] not in _SAMPLERS:
        raise SpecError(f"sampler.name must be one of {', '.join(sorted(_SAMPLERS))}, got {sampler['name']!r}")
    if sampler["startup"] not in _STARTUPS:
        raise SpecError(f"sampler.startup must be one of {', '.join(sorted(_STARTUPS))}, got {sampler['startup']!r}")
    _int("sampler.n_startup_trials", sampler["n_startup_trials"], 0)
    scheduler = {**_SCHEDULER_DEFAULTS, **raw.get("scheduler", {})}
    _check_keys("scheduler", scheduler, _SCHEDULER_KEYS)
    if scheduler["name"] not in _SCHEDULERS:
        raise SpecError(f"scheduler.name must be one of {', '.join(sorted(_SCHEDULERS))}, got {scheduler['name']!r}")
    _int("scheduler.grace_chars", scheduler["grace_chars"], 1)
    _int("scheduler.reduction_factor", scheduler["reduction_factor"], 2)
    _int("scheduler.min_steps", scheduler["min_steps"], 0)
    minutes = raw.get("minutes", 0.0)
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes >= 0:
        raise SpecError(f"spec: minutes must be a number >= 0, got {minutes!r}")
    final = {**_FINAL_DEFAULTS, **raw.get("final", {})}
    _check_keys("final", final, set(_FINAL_DEFAULTS))
    for key in ("chars", "evals", "val_chars", "patience", "step_chars"):
        _int(f"final.{key}", final[key], 1 if key == "evals" else 0)
    _check_baseline(final, set(search_raw))
    for key in ("minutes", "min_delta"):
        if isinstance(final[key], bool) or not isinstance(final[key], (int, float)) or not final[key] >= 0:
            raise SpecError(f"final.{key} must be a number >= 0, got {final[key]!r}")
        final[key] = float(final[key])
    if "batch_size" in set(search_raw) | set(fixed_raw) and "step_chars" in set(search_raw) | set(fixed_raw):
        raise SpecError("spec: give batch_size or step_chars, not both (step_chars / seq_len is the batch size)")
    if "lr" in set(search_raw) | set(fixed_raw) and "lr_scale" in set(search_raw) | set(fixed_raw):
        raise SpecError("spec: give lr or lr_scale, not both (lr_scale x the optimizer's base rate is the lr)")
    local = {**_LOCAL_DEFAULTS, **raw.get("local", {})}
    _check_keys("local", local, set(_LOCAL_DEFAULTS))
    _int("local.seeds", local["seeds"], 0)
    _int("local.budget_chars", local["budget_chars"], 0)
    if not isinstance(local["params"], list) or any(p not in search for p in local["params"]):
        raise SpecError(f"local.params must list searched hyperparameters, got {local['params']!r}")
    if isinstance(local["share"], bool) or not isinstance(local["share"], (int, float)) or not 0 < local["share"] < 1:
        raise SpecError(f"local.share must be a number between 0 and 1, got {local['share']!r}")
    _check_center(local["center"], search)
    sampling = dict(raw.get("sampling", {}))
    _check_keys("sampling", sampling, _SAMPLING_KEYS)
    try:
        TrainConfig.from_flat({{"temperature": "sample_temperature", "chars": "sample_chars",
                                "final_chars": "final_sample_chars"}.get(k, k): v for k, v in sampling.items()})
    except (ValueError, TypeError) as exc:
        raise SpecError(f"sampling: {exc}") from None

    spec = StudySpec(
        name=name,
        corpus=corpus,
        trials=_int("spec: trials", raw.get("trials", 50), 1),
        budget_chars=_int("spec: budget_chars", raw.get("budget_chars", 1_000_000), 1),
        evals_per_rung=_int("spec: evals_per_rung", raw.get("evals_per_rung", 2), 1),
        val_chars=_int("spec: val_chars", raw.get("val_chars", 40_000), 0),
        repeats=_int("spec: repeats", raw.get("repeats", 2), 0),
        repeat_chars=_int("spec: repeat_chars", raw.get("repeat_chars", 0), 0),
        seed=_int("spec: seed", raw.get("seed", 0), 0),
        minutes=float(minutes),
        search=search,
        fixed=dict(fixed_raw),
        sampler=sampler,
        scheduler=scheduler,
        sampling=sampling,
        final=final,
        local=local,
        path=path,
    )
    if spec.repeat_chars > spec.budget_chars:
        raise SpecError(f"spec: repeat_chars ({spec.repeat_chars:,}) exceeds budget_chars ({spec.budget_chars:,})")
    return spec


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a TOML job spec; raises SpecError with a one-line message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec {path}: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_spec(raw, str(path))
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
