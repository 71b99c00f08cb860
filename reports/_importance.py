"""Hyperparameter importance with bootstrap confidence intervals, by two independent methods.

- "fanova": functional ANOVA main effects (Hutter et al. 2014) of a Gaussian-process surrogate with one
  length scale per encoded column (ARD). On ~50 noisy trials a fully grown random forest (Optuna's
  default fANOVA) splits on noise and gives irrelevant hyperparameters a few percent each; the ARD
  length scales of a GP switch irrelevant inputs off instead. A hyperparameter's importance is the
  variance of its main effect over the search space (log scale where the spec says so) divided by
  the total variance of val_bpc there, seed noise included (the GP's white-noise term).
- "permutation": a random forest fitted on each bootstrap resample, scored on the trials left out of it
  (out-of-bag); importance is the rise in squared error when one hyperparameter is replaced by random
  draws of it, over 2 * Var(y) (equal to the variance share for an additive response).

Both fits carry a "null probe", a column of random numbers redrawn on every resample: its bootstrap
distribution is the importance a hyperparameter with no effect gets from the same estimator.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.linalg import cho_solve
from scipy.stats import spearmanr
from sklearn.ensemble import RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

from reports import _encode
from reports._load import ParamSpec

METHODS = ("fanova", "permutation")
NULL_QUANTILE = 0.95


@dataclass(frozen=True)
class ImportanceResult:
    """Importance of each hyperparameter for one target.

    table: one row per hyperparameter, sorted by rank: param, importance, ci_low, ci_high, rank,
        within_noise, and per method `M`, `M_ci_low`, `M_ci_high` (plus Optuna reference columns).
    marginals: main effect of each hyperparameter on the target (GP): param, value, pos, mean, low, high.
    floors: null-probe floor per method, the seed floor (share of variance) and the floor applied.
    fit: surrogate quality (leave-one-out R^2 of the GP, median out-of-bag R^2 of the forest) and the
        share of variance left to interactions and noise.
    """

    target: str
    n_trials: int
    n_bootstrap: int
    table: pd.DataFrame
    marginals: pd.DataFrame
    floors: dict[str, float]
    fit: dict[str, float]
    agreement: pd.DataFrame
    gp_state: object | None = None  # (fitted GP, specs, groups, mc, y mean, y sd) for the interaction grid


def _gp(X: np.ndarray, y: np.ndarray, seed: int, kernel=None, restarts: int = 2) -> GaussianProcessRegressor:
    if kernel is None:
        d = X.shape[1]
        kernel = (ConstantKernel(1.0, (1e-2, 1e2)) * Matern(np.full(d, 0.5), (0.03, 100.0), nu=2.5)
                  + WhiteKernel(0.1, (1e-4, 2.0)))
    gp = GaussianProcessRegressor(kernel, normalize_y=False, n_restarts_optimizer=restarts, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(X, y)
    return gp


def _main_effects(gp: GaussianProcessRegressor, grids: list[np.ndarray], groups: list[np.ndarray],
                  mc: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Shares of variance of each group's main effect, and the main-effect curves (standardized units)."""
    blocks = []
    for g, cols in zip(grids, groups):
        Xg = np.repeat(mc[None], len(g), axis=0)
        Xg[:, :, cols] = g[:, None, :]
        blocks.append(Xg.reshape(-1, mc.shape[1]))
    pred = gp.predict(np.vstack(blocks + [mc]))
    total = float(np.var(pred[-len(mc):])) + float(gp.kernel_.k2.noise_level)
    curves, shares, start = [], [], 0
    for g in grids:
        f = pred[start:start + len(g) * len(mc)].reshape(len(g), len(mc)).mean(axis=1)
        start += len(g) * len(mc)
        curves.append(f)
        shares.append(float(np.var(f)) / total)
    return np.array(shares), curves


def _loo_r2(gp: GaussianProcessRegressor, y: np.ndarray) -> float:
    k_inv = cho_solve((gp.L_, True), np.eye(len(y)))
    resid = gp.alpha_ / np.diag(k_inv)
    return float(1.0 - np.mean(resid ** 2) / np.var(y))


def _permutation_oob(X: np.ndarray, y: np.ndarray, idx: np.ndarray, groups: list[np.ndarray],
                     rng: np.random.Generator, n_repeats: int = 4) -> tuple[np.ndarray, float]:
    oob = np.setdiff1d(np.arange(len(y)), idx)
    if len(oob) < 3:
        return np.full(len(groups), np.nan), math.nan
    forest = RandomForestRegressor(n_estimators=60, min_samples_leaf=2, max_features=0.5,
                                   random_state=int(rng.integers(2 ** 31)))
    forest.fit(X[idx], y[idx])
    Xo, yo = X[oob], y[oob]
    batches = [Xo]
    for cols in groups:
        for _ in range(n_repeats):
            Xp = Xo.copy()
            Xp[:, cols] = X[rng.integers(0, len(y), len(oob))][:, cols]
            batches.append(Xp)
    pred = forest.predict(np.vstack(batches)).reshape(len(batches), len(oob))
    mse = ((pred - yo) ** 2).mean(axis=1)
    rise = (mse[1:].reshape(len(groups), n_repeats).mean(axis=1) - mse[0]) / 2.0
    return rise, float(1.0 - mse[0] / np.var(yo)) if np.var(yo) > 0 else math.nan


