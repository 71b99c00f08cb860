"""Map hyperparameters to a unit box: numeric ones to [0, 1] (on log scale where the spec says so),
categorical ones to one-hot columns. Grids and uniform samples live in the same encoded space."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports._load import ParamSpec


def _scale(spec: ParamSpec, values: np.ndarray) -> np.ndarray:
    lo, hi = spec.low, spec.high
    v = np.asarray(values, dtype=float)
    if spec.log:
        v, lo, hi = np.log(np.clip(v, 1e-300, None)), math.log(lo), math.log(hi)
    if not hi > lo:
        return np.full(len(v), 0.5)
    out = (v - lo) / (hi - lo)
    return np.where(np.isfinite(out), out, 0.5)


def decode(spec: ParamSpec, u: np.ndarray) -> np.ndarray:
    """Inverse of the numeric encoding: unit-box position -> hyperparameter value."""
    u = np.asarray(u, dtype=float)
    if spec.log:
        return np.exp(math.log(spec.low) + u * (math.log(spec.high) - math.log(spec.low)))
    return spec.low + u * (spec.high - spec.low)


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


def grid(spec: ParamSpec, n_grid: int) -> tuple[np.ndarray, list]:
    """Grid over one hyperparameter: (encoded rows (g, width), values to display)."""
    if spec.is_categorical:
        return np.eye(len(spec.choices)), list(spec.choices)
    u = np.linspace(0.0, 1.0, n_grid)
    return u[:, None], [float(v) for v in decode(spec, u)]


def grid_weights(spec: ParamSpec | None, n_grid: int) -> np.ndarray:
    """Quadrature weights (summing to 1) of `grid`'s rows under the uniform search-space distribution: equal
    for categories, trapezoidal for a numeric grid, whose end points stand for half a cell each (equal weights
    would overstate a main effect's variance by up to (n + 1) / (n - 1), 10% for 21 points). `spec=None`
    stands for a numeric column."""
    if spec is not None and spec.is_categorical:
        return np.full(len(spec.choices), 1.0 / len(spec.choices))
    if n_grid < 2:
        return np.ones(n_grid)
    w = np.ones(n_grid)
    w[[0, -1]] = 0.5
    return w / w.sum()


def uniform_sample(specs: tuple[ParamSpec, ...] | list[ParamSpec], n: int,
                   rng: np.random.Generator) -> np.ndarray:
    """`n` points drawn uniformly from the search space (log-uniform for log params), encoded."""
    cols = []
    for s in specs:
        if s.is_categorical:
            k = len(s.choices)
            cols.append(np.eye(k)[rng.integers(0, k, n)] if k else np.zeros((n, 0)))
        else:
            cols.append(rng.random((n, 1)))
    return np.hstack(cols) if cols else np.zeros((n, 0))
