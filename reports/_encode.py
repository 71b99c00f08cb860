"""Map hyperparameters to a unit box: numeric ones to [0, 1] (on log scale where the spec says so),
categorical ones to one-hot columns. Grids and samples of the search space live in the same encoded space.

Every integral over the search space (main effects, total variance, the marginal plots) is taken over the
distribution the sampler draws from, not over a continuum: a float is uniform on its scale (log or linear);
an int is discrete, as Optuna's IntDistribution samples it (uniform over low, low + step, ..., high, or, with
`log`, log(v + 1/2) - log(v - 1/2) for each integer v); a categorical is uniform over its choices. Treating
num_layers in {1, 2, 3} as a continuum gave a linear effect about half its variance share.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports._load import ParamSpec

MAX_LEVELS = 64  # an int with more values is integrated on a grid of its quantiles instead of value by value


def _scale(spec: ParamSpec, values: np.ndarray) -> np.ndarray:
    lo, hi = spec.low, spec.high
    v = np.asarray(values, dtype=float)
    if spec.log:
        v, lo, hi = np.log(np.clip(v, 1e-300, None)), math.log(lo), math.log(hi)
    if not hi > lo:
        return np.full(len(v), 0.5)
    out = (v - lo) / (hi - lo)
    return np.where(np.isfinite(out), out, 0.5)


def n_levels(spec: ParamSpec) -> int:
    """How many values an int hyperparameter can take."""
    return (int(spec.high) - int(spec.low)) // max(int(spec.step), 1) + 1


def int_levels(spec: ParamSpec) -> tuple[np.ndarray, np.ndarray]:
    """The values an int hyperparameter takes and their probabilities under the sampler (IntDistribution)."""
    lo, step = int(spec.low), max(int(spec.step), 1)
    values = lo + step * np.arange(n_levels(spec), dtype=float)
    if spec.log:
        p = np.log(values + 0.5) - np.log(values - 0.5)
    else:
        p = np.ones(len(values))
    return values, p / p.sum()


def int_quantile(spec: ParamSpec, q: np.ndarray) -> np.ndarray:
    """The int value at quantile `q` (in [0, 1)) of the sampler's distribution, without listing every value:
    Optuna draws a log int uniformly in [log(low - 1/2), log(high + 1/2)] and rounds, a linear one uniformly
    over its steps."""
    q = np.asarray(q, dtype=float)
    lo, hi, step = int(spec.low), int(spec.high), max(int(spec.step), 1)
    if spec.log:
        a, b = math.log(lo - 0.5), math.log(hi + 0.5)
        return np.clip(np.floor(np.exp(a + q * (b - a)) + 0.5), lo, hi)
    return lo + step * np.minimum(np.floor(q * n_levels(spec)), n_levels(spec) - 1)


def decode(spec: ParamSpec, u: np.ndarray) -> np.ndarray:
    """Inverse of the numeric encoding: unit-box position -> hyperparameter value (for an int, the nearest
    value it can take, on its scale)."""
    u = np.asarray(u, dtype=float)
    if spec.log:
        v = np.exp(math.log(spec.low) + u * (math.log(spec.high) - math.log(spec.low)))
    else:
        v = spec.low + u * (spec.high - spec.low)
    if spec.kind != "int":
        return v
    lo, step = spec.low, max(int(spec.step), 1)
    return np.clip(lo + step * np.round((v - lo) / step), spec.low, spec.high)


def width(spec: ParamSpec) -> int:
    """Number of encoded columns the hyperparameter takes."""
    return len(spec.choices) if spec.is_categorical else 1


def groups(specs: tuple[ParamSpec, ...] | list[ParamSpec]) -> list[np.ndarray]:
    """Encoded column indices of each hyperparameter, in spec order."""
    out, start = [], 0
    for s in specs:
        out.append(np.arange(start, start + width(s)))
        start += width(s)
    return out


def encode(specs: tuple[ParamSpec, ...] | list[ParamSpec], df: pd.DataFrame) -> np.ndarray:
    """Encode the `param.NAME` columns of `df` into an (n, sum of widths) float matrix."""
    cols = []
    for s in specs:
        if s.is_categorical:
            vals = df[s.column].to_numpy(object)
            cols.append(np.stack([[v == c for v in vals] for c in s.choices], axis=1).astype(float)
                        if len(vals) else np.zeros((0, width(s))))
        else:
            cols.append(_scale(s, df[s.column].to_numpy(float))[:, None])
    return np.hstack(cols) if cols else np.zeros((len(df), 0))


def quadrature(spec: ParamSpec | None, n_grid: int) -> tuple[np.ndarray, list, np.ndarray]:
    """Points and weights that integrate over one hyperparameter's sampling distribution.

    Returns (encoded rows (g, width), values to display, weights summing to 1). Categories: each choice,
    equal weights. Ints with at most MAX_LEVELS values: each value, weighted by its probability. Larger ints:
    the values at the n_grid quantile mid-points of their distribution, equal weights. Floats: an even grid on
    their scale with trapezoidal weights, whose end points stand for half a cell each (equal weights would
    overstate a main effect's variance by up to (n + 1) / (n - 1), 10% for 21 points). `spec=None` stands for
    a uniform numeric column (the null probe).
    """
    if spec is not None and spec.is_categorical:
        k = len(spec.choices)
        return np.eye(k), list(spec.choices), np.full(k, 1.0 / k)
    if spec is not None and spec.kind == "int":
        if n_levels(spec) <= MAX_LEVELS:
            levels, p = int_levels(spec)
        else:
            levels, p = int_quantile(spec, (np.arange(n_grid) + 0.5) / n_grid), np.full(n_grid, 1.0 / n_grid)
        return _scale(spec, levels)[:, None], [int(v) for v in levels], p
    u = np.linspace(0.0, 1.0, n_grid)
    w = np.ones(n_grid)
    if n_grid >= 2:
        w[[0, -1]] = 0.5
    values = [float(v) for v in decode(spec, u)] if spec is not None else [float(v) for v in u]
    return u[:, None], values, w / w.sum()


def grid(spec: ParamSpec, n_grid: int) -> tuple[np.ndarray, list]:
    """Grid over one hyperparameter: (encoded rows (g, width), values to display); see `quadrature`."""
    rows, values, _ = quadrature(spec, n_grid)
    return rows, values


def grid_weights(spec: ParamSpec | None, n_grid: int) -> np.ndarray:
    """Quadrature weights (summing to 1) of `grid`'s rows under the sampling distribution; see `quadrature`."""
    return quadrature(spec, n_grid)[2]


def sample_space(specs: tuple[ParamSpec, ...] | list[ParamSpec], n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` points drawn from the search space as the sampler draws them (see the module docstring), encoded."""
    cols = []
    for s in specs:
        if s.is_categorical:
            k = len(s.choices)
            cols.append(np.eye(k)[rng.integers(0, k, n)] if k else np.zeros((n, 0)))
        elif s.kind == "int":
            cols.append(_scale(s, int_quantile(s, rng.random(n)))[:, None])
        else:
            cols.append(rng.random((n, 1)))
    return np.hstack(cols) if cols else np.zeros((n, 0))
