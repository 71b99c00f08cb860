"""The search space as Optuna distributions: the one place where spec params become Optuna objects."""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from scipy.stats import qmc

from study.spec import Param, StudySpec


def to_distribution(param: Param) -> optuna.distributions.BaseDistribution:
    if param.type == "categorical":
        return optuna.distributions.CategoricalDistribution(list(param.choices))
    if param.type == "int":
        return optuna.distributions.IntDistribution(int(param.low), int(param.high), log=param.log,
                                                    step=param.step or 1)
    return optuna.distributions.FloatDistribution(float(param.low), float(param.high), log=param.log)


def optuna_space(spec: StudySpec) -> dict[str, optuna.distributions.BaseDistribution]:
    return {name: to_distribution(p) for name, p in spec.search.items()}


def describe_space(spec: StudySpec) -> dict[str, dict]:
    """The search space as the results contract writes it into study.json."""
    return {name: p.describe() for name, p in spec.search.items()}


def make_sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    if spec.sampler["name"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    n_startup = spec.sampler["n_startup_trials"]
    tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, multivariate=True, constant_liar=True)
    if spec.sampler["startup"] == "lhs" and n_startup > 1:
        return LatinHypercubeStartup(tpe, optuna_space(spec), n_startup, seed)
    return tpe


def from_unit(dist: BaseDistribution, u: float) -> Any:
    """The value at quantile `u` in [0, 1) of a uniform (log-uniform where `log`) distribution over `dist`."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    if isinstance(dist, IntDistribution):
        if dist.log:  # each integer owns the log-interval [v - 1/2, v + 1/2)
            lo, hi = math.log(dist.low - 0.5), math.log(dist.high + 0.5)
            return min(max(round(math.exp(lo + u * (hi - lo))), dist.low), dist.high)
        count = (dist.high - dist.low) // dist.step + 1
        return dist.low + dist.step * min(int(u * count), count - 1)
    if isinstance(dist, FloatDistribution):
        if dist.log:
            return min(math.exp(math.log(dist.low) + u * math.log(dist.high / dist.low)), dist.high)
        return min(dist.low + u * (dist.high - dist.low), dist.high)
    raise TypeError(f"no unit mapping for {dist!r}")


class LatinHypercubeStartup(optuna.samplers.BaseSampler):
    """The first `n_startup` trials from a Latin hypercube over the space, then `base` (TPE).

    Random startup trials leave a 50-trial study's design to chance: one seed drew 11 SGD trials of
    25 and another 5, and the importance report's answer followed the draw. A Latin hypercube puts
    exactly one of the n startup trials in each 1/n quantile of every hyperparameter (log scale where
    the space says so), so each categorical choice appears n/k times (rounded), and scipy's random-CD
    optimisation lowers the correlation between hyperparameters. Trial number i gets design row i, so
    the design is the same after a resume from the same storage and seed.
    """

    def __init__(self, base: optuna.samplers.BaseSampler, space: dict[str, BaseDistribution],
                 n_startup: int, seed: int) -> None:
        self._base, self._space, self._n_startup = base, dict(space), n_startup
        names = sorted(space)
        unit = qmc.LatinHypercube(d=len(names), optimization="random-cd", rng=np.random.default_rng(seed))
        rows = unit.random(n_startup)
        # Discrete values take their stratum's centre, so that k choices get n/k strata each (rounded) even
        # where a stratum straddles two choices.
        centres = (np.floor(rows * n_startup) + 0.5) / n_startup
        discrete = [not isinstance(space[name], FloatDistribution) for name in names]
        rows = np.where(discrete, centres, rows)
        self._design = [{name: from_unit(space[name], float(u)) for name, u in zip(names, row)} for row in rows]

    def design(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._design]

    def _startup(self, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number < self._n_startup

    def reseed_rng(self) -> None:
        self._base.reseed_rng()

    def infer_relative_search_space(self, study, trial):
        return {} if self._startup(trial) else self._base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return {} if self._startup(trial) else self._base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        row = self._design[trial.number] if self._startup(trial) else None
        if row is not None and param_name in row and param_distribution == self._space[param_name]:
            return row[param_name]
        return self._base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self._base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self._base.after_trial(study, trial, state, values)


def startup_design(spec: StudySpec, seed: int) -> list[dict[str, Any]]:
    """The Latin-hypercube rows of the startup trials (empty where the spec's sampler has none)."""
    n_startup = spec.sampler["n_startup_trials"] if spec.sampler["name"] == "tpe" else 0
    if spec.sampler.get("startup", "lhs") != "lhs" or n_startup <= 1:
        return []
    return LatinHypercubeStartup(optuna.samplers.RandomSampler(seed=seed), optuna_space(spec), n_startup,
                                 seed).design()


def propose(spec: StudySpec, seed: int, number: int, history: list[optuna.trial.FrozenTrial],
            design: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The parameters of search trial `number`, from the trials in `history` only (the deterministic schedule).

    The first `n_startup_trials` come from the Latin hypercube (`design`, row `number`: `startup_design`); later
    ones from a TPE sampler seeded by (seed, number) over an in-memory study holding `history`. So a trial's
    parameters depend on the seed and on the trials the schedule lets it see, never on which trial finished first.
    """
    design = startup_design(spec, seed) if design is None else design
    if number < len(design):
        return dict(design[number])
    trial_seed = int(np.random.SeedSequence([seed, number]).generate_state(1)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if spec.sampler["name"] == "tpe":
            sampler = optuna.samplers.TPESampler(seed=trial_seed, n_startup_trials=0, multivariate=True)
        else:
            sampler = optuna.samplers.RandomSampler(seed=trial_seed)
        study = optuna.create_study(sampler=sampler, direction="minimize")
        study.add_trials(as_observed(sorted(history, key=lambda t: t.number)))
        return dict(study.ask(fixed_distributions=optuna_space(spec)).params)


def as_observed(history: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """`history` as the sampler should learn from it: a diverged trial (FAIL, user attribute status "diverged")
    counts as complete, with the worst value any trial reached. TPE ignores FAIL trials, so without this it kept
    proposing the region that diverges: in the default study, 11 of the first 37 trials, 5 of them after the
    startup design. A crashed trial (a bug, out of memory) says nothing of its parameters and stays FAIL."""
    values = [t.value for t in history if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None
              and math.isfinite(t.value)]
    if not values:
        return list(history)
    worst = max(values)
    return [optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=worst,
                                      user_attrs=t.user_attrs)
            if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("status") == "diverged" and t.params
            else t for t in history]


class LaggedProposer:
    """The deterministic schedule's proposals: search trial k sees only trials 0 .. k - lag - 1, and is proposed
    only once all of those have finished (`lag`: twice the trials that run at once, so a slot rarely waits).

    `params_for(study)` returns the next trial's parameters, or None while a trial it must see still runs (Tune then
    asks again a moment later; the cores idle meanwhile, which BENCHMARKS.md measures).
    """

    def __init__(self, spec: StudySpec, seed: int, lag: int) -> None:
        self.spec, self.seed, self.lag = spec, seed, max(0, int(lag))
        self.design = startup_design(spec, seed)

    def params_for(self, study: optuna.Study) -> dict[str, Any] | None:
        trials = study.get_trials(deepcopy=False)
        number = len(trials)
        seen = [t for t in trials if t.number < number - self.lag]
        if number >= len(self.design) and not all(t.state.is_finished() for t in seen):
            return None
        return propose(self.spec, self.seed, number, seen, self.design)
