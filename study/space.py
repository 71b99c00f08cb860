"""The search space as Optuna distributions: the one place where spec params become Optuna objects."""
from __future__ import annotations

import optuna

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
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.sampler["n_startup_trials"],
                                      multivariate=True, constant_liar=True)
