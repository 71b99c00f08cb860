"""Hyperparameter importance with bootstrap confidence intervals, by two independent methods.

- "fanova": functional ANOVA main effects (Hutter et al. 2014) of a Gaussian-process surrogate with an
  additive-plus-interaction kernel (`_gp.AdditiveGP`). On ~50 noisy trials a fully grown random forest
  (Optuna's default fANOVA) splits on noise and gives irrelevant hyperparameters several percent each; the
  GP's per-hyperparameter amplitudes switch irrelevant inputs off instead. A hyperparameter's importance is
  the variance of its main effect over the search space (log scale where the spec says so) divided by the
  total variance of the target there, noise included (what the GP cannot predict for a left-out trial).
- "permutation": boosted trees (depth 2) fitted on each bootstrap resample, scored on the trials left out of it
  (out-of-bag); importance is the rise in squared error when one hyperparameter is replaced by random
  draws of it, over 2 * Var(y) (equal to the variance share for an additive response).

Both estimates are means over bootstrap resamples of the trials (bagging; the single full-data GP fit is kept
as `fanova_full`). `p_first` is the share of resamples in which a hyperparameter has the largest importance:
whether the data settle which one is first.

For "fanova" the GP's kernel hyperparameters (which inputs matter, how smooth, how noisy) are fitted once, on
all trials, and held fixed on every resample; only the posterior is recomputed. Refitting them on every resample
let the marginal likelihood switch an input on in one resample and off in the next. The interval is not the
spread of the resampled posterior means, which ignores what the surrogate does not know (it held the true share
in 75-83% of known-answer cases, `python -m benchmarks.calibrate`): each resample contributes one draw of every
main-effect curve from its GP posterior (`AdditiveGP.main_effect_draws`), one draw of the variance no
hyperparameter explains (`noise_draw`) and one of the interactions'
(`interaction_draw`), and the interval is the percentiles of those draws' shares (see the coverage table in
docs/report.md). For "permutation" the interval is the percentiles of
the resamples. What the intervals leave out is the choice between hyperparameters the search never varied
independently; the permutation method, refitted from scratch, is the check on that.

Both fits carry a "null probe", a column of random numbers redrawn on every resample (for "fanova" its own
amplitude and length scale are refitted each time, from switched on): its bootstrap distribution is the
importance a hyperparameter with no effect gets from the same estimator. Because an input the full fit switched
off keeps an interval a millionth wide, the floor never goes below `RESOLUTION`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sklearn
from scipy.stats import norm, spearmanr, t as student_t
from sklearn.ensemble import GradientBoostingRegressor
from threadpoolctl import threadpool_limits

from reports import _encode
from reports._gp import AdditiveGP
from reports._load import ParamSpec

METHODS = ("fanova", "permutation")
NULL_QUANTILE = 0.95
RESOLUTION = 0.01  # smallest share called an effect: the report prints shares as whole percentages
LEVEL = 0.95  # the intervals' coverage


def interval_levels(n: int, level: float = LEVEL) -> tuple[float, float]:
    """The percentiles of the bootstrap draws that make a `level` interval from `n` trials: the expanded percentile
    interval (Hesterberg 2015, "What teachers should know about the bootstrap", The American Statistician 69:4). A
    plain percentile interval is too narrow in small samples, as a z interval with the sample's sd would be (it leaves
    out both the n-1 and the t quantile); the expanded one takes the tail 2 Phi(-sqrt(n/(n-1)) t_{n-1}) instead
    of 1 - level: 1.1% a side at 12 trials, 1.5% at 19, 2.1% at 50, 2.5% as n grows.
    Whether they hold the truth is measured on known answers (`python -m benchmarks.calibrate`; the figures are in
    docs/report.md)."""
    if n < 3:
        return (1 - level) / 2, (1 + level) / 2
    z = math.sqrt(n / (n - 1)) * float(student_t.ppf((1 + level) / 2, n - 1))
    tail = float(norm.cdf(-z))
    return tail, 1 - tail


MAX_FIT = 300  # trials the GP is fitted on (see `_compute_importance`)
HYPER_FIT = 150  # trials its kernel hyperparameters are fitted on
KAPPA_ROWS = 256  # search-space points for the double average of the kernel (posterior draws)


@dataclass(frozen=True)
class Surrogate:
    """The GP fitted on all trials, with what is needed to evaluate it in hyperparameter units."""

    gp: AdditiveGP
    specs: list[ParamSpec]
    base: np.ndarray  # uniform search-space points the other hyperparameters are averaged over
    y_mean: float
    y_sd: float
    y: np.ndarray | None = None  # standardized targets of the rows the GP holds (gp.X_)
    total: float = math.nan  # total variance in standardized units (the shares' denominator)


@dataclass(frozen=True)
class ImportanceResult:
    """Importance of each hyperparameter for one target.

    table: one row per hyperparameter, sorted by rank: param, importance, ci_low, ci_high, rank,
        within_noise, p_first (share of bootstrap resamples in which it ranks first), and per method `M`,
        `M_ci_low`, `M_ci_high` (plus Optuna reference columns).
    marginals: main effect of each hyperparameter on the target (GP): param, value, pos, mean, low, high.
    floors: null-probe floor per method ("null_M") and the floor applied to mark `within_noise`.
    fit: total variance of y over the search space ("total_var", y's units squared), surrogate quality
        (leave-one-out R^2 of the GP, median out-of-bag R^2 of the boosted trees) and the shares of
        variance left to interactions and noise.
    """

    target: str
    n_trials: int
    n_bootstrap: int
    table: pd.DataFrame
    marginals: pd.DataFrame
    floors: dict[str, float]
    fit: dict[str, float]
    agreement: pd.DataFrame
    surrogate: Surrogate | None = None  # the full-data GP, for the interaction grid


def _main_effects(gp: AdditiveGP, grids: list[np.ndarray], weights: list[np.ndarray], mc: np.ndarray,
                  mc_total: np.ndarray, unexplained: float,
                  draw: tuple[np.ndarray, np.random.Generator, float] | None = None
                  ) -> tuple[np.ndarray, list[np.ndarray], float, np.ndarray | None]:
    """Shares of variance of each group's main effect, the main-effect curves and the total variance
    (`unexplained` included), all in standardized units. With `draw` = (kernel means, rng, a draw of the
    unexplained variance), also the shares of one draw of every main-effect curve from the GP posterior (what
    the surrogate does not know) over that draw's total."""
    m_base = gp.base_kernels(mc)
    pd_ks = [gp.pd_kernel(mc, [j], g, m_base) for j, g in enumerate(grids)]
    curves = [pk @ gp.alpha_ for pk in pd_ks]
    main = [float(w @ (f - w @ f) ** 2) for f, w in zip(curves, weights)]
    # The last group is the null probe, a column of random numbers: what it explains is the estimator's error, not
    # a part of the study's variance, so it leaves the total (left in, it took a share from every real input: lr's
    # true 96% in the calibration's `steps` shape read as 85-92%). Main effects cannot explain more than the
    # whole; the guard absorbs Monte Carlo error in the total.
    probe = main[-1]
    total = max(float(np.var(gp.predict(mc_total))) - probe, sum(main) - probe) + unexplained
    drawn = None
    if draw is not None:
        kappa, rng, unexplained_d = draw
        curves_d = [gp.main_effect_draws(j, g, pk, kappa, 1, rng)[0] for j, (g, pk) in enumerate(zip(grids, pd_ks))]
        main_d = np.array([float(w @ (f - w @ f) ** 2) for f, w in zip(curves_d, weights)])
        # The drawn function's total: its own main effects (the probe's left out), a draw of the interactions
        # (interaction_draw), the drawn noise.
        interactions = max(0.0, total - unexplained - (sum(main) - probe))
        error = max(0.0, unexplained - gp.noise)
        drawn = main_d / (interaction_draw(interactions, error, rng) + unexplained_d + main_d[:-1].sum())
    return np.array(main) / total, curves, total, drawn


def noise_draw(noise: float, unexplained: float, rng: np.random.Generator) -> float:
    """One draw of the variance no hyperparameter explains, between the two values one study brackets it by.

    The GP's own noise term is the least it can be: an interaction fitted to a few trials takes up part of the
    seed noise and leaves the noise term at its bound (0.3% of the variance where 4% is noise, in the
    calibration's `steps` shape). The mean squared leave-one-out residual (the point estimate's choice) is the
    most: it also holds the surrogate's own error of prediction from n - 1 trials, twice the noise at 20 trials.
    One study cannot say where between them the seed noise lies, so each resample draws it uniformly between
    the two. Held at the upper end, it was the one part of every share's denominator without uncertainty, and a
    leader near 100% got an interval that could not reach its truth (lr's true 96% held in 4 of 10 studies).
    """
    return noise + (unexplained - noise) * float(rng.random())


def interaction_draw(interactions: float, error: float, rng: np.random.Generator) -> float:
    """One draw of the variance the surrogate puts in interactions, for the denominator of a main effect's share:
    uniformly between its estimate less the surrogate's own error of prediction (`error`: the leave-one-out
    residual less the GP's noise term) and the estimate.

    The estimate is the variance of a fitted function, and the variance of a function estimated from a few dozen
    noisy trials exceeds the true one by the estimate's own error, which has nowhere to go but the interaction
    term when the truth is additive: in the calibration's `steps` shape (no interaction, lr 96% of the variance,
    20 trials) the GP put 1.5-7% of the variance there, lr's interval topped out at 93-95%, and 79 of 90 main-effect
    intervals held on harness seed 2. How much of it is that error one study cannot say (as for the noise,
    `noise_draw`), but not more than the surrogate's error at the trials; drawn down to 0 instead, a real
    interaction (69% in the `interaction` shape) lifted every main effect's interval above its truth.
    """
    return interactions - min(interactions, error) * float(rng.random())


def _probe_reopened(theta: np.ndarray, k: int, amp: float = 0.05,
                    length: float = 0.5) -> tuple[np.ndarray, list[int]]:
    """Kernel hyperparameters for the resamples: the full fit's, held fixed, except the probe's own amplitude and
    length scale (the last group), which restart switched on and are refitted to each resample's fresh probe."""
    t = theta.copy()
    t[k - 1], t[2 * k - 1] = math.log(amp), math.log(length)
    return t, [k - 1, 2 * k - 1]


def _loo_r2(gp: AdditiveGP, y: np.ndarray) -> float:
    return float(1.0 - np.mean(gp.loo_residuals() ** 2) / np.var(y))


def _permutation_oob(X: np.ndarray, y: np.ndarray, idx: np.ndarray, groups: list[np.ndarray],
                     rng: np.random.Generator, n_repeats: int = 4) -> tuple[np.ndarray, float]:
    oob = np.setdiff1d(np.arange(len(y)), idx)
    if len(oob) < 3:
        return np.full(len(groups), np.nan), math.nan
    forest = GradientBoostingRegressor(n_estimators=150, max_depth=2, learning_rate=0.05, subsample=0.8,
                                       random_state=int(rng.integers(2 ** 31)))
    with sklearn.config_context(skip_parameter_validation=True):  # 150 stages x resamples: validation is slow
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
                       *, target: str = "val_bpc", n_bootstrap: int = 100, random_state: int = 0,
                       methods: tuple[str, ...] = METHODS, n_grid: int = 21, n_mc: int = 1024) -> ImportanceResult:
    """Importance of each hyperparameter for `y`, with percentile bootstrap intervals over trials.

    Args:
        specs: the searched hyperparameters.
        params: one row per trial with the `param.NAME` columns, aligned with `y`.
        y: the target (e.g. each trial's best val_bpc up to one budget); must be finite.
        target: name of the target, for labels.
        n_bootstrap: bootstrap resamples of the trials (0 gives point estimates only).
        random_state: seed of every random choice (resamples, probes, surrogates).
        methods: subset of ("fanova", "permutation"); the first one gives the `importance` column.
        n_grid: grid points per numeric hyperparameter for main effects.
        n_mc: uniform search-space points over which the other hyperparameters are averaged.

    Returns:
        An `ImportanceResult`.
    """
    # Hundreds of small (n x n) factorizations: threaded BLAS only adds contention here (6x slower
    # on a busy 2-core machine).
    with threadpool_limits(1, user_api="blas"):
        return _compute_importance(list(specs), params, np.asarray(y, dtype=float), target, n_bootstrap,
                                   random_state, tuple(methods), n_grid, n_mc)