def compute_importance(specs: tuple[ParamSpec, ...] | list[ParamSpec], params: pd.DataFrame, y: np.ndarray,
                       *, target: str = "val_bpc", n_bootstrap: int = 60, random_state: int = 0,
                       methods: tuple[str, ...] = METHODS, seed_sd: float = math.nan,
                       n_grid: int = 21, n_mc: int = 192) -> ImportanceResult:
    """Importance of each hyperparameter for `y`, with percentile bootstrap intervals over trials.

    Args:
        specs: the searched hyperparameters.
        params: one row per trial with the `param.NAME` columns, aligned with `y`.
        y: the target (e.g. val_bpc at one budget); must be finite.
        target: name of the target, for labels.
        n_bootstrap: bootstrap resamples of the trials (0 gives point estimates only).
        random_state: seed of every random choice (resamples, probes, surrogates).
        methods: subset of ("fanova", "permutation"); the first one gives the `importance` column.
        seed_sd: standard deviation of y over training seeds alone (NaN if unknown), in y's units.
        n_grid: grid points per numeric hyperparameter for main effects.
        n_mc: uniform search-space points over which the other hyperparameters are averaged.

    Returns:
        An `ImportanceResult`.
    """
    specs = list(specs)
    y = np.asarray(y, dtype=float)
    n, names = len(y), [s.name for s in specs]
    rng = np.random.default_rng(random_state)
    y_mean, y_sd = float(np.mean(y)) if n else math.nan, float(np.std(y)) if n else math.nan
    if n < 5 or not y_sd > 0 or not specs:
        return _empty(specs, target, n, methods)
    ys = (y - y_mean) / y_sd
    X = _encode.encode(specs, params)
    groups = _encode.groups(specs)
    probe_col = X.shape[1]
    all_groups = groups + [np.array([probe_col])]
    grids = [_encode.grid(s, n_grid)[0] for s in specs] + [np.linspace(0, 1, n_grid)[:, None]]
    mc_params = _encode.uniform_sample(specs, n_mc, rng)
    mc = np.hstack([mc_params, rng.random((n_mc, 1))])
    k = len(specs)

    point: dict[str, np.ndarray] = {}
    boot = {m: np.full((n_bootstrap, k + 1), np.nan) for m in methods}
    fit: dict[str, float] = {}
    full_probe = rng.random(n)
    Xf = np.hstack([X, full_probe[:, None]])
    gp = _gp(Xf, ys, random_state, restarts=2) if "fanova" in methods else None
    if gp is not None:
        point["fanova"], curves = _main_effects(gp, grids, all_groups, mc)
        fit["gp_loo_r2"] = _loo_r2(gp, ys)
        fit["gp_noise_share"] = float(gp.kernel_.k2.noise_level) / (
            float(np.var(gp.predict(mc))) + float(gp.kernel_.k2.noise_level))
        fit["interaction_share"] = max(0.0, 1.0 - fit["gp_noise_share"] - float(point["fanova"][:k].sum()))
    if gp is not None:
        # Duplicated trials in a resample look noise-free to a GP and make it interpolate; holding the
        # noise at its full-data value keeps the likelihood equal to a weighted one.
        boot_kernel = gp.kernel_.k1 + WhiteKernel(gp.kernel_.k2.noise_level, "fixed")
    boot_curves = [np.full((n_bootstrap, len(g)), np.nan) for g in grids[:k]]
    oob_r2 = []
    for b in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        Xb = np.hstack([X, rng.random((n, 1))])
        if "fanova" in methods:
            gpb = _gp(Xb[idx], ys[idx], random_state, kernel=boot_kernel, restarts=0)
            boot["fanova"][b], cb = _main_effects(gpb, grids, all_groups, mc)
            for j in range(k):
                boot_curves[j][b] = cb[j]
        if "permutation" in methods:
            boot["permutation"][b], r2 = _permutation_oob(Xb, ys, idx, all_groups, rng)
            oob_r2.append(r2)
    if "permutation" in methods:
        point["permutation"] = np.nanmean(boot["permutation"], axis=0) if n_bootstrap else np.zeros(k + 1)
        fit["forest_oob_r2"] = float(np.nanmedian(oob_r2)) if oob_r2 else math.nan

    floors: dict[str, float] = {}
    for m in methods:
        probe = boot[m][:, k] if n_bootstrap else point[m][k:]
        floors[f"null_{m}"] = max(0.0, float(np.nanquantile(probe, NULL_QUANTILE)))
    seed_share = math.nan
    if math.isfinite(seed_sd) and gp is not None:
        total = float(np.var(gp.predict(mc))) + float(gp.kernel_.k2.noise_level)
        seed_share = (seed_sd / y_sd) ** 2 / total
    floors["seed"] = seed_share
    primary = methods[0]
    floors["applied"] = max(floors[f"null_{primary}"], seed_share if math.isfinite(seed_share) else 0.0)

    table = pd.DataFrame({"param": names})
    for m in methods:
        lo, hi = ((np.nanquantile(boot[m][:, :k], q, axis=0) for q in (0.025, 0.975)) if n_bootstrap
                  else (point[m][:k], point[m][:k]))
        table[m] = np.clip(point[m][:k], 0, None)
        table[f"{m}_ci_low"] = np.clip(lo, 0, None)
        table[f"{m}_ci_high"] = np.clip(hi, 0, None)
    table.insert(1, "importance", table[primary])
    table.insert(2, "ci_low", table[f"{primary}_ci_low"])
    table.insert(3, "ci_high", table[f"{primary}_ci_high"])
    table.insert(4, "rank", table["importance"].rank(ascending=False, method="first").astype(int))
    table.insert(5, "within_noise", table["ci_low"] <= floors["applied"])
    table = table.sort_values("rank").reset_index(drop=True)

    marginals = _marginal_table(specs, n_grid, curves, boot_curves, y_mean, y_sd) if gp is not None else None
    state = (gp, specs, groups, mc, y_mean, y_sd) if gp is not None else None
    return ImportanceResult(target, n, n_bootstrap, table, marginals, floors, fit,
                            agreement(table, list(methods)), state)


def _marginal_table(specs, n_grid, curves, boot_curves, y_mean, y_sd) -> pd.DataFrame:
    rows = []
    for j, s in enumerate(specs):
        _, values = _encode.grid(s, n_grid)
        bc = boot_curves[j] * y_sd + y_mean
        has_boot = np.isfinite(bc).any()
        lo = np.nanquantile(bc, 0.025, axis=0) if has_boot else np.full(len(values), np.nan)
        hi = np.nanquantile(bc, 0.975, axis=0) if has_boot else np.full(len(values), np.nan)
        for i, v in enumerate(values):
            rows.append({"param": s.name, "value": v, "pos": i, "mean": curves[j][i] * y_sd + y_mean,
                         "low": lo[i], "high": hi[i]})
    return pd.DataFrame(rows)


def agreement(table: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Spearman rank correlation and top-1 agreement between every pair of importance columns."""
    rows = []
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            va, vb = table[a].to_numpy(float), table[b].to_numpy(float)
            ok = np.isfinite(va) & np.isfinite(vb)
            rho = float(spearmanr(va[ok], vb[ok]).statistic) if ok.sum() >= 3 else math.nan
            same = bool(ok.any() and table["param"][ok].iloc[np.argmax(va[ok])]
                        == table["param"][ok].iloc[np.argmax(vb[ok])])
            rows.append({"method_a": a, "method_b": b, "spearman": rho, "same_top": same})
    return pd.DataFrame(rows, columns=["method_a", "method_b", "spearman", "same_top"])


def _empty(specs, target, n, methods) -> ImportanceResult:
    table = pd.DataFrame({"param": [s.name for s in specs], "importance": math.nan, "ci_low": math.nan,
                          "ci_high": math.nan, "rank": range(1, len(specs) + 1), "within_noise": True})
    for m in methods:
        table[m] = table[f"{m}_ci_low"] = table[f"{m}_ci_high"] = math.nan
    return ImportanceResult(target, n, 0, table, pd.DataFrame(columns=["param", "value", "pos", "mean", "low",
                            "high"]), {"applied": math.nan, "seed": math.nan}, {}, agreement(table, []), None)


def interaction_grid(result: ImportanceResult, a: str, b: str, n_grid: int = 15) -> pd.DataFrame:
    """Joint main effect of hyperparameters `a` and `b` (GP, others averaged): a, b, a_pos, b_pos, mean."""
    gp, specs, groups, mc, y_mean, y_sd = result.gp_state
    ia, ib = (next(i for i, s in enumerate(specs) if s.name == p) for p in (a, b))
    ga, va = _encode.grid(specs[ia], n_grid)
    gb, vb = _encode.grid(specs[ib], n_grid)
    rows, blocks = [], []
    for i in range(len(ga)):
        for j in range(len(gb)):
            Xg = mc.copy()
            Xg[:, groups[ia]] = ga[i]
            Xg[:, groups[ib]] = gb[j]
            blocks.append(Xg)
            rows.append({"a": va[i], "b": vb[j], "a_pos": i, "b_pos": j})
    pred = gp.predict(np.vstack(blocks)).reshape(len(blocks), len(mc)).mean(axis=1)
    out = pd.DataFrame(rows)
    out["mean"] = pred * y_sd + y_mean
    return out