def _compute_importance(specs: list[ParamSpec], params: pd.DataFrame, y: np.ndarray, target: str,
                        n_bootstrap: int, random_state: int, methods: tuple[str, ...], n_grid: int,
                        n_mc: int) -> ImportanceResult:
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
    weights = [_encode.grid_weights(s, n_grid) for s in specs] + [_encode.grid_weights(None, n_grid)]
    mc_params = _encode.sample_space(specs, n_mc, rng)
    mc = np.hstack([mc_params, rng.random((n_mc, 1))])
    mc_total = np.hstack([_encode.sample_space(specs, 2 * n_mc, rng), rng.random((2 * n_mc, 1))])
    k = len(specs)

    point: dict[str, np.ndarray] = {}
    boot = {m: np.full((n_bootstrap, k + 1), np.nan) for m in methods}
    fit: dict[str, float] = {}
    full_probe = rng.random(n)
    Xf = np.hstack([X, full_probe[:, None]])
    # Past MAX_FIT trials the GP is fitted on MAX_FIT of them (drawn at random), and each resample draws MAX_FIT
    # with replacement (an m-out-of-n bootstrap: intervals as wide as a MAX_FIT-trial study's, so conservative).
    # A GP costs n^3 per fit; a few hundred trials already pin down main effects over ~10 hyperparameters.
    m = min(n, MAX_FIT)
    sub = np.sort(rng.choice(n, m, replace=False)) if n > m else np.arange(n)
    if n > m:
        fit["subsampled"] = float(m)
    gp = None
    if "fanova" in methods:
        # Kernel hyperparameters from at most HYPER_FIT trials (each optimizer step costs k n^2), the posterior
        # from all `m`.
        hyp = sub if m <= HYPER_FIT else np.sort(rng.choice(sub, HYPER_FIT, replace=False))
        gp = AdditiveGP(all_groups, random_state=random_state).fit(Xf[hyp], ys[hyp])
        if len(hyp) < m:
            gp = AdditiveGP(all_groups).fit(Xf[sub], ys[sub], theta0=gp.theta, free=[])
            fit["hyper_fit_trials"] = float(len(hyp))
    if gp is not None:
        # What the GP cannot predict out of sample is noise to the decomposition. Its own noise term is not
        # enough: the interaction kernel over inputs with short length scales acts as a nugget, soaks up seed
        # noise at the trials and vanishes between them, which left the total short and every share too high
        # (on synthetic studies the noise term sat at its bound, 0.1%, where 7% of the variance is noise).
        unexplained = max(gp.noise, float(np.mean(gp.loo_residuals() ** 2)))
        point["fanova"], curves, total, _ = _main_effects(gp, grids, weights, mc, mc_total, unexplained)
        fit["total_var"] = total * y_sd ** 2
        fit["gp_loo_r2"] = _loo_r2(gp, ys[sub])
        fit["gp_noise_share"] = unexplained / total
        fit["interaction_share"] = max(0.0, 1.0 - fit["gp_noise_share"] - float(point["fanova"][:k].sum()))
        boot_theta, probe_free = _probe_reopened(gp.theta, len(all_groups))
    boot_curves = [np.full((n_bootstrap, len(g)), np.nan) for g in grids[:k]]
    drawn = {m: np.full((n_bootstrap, k + 1), np.nan) for m in methods}
    oob_r2 = []
    for b in range(n_bootstrap):
        idx = rng.integers(0, n, m)
        Xb = np.hstack([X, rng.random((n, 1))])
        if "fanova" in methods:
            # Kernel hyperparameters (noise included) stay at the full fit's: duplicated trials in a resample
            # would otherwise look noise-free and make the GP interpolate.
            gpb = AdditiveGP(all_groups).fit(Xb[idx], ys[idx], theta0=boot_theta, free=probe_free)
            kappa = gpb.kernel_means(mc[:KAPPA_ROWS])
            boot["fanova"][b], cb, _, drawn["fanova"][b] = _main_effects(
                gpb, grids, weights, mc, mc_total, unexplained, (kappa, rng, noise_draw(gp.noise, unexplained, rng)))
            for j in range(k):
                boot_curves[j][b] = cb[j]
        if "permutation" in methods:
            boot["permutation"][b], r2 = _permutation_oob(Xb, ys, idx, all_groups, rng)
            oob_r2.append(r2)
    # With very few trials some resamples leave too few trials out to score: all-NaN columns are expected.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if "permutation" in methods:
            point["permutation"] = np.nanmean(boot["permutation"], axis=0) if n_bootstrap else np.zeros(k + 1)
            fit["trees_oob_r2"] = float(np.nanmedian(oob_r2)) if oob_r2 else math.nan
        full_fit = point["fanova"].copy() if "fanova" in point else None
        if "fanova" in methods and n_bootstrap:
            # Bagging: the estimate is the mean over the resamples. The single full-data fit is kept as
            # `fanova_full`; it can sit at the edge of its own bootstrap distribution when a few trials carry an
            # effect (on a real study: 25%, interval 2-28%, first in only 15% of the resamples).
            point["fanova"] = np.nanmean(boot["fanova"], axis=0)

        floors: dict[str, float] = {}
        for m in methods:
            probe = boot[m][:, k] if n_bootstrap else point[m][k:]
            floors[f"null_{m}"] = max(0.0, float(np.nanquantile(probe, NULL_QUANTILE)))
        primary = methods[0]
        floors["resolution"] = RESOLUTION
        floors["applied"] = max(floors[f"null_{primary}"], RESOLUTION)

        # Interval draws: for fanova one posterior draw of the GP per resample (the surrogate's own uncertainty on
        # top of the resampling of trials: the bootstrap of posterior means alone held the true share in 75-83%
        # of cases on `python -m benchmarks.calibrate`), for permutation the resamples themselves.
        spread = {m: (drawn[m] if m == "fanova" else boot[m]) for m in methods}
        table = pd.DataFrame({"param": names})
        for m in methods:
            lo, hi = ((np.nanquantile(spread[m][:, :k], q, axis=0) for q in interval_levels(n)) if n_bootstrap
                      else (point[m][:k], point[m][:k]))
            # A percentile interval of a biased estimator can miss its own point estimate; widen it to hold it.
            # Every share lies in [0, 1]: a permutation "share" (rise in error over 2 Var y) can exceed 1 when
            # the trees predict held-out trials badly.
            table[m] = np.clip(point[m][:k], 0, 1)
            table[f"{m}_ci_low"] = np.clip(np.minimum(lo, point[m][:k]), 0, 1)
            table[f"{m}_ci_high"] = np.clip(np.maximum(hi, point[m][:k]), 0, 1)
        if full_fit is not None:
            table["fanova_full"] = np.clip(full_fit[:k], 0, 1)
    table.insert(1, "importance", table[primary])
    table.insert(2, "ci_low", table[f"{primary}_ci_low"])
    table.insert(3, "ci_high", table[f"{primary}_ci_high"])
    table.insert(4, "rank", table["importance"].rank(ascending=False, method="first").astype(int))
    table.insert(5, "within_noise", table["ci_low"] <= floors["applied"])
    table.insert(6, "p_first", _p_first(spread[primary][:, :k]) if n_bootstrap else math.nan)
    table = table.sort_values("rank").reset_index(drop=True)

    marginals = _marginal_table(specs, n_grid, curves, boot_curves, y_mean, y_sd) if gp is not None else None
    state = Surrogate(gp, specs, mc, y_mean, y_sd, ys[sub], total) if gp is not None else None
    return ImportanceResult(target, n, n_bootstrap, table, marginals, floors, fit,
                            agreement(table, list(methods)), state)


def _p_first(draws: np.ndarray) -> np.ndarray:
    """Share of the bootstrap resamples in which each hyperparameter has the largest importance: how sure the
    ranking is of its first place (resamples where every estimate is missing are left out)."""
    ok = np.isfinite(draws).any(axis=1)
    if not ok.any():
        return np.full(draws.shape[1], math.nan)
    first = np.nanargmax(np.where(np.isfinite(draws[ok]), draws[ok], -np.inf), axis=1)
    return np.bincount(first, minlength=draws.shape[1]) / ok.sum()


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
            varied = ok.sum() >= 3 and np.ptp(va[ok]) > 0 and np.ptp(vb[ok]) > 0
            rho = float(spearmanr(va[ok], vb[ok]).statistic) if varied else math.nan
            same = bool(ok.any() and table["param"][ok].iloc[np.argmax(va[ok])]
                        == table["param"][ok].iloc[np.argmax(vb[ok])])
            rows.append({"method_a": a, "method_b": b, "spearman": rho, "same_top": same})
    return pd.DataFrame(rows, columns=["method_a", "method_b", "spearman", "same_top"])


def _empty(specs, target, n, methods) -> ImportanceResult:
    table = pd.DataFrame({"param": [s.name for s in specs], "importance": math.nan, "ci_low": math.nan,
                          "ci_high": math.nan, "rank": range(1, len(specs) + 1), "within_noise": True,
                          "p_first": math.nan})
    for m in methods:
        table[m] = table[f"{m}_ci_low"] = table[f"{m}_ci_high"] = math.nan
    return ImportanceResult(target, n, 0, table, pd.DataFrame(columns=["param", "value", "pos", "mean", "low",
                            "high"]), {"applied": math.nan}, {}, agreement(table, []), None)


def interaction_grid(result: ImportanceResult, a: str, b: str, n_grid: int = 15) -> pd.DataFrame:
    """Joint main effect of hyperparameters `a` and `b` (GP, others averaged): a, b, a_pos, b_pos, mean."""
    sur = result.surrogate
    specs = sur.specs
    ia, ib = (next(i for i, s in enumerate(specs) if s.name == p) for p in (a, b))
    ga, va = _encode.grid(specs[ia], n_grid)
    gb, vb = _encode.grid(specs[ib], n_grid)
    rows = [{"a": va[i], "b": vb[j], "a_pos": i, "b_pos": j} for i in range(len(ga)) for j in range(len(gb))]
    grid_rows = np.array([np.concatenate([ga[i], gb[j]]) for i in range(len(ga)) for j in range(len(gb))])
    with threadpool_limits(1, user_api="blas"):
        pred = sur.gp.partial_dependence(sur.base, [ia, ib], grid_rows)
    out = pd.DataFrame(rows)
    out["mean"] = pred * sur.y_sd + sur.y_mean
    return out


def _pair_rows(quad: list, a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The joint grid of hyperparameters a and b (a's index outer), its weights, and the map that keeps only the
    interaction of a function on it: weighted double centring, the second-order fANOVA term under the grid's
    product measure (what is left once both main effects and the mean are removed)."""
    (ra, wa), (rb, wb) = quad[a], quad[b]
    rows = np.hstack([np.repeat(ra, len(rb), axis=0), np.tile(rb, (len(ra), 1))])
    return rows, np.outer(wa, wb).ravel(), np.kron(_centring(wa), _centring(wb))


def _centring(w: np.ndarray) -> np.ndarray:
    """The map that subtracts a function's `w`-weighted mean from it."""
    return np.eye(len(w)) - np.outer(np.ones(len(w)), w)


def _pair_variance(gp: AdditiveGP, base: np.ndarray, js: list[int], rows: np.ndarray, w: np.ndarray,
                   project: np.ndarray, m_base: list[np.ndarray]) -> float:
    return float(w @ (project @ gp.partial_dependence(base, js, rows, m_base)) ** 2)


def interaction_shares(result: ImportanceResult, *, n_grid: int = 9, n_bootstrap: int = 100,
                       random_state: int = 0) -> pd.DataFrame:
    """Second-order fANOVA terms of the GP: the share of variance of each pair's interaction (the joint effect
    minus both main effects), for every pair of hyperparameters, largest first, with a 95% interval for the
    largest.

    The interval is built as the main effects' are: each bootstrap resample of the trials refits the GP's
    posterior (kernel hyperparameters held) and takes one draw of the pair's joint effect from it
    (`AdditiveGP.effect_draws`), the unexplained variance (`noise_draw`) and the pair's interaction variance within
    the surrogate's error of the drawn one (`interaction_draw`); the interval is the percentiles of
    those draws' interaction shares. The bootstrap of posterior means alone leaves out what the surrogate does
    not know, as it did for the main effects. `python -m benchmarks.calibrate` checks it against the true share of
    the pair the report names.

    Returns columns a, b, share, ci_low, ci_high (intervals NaN except on the first row).
    """
    sur = result.surrogate
    cols = ["a", "b", "share", "ci_low", "ci_high"]
    if sur is None or len(sur.specs) < 2 or not math.isfinite(sur.total):
        return pd.DataFrame(columns=cols)
    k = len(sur.specs)
    quad = [_encode.quadrature(s, n_grid) for s in sur.specs]
    quad = [(r, w) for r, _, w in quad]
    with threadpool_limits(1, user_api="blas"):
        m_base = sur.gp.base_kernels(sur.base)
        rows = []
        for i in range(k):
            for j in range(i + 1, k):
                g, w, proj = _pair_rows(quad, i, j)
                rows.append({"a": sur.specs[i].name, "b": sur.specs[j].name, "i": i, "j": j,
                             "share": _pair_variance(sur.gp, sur.base, [i, j], g, w, proj, m_base) / sur.total})
        out = pd.DataFrame(rows).sort_values("share", ascending=False).reset_index(drop=True)
        out["ci_low"] = out["ci_high"] = math.nan
        if n_bootstrap and sur.y is not None:
            i, j = int(out.loc[0, "i"]), int(out.loc[0, "j"])
            g, w, proj = _pair_rows(quad, i, j)
            center = _centring(w)
            joint = _pair_variance(sur.gp, sur.base, [i, j], g, w, center, m_base)  # both main effects + the pair's
            unexplained = sur.total * result.fit.get("gp_noise_share", 0.0)
            error = max(0.0, unexplained - sur.gp.noise)
            kappa = sur.gp.kernel_means(sur.base[:KAPPA_ROWS])  # depends on the kernel only, held on resamples
            rng = np.random.default_rng(random_state)
            n, draws = len(sur.y), []
            for _ in range(n_bootstrap):
                idx = rng.integers(0, n, n)
                # The interaction amplitude is refitted on the resample (the rest held): whether the pair
                # interacts at all is its decision, and held at the full fit's value every resample inherits an
                # interaction that a dozen trials switched on by chance (or a size they misjudged).
                gpb = AdditiveGP(sur.gp.groups).fit(sur.gp.X_[idx], sur.y[idx], theta0=sur.gp.theta,
                                                    free=[2 * sur.gp.k])
                pd_k = gpb.pd_kernel(sur.base, [i, j], g, gpb.base_kernels(sur.base))
                f = gpb.effect_draws([i, j], g, pd_k, kappa, 1, rng, center)[0]
                v, v_joint = float(w @ (proj @ f) ** 2), float(w @ f ** 2)
                # The drawn function's total: its own joint effect of the pair (both main effects, whose
                # uncertainty moves the share as much as the interaction's own), the drawn noise, the rest as
                # estimated.
                u = noise_draw(sur.gp.noise, unexplained, rng)
                # The pair's own interaction variance is the variance of a fitted function too: drawn within the
                # surrogate's error of it, as the interactions are in a main effect's total (interaction_draw).
                v_d = interaction_draw(v, error, rng)
                draws.append(v_d / (sur.total - joint - unexplained + u + v_joint - v + v_d))
            lo, hi = np.quantile(draws, interval_levels(n))
            out.loc[0, "ci_low"] = min(lo, out.loc[0, "share"])
            out.loc[0, "ci_high"] = max(hi, out.loc[0, "share"])
    out[["share", "ci_low", "ci_high"]] = out[["share", "ci_low", "ci_high"]].clip(0, 1)
    return out[cols]
