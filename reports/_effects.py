"""The local design's effects: each move's paired difference from the center, with a 95% interval, and each
hyperparameter's importance (compute only: DataFrames and frozen dataclasses; `reports._verdict` decides what they
mean, `reports._wording` says it).

The center and every move are trained with the same seeds, so seed s of a move and seed s of the center share the
data order (and the initialisation, where the move keeps the model's tensors). A move's effect is the mean over
seeds of the paired difference d_s = y(move, s) - y(center, s), y being the trial's best val_bpc. A diverged or
failed trial counts as the uniform guess, log2(vocabulary size): it learned nothing.

Intervals. With S seeds a move's own variance has S - 1 degrees of freedom (one, by default), so the variance of a
paired difference is pooled: it is twice the residual mean square of the additive fit configuration + seed over
the center and the moves of one pool (a randomized-block ANOVA). The center enters that fit once, not once per move,
so its own seed deviations, shared by every move's differences, are not counted as many independent ones. Moves that
keep the model's tensors and moves that change them (`SHAPE_PARAMS`: no common initialisation, so noisier) are two
pools. A pool with fewer than `MIN_DF` degrees of freedom takes the fit over every configuration instead, never
below its own estimate. The variance is fitted on trials that trained normally; a move with a diverged or failed
trial in its pairs takes the larger of the pooled and its own paired variance.

A hyperparameter's importance is the largest |effect| among its moves. Its interval holds all at once for every
hyperparameter: each move's interval at level 1 - 0.05 / K (Bonferroni over the K moves) bounds |effect| in
[max(0, |e| - q se), |e| + q se], and the largest |effect| of a hyperparameter then lies between the largest lower
and the largest upper bound of its moves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from reports._load import RunData
from reports._steps import FORMED_BITS, unigram_bpc
from runcontract import FINISHED, LOCAL, SEARCH, TRAINED

# Moves of these change the model's tensors: seed s of such a move and of the center share the data order but not
# the initialisation. Every other hyperparameter (lr_scale, optimizer, dropout, grad_clip, train_chars, seq_len,
# ...) keeps them.
SHAPE_PARAMS = ("hidden_size", "num_layers", "embedding_dim", "cell")
SAME_SHAPE, SHAPE = "same shape", "shape changing"
LEVEL = 0.95
MIN_DF = 4  # a pool with fewer degrees of freedom borrows the fit over every configuration
N_DRAWS = 4000  # parametric draws for the probability of ranking first


@dataclass(frozen=True)
class Pool:
    """The noise of one paired difference in one pool of moves: `sd` with `df` degrees of freedom."""

    name: str
    sd: float
    df: int
    n_moves: int
    fallback: bool = False  # too few df of its own: the fit over every configuration (never below its own)


@dataclass(frozen=True)
class LocalEffects:
    """The local design, measured.

    `moves`: one row per move in the study's order (param, label, kind, value, pool, n_seeds, effect, se, df, sd,
    ci_low, ci_high, n_failed, center_failed, diverges: it diverged or failed in every seed). `params`: one row per
    searched hyperparameter, by importance over the moves that trained in every seed (param, moved, n_moves,
    importance, imp_low, imp_high, label, kind, effect, ci_low, ci_high, p_first, rank, search_test, search_p).
    Bits/char throughout; `center_sd` is the center's spread over its seeds (one seed's noise), the pools' `sd` that
    of one paired difference.
    """

    budget_chars: float
    steps: float
    seeds: tuple[int, ...]
    center: dict
    chosen: dict | None
    uniform: float
    moves: pd.DataFrame
    params: pd.DataFrame
    pools: dict[str, Pool]
    center_mean: float
    center_sd: float
    center_n: int
    center_failed: int
    n_trained: int  # local trials that trained normally (not diverged or failed)
    n_formed: int  # ... and were FORMED_BITS below the unigram baseline
    unigram: float
    rank_tests: pd.DataFrame
    level: float = LEVEL
    random_state: int = 0
    center_from: str = "search"  # "spec": the spec's fixed center (local.center), the same for every seed


def uniform_bpc(run: RunData) -> float:
    """Bits per character of guessing uniformly over the corpus vocabulary (study.json's corpus.vocab_size; inf
    when unknown or the metric is not val_bpc): what a trial that learned nothing scores."""
    vocab = (run.study.get("corpus") or {}).get("vocab_size")
    if run.metric != "val_bpc" or not isinstance(vocab, (int, float)) or not vocab > 1:
        return math.inf
    return math.log2(vocab)


def _residual(y: np.ndarray, ok: np.ndarray, rows: list[int]) -> tuple[float, int]:
    """Residual mean square and degrees of freedom of configuration + seed fitted to the cells of `rows` that are
    finite and trained normally."""
    sub, good = y[rows], ok[rows] & np.isfinite(y[rows])
    r, c = np.nonzero(good)
    if len(r) == 0:
        return math.nan, 0
    x = np.zeros((len(r), sub.shape[0] + sub.shape[1]))
    x[np.arange(len(r)), r] = 1.0
    x[np.arange(len(r)), sub.shape[0] + c] = 1.0
    v = sub[r, c]
    coef, *_ = np.linalg.lstsq(x, v, rcond=None)
    df = len(v) - int(np.linalg.matrix_rank(x))
    return (float(((v - x @ coef) ** 2).sum()) / df if df > 0 else math.nan), df


def paired_effects(y: np.ndarray, ok: np.ndarray, shape: np.ndarray, *, level: float = LEVEL,
                   min_df: int = MIN_DF) -> tuple[pd.DataFrame, dict[str, Pool]]:
    """Every move's paired effect and its t-interval (see the module docstring).

    Args:
        y: (1 + M, S) scores, row 0 the center and row 1 + m move m, column s seed s; NaN where a trial is missing.
            A diverged or failed trial already holds the uniform guess.
        ok: like `y`, True where the trial trained normally.
        shape: (M,) True for a move that changes the model's tensors.
        level: the intervals' coverage.
        min_df: a pool with fewer degrees of freedom borrows the overall fit.

    Returns:
        A frame of M rows (effect, n_seeds, sd, df, se, ci_low, ci_high, pool, own_sd) and the pools by name.
    """
    y, ok, shape = np.asarray(y, float), np.asarray(ok, bool), np.asarray(shape, bool)
    d = y[1:] - y[0]
    n = np.isfinite(d).sum(axis=1)
    effect = np.where(n > 0, np.nansum(d, axis=1) / np.maximum(n, 1), math.nan)
    dev = np.where(np.isfinite(d), d - effect[:, None], 0.0)
    own = np.where(n > 1, np.sqrt((dev ** 2).sum(axis=1) / np.maximum(n - 1, 1)), math.nan)
    ms_all, df_all = _residual(y, ok, list(range(len(y))))
    pools: dict[str, Pool] = {}
    sd, df = np.full(len(d), math.nan), np.zeros(len(d), int)
    for name, members in ((SAME_SHAPE, ~shape), (SHAPE, shape)):
        idx = np.flatnonzero(members)
        ms, dof = _residual(y, ok, [0, *(1 + idx)]) if len(idx) else (math.nan, 0)
        fallback = bool(len(idx)) and dof < min_df
        if fallback:
            ms = max(ms if dof > 0 else 0.0, ms_all) if df_all > 0 else math.nan
            dof = df_all
        pools[name] = Pool(name, math.sqrt(2 * ms) if math.isfinite(ms) else math.nan, int(dof), len(idx), fallback)
        sd[idx], df[idx] = pools[name].sd, dof
    failed = ~(ok[1:] | ~np.isfinite(y[1:])) | ~(ok[0] | ~np.isfinite(y[0]))
    flagged = (failed & np.isfinite(d)).any(axis=1) & np.isfinite(own)
    sd = np.where(flagged, np.fmax(sd, own), sd)
    se = sd / np.sqrt(np.maximum(n, 1))
    se = np.where(n > 0, se, math.nan)
    q = _quantile(0.5 + level / 2, df)
    out = pd.DataFrame({"effect": effect, "n_seeds": n, "sd": sd, "df": df, "se": se,
                        "pool": np.where(shape, SHAPE, SAME_SHAPE), "own_sd": own,
                        "ci_low": effect - q * se, "ci_high": effect + q * se})
    return out, pools


def _quantile(p: float, df: np.ndarray) -> np.ndarray:
    df = np.asarray(df, float)
    return np.where(df > 0, stats.t.ppf(p, np.where(df > 0, df, 1.0)), math.nan)


def importance(moves: pd.DataFrame, names: list[str], *, level: float = LEVEL, random_state: int = 0,
               n_draws: int = N_DRAWS) -> pd.DataFrame:
    """Each hyperparameter's importance (its largest |effect|), a simultaneous interval for it, and the share of
    parametric draws (each move's effect from its t sampling distribution) in which it is the largest.

    Args:
        moves: `paired_effects`' frame with `param`, `label` and `kind` columns.
        names: every searched hyperparameter, in the spec's order (ties and unmoved ones keep it).
        level: the joint coverage of the intervals (Bonferroni over the moves that have one).
        random_state: seed of the draws; same seed, same result.
        n_draws: draws for `p_first`.

    Returns:
        One row per hyperparameter (see `LocalEffects`), by importance, unmoved ones last.
    """
    m = moves.reset_index(drop=True)
    effect, se, df = (m[c].to_numpy(float) for c in ("effect", "se", "df"))
    has = np.isfinite(se)
    q = _quantile(1 - (1 - level) / (2 * max(int(has.sum()), 1)), df)
    mag = np.abs(effect)
    lo, hi = np.maximum(0.0, mag - q * se), mag + q * se
    params, labels, kinds = (m[c].to_numpy(object) for c in ("param", "label", "kind"))
    ci_low, ci_high = m["ci_low"].to_numpy(float), m["ci_high"].to_numpy(float)
    draws = None
    if len(m) and has.all() and n_draws > 0:
        t = np.random.default_rng(random_state).standard_t(df[:, None], (len(m), n_draws))
        draws = np.abs(effect[:, None] + se[:, None] * t)
    rows, best = [], []
    for name in names:
        idx = np.flatnonzero((params == name) & np.isfinite(mag))
        row: dict = {"param": name, "moved": bool((params == name).any()), "n_moves": len(idx)}
        if len(idx):
            top = idx[np.argmax(mag[idx])]
            row.update(importance=mag[top], imp_low=float(lo[idx].max()), imp_high=float(hi[idx].max()),
                       label=labels[top], kind=kinds[top], effect=effect[top], ci_low=ci_low[top],
                       ci_high=ci_high[top])
            if draws is not None:
                best.append((len(rows), draws[idx].max(axis=0)))
        rows.append(row)
    t = pd.DataFrame(rows).reindex(columns=["param", "moved", "n_moves", "importance", "imp_low", "imp_high",
                                            "label", "kind", "effect", "ci_low", "ci_high"])
    t["p_first"] = math.nan
    if best:
        first = np.argmax(np.stack([b for _, b in best]), axis=0)
        t.loc[[i for i, _ in best], "p_first"] = [float((first == j).mean()) for j in range(len(best))]
    t["_order"] = range(len(t))
    t = t.sort_values(["importance", "_order"], ascending=[False, True], na_position="last", kind="stable")
    t["rank"] = [i + 1.0 if math.isfinite(v) else math.nan for i, v in enumerate(t["importance"].astype(float))]
    return t.drop(columns="_order").reset_index(drop=True)


def rank_tests(run: RunData) -> pd.DataFrame:
    """The plain statistics check on the search trials that trained normally: per hyperparameter, Spearman's test
    (numeric) or Kruskal-Wallis (categorical) of log(best_val_bpc) against its value over the whole space."""
    t = run.trials
    t = t[(t["role"] == SEARCH) & t["status"].isin(TRAINED) & (t["best_val_bpc"] > 0)]
    y = np.log(t["best_val_bpc"].to_numpy(float))
    rows = []
    for p in run.params:
        x = t[p.column]
        stat = pval = math.nan
        try:
            if p.is_categorical:
                groups = [y[(x == v).to_numpy()] for v in pd.unique(x.dropna())]
                groups = [g for g in groups if len(g)]
                if len(groups) >= 2 and len(np.unique(y)) > 1:
                    stat, pval = stats.kruskal(*groups)
            elif len(y) >= 3 and x.nunique() > 1:
                r = stats.spearmanr(x.to_numpy(float), y)
                stat, pval = r.statistic, r.pvalue
        except ValueError:  # scipy refuses degenerate samples
            pass
        rows.append({"param": p.name, "search_test": "Kruskal-Wallis" if p.is_categorical else "Spearman",
                     "statistic": float(stat), "search_p": float(pval), "n": len(y)})
    return pd.DataFrame(rows, columns=["param", "search_test", "statistic", "search_p", "n"])


def _same(a: object, b: object) -> bool:
    """A trial's value of the moved hyperparameter is the move's (floats within a relative 1e-6)."""
    if a is None or b is None:
        return False
    if str(a) == str(b):
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


def _moves(spec: dict, local: pd.DataFrame, moved: pd.Series) -> list[dict]:
    """The moves as study.json lists them; for a run without the list, as the trials show them (creation order)."""
    given = [m for m in spec.get("moves") or [] if isinstance(m, dict) and "param" in m]
    if given:
        return [{"param": str(m["param"]), "value": m.get("value"), "label": str(m.get("label", m.get("value"))),
                 "kind": str(m.get("kind", "choice"))} for m in given]
    out: list[dict] = []
    for i, name in moved[moved != ""].items():
        v = local.at[i, f"param.{name}"] if f"param.{name}" in local else None
        if not any(m["param"] == name and _same(m["value"], v) for m in out):
            out.append({"param": name, "value": v, "label": str(v), "kind": "choice"})
    return out


def _center_of(local: pd.DataFrame, moved: pd.Series, names: list[str]) -> dict:
    rows = local[moved == ""]
    if rows.empty:
        return {}
    return {n: rows[f"param.{n}"].iloc[0] for n in names if f"param.{n}" in rows}


def local_effects(run: RunData, *, random_state: int = 0, level: float = LEVEL,
                  n_draws: int = N_DRAWS) -> LocalEffects | None:
    """Measure the local design of a run (trials with role "local", study.json's "local").

    Args:
        run: the run, from `load_run`.
        random_state: seed of the draws for the probability of ranking first.
        level: the intervals' coverage.
        n_draws: those draws.

    Returns:
        `LocalEffects`, or None when the run has no local design (runs made before it).
    """
    spec = run.study.get("local") if isinstance(run.study.get("local"), dict) else {}
    local = run.trials[run.trials["role"] == LOCAL]
    if local.empty and not spec:
        return None
    if "trial_index" in local:
        local = local.sort_values("trial_index", kind="stable")
    local = local[local["status"].isin(FINISHED)]
    moved = local["moved"].fillna("").astype(str) if "moved" in local else pd.Series("", index=local.index)
    uniform = uniform_bpc(run)
    good = local["status"].isin(TRAINED) & np.isfinite(local["best_val_bpc"])
    score = local["best_val_bpc"].where(good, uniform if math.isfinite(uniform) else math.nan).astype(float)
    seed_col = local["seed"] if "seed" in local else pd.Series(0, index=local.index)
    seeds = [int(s) for s in spec.get("seeds") or sorted(pd.to_numeric(seed_col).dropna().astype(int).unique())]
    moves = _moves(spec, local, moved)
    y, ok = np.full((1 + len(moves), len(seeds)), math.nan), np.zeros((1 + len(moves), len(seeds)), bool)
    present = np.zeros_like(ok)
    for i in local.index:
        try:
            j = seeds.index(int(seed_col[i]))
        except (ValueError, TypeError):
            continue
        name = moved[i]
        row = 0 if name == "" else next((1 + k for k, m in enumerate(moves) if m["param"] == name and _same(
            m["value"], local.at[i, f"param.{name}"] if f"param.{name}" in local else None)), None)
        if row is not None and not present[row, j]:  # the first trial of a cell (in creation order) counts
            y[row, j], ok[row, j], present[row, j] = score[i], bool(good[i]), True
    names = [p.name for p in run.params]
    names += [m["param"] for m in moves if m["param"] not in names]
    shape = np.array([m["param"] in SHAPE_PARAMS for m in moves], bool)
    fx, pools = paired_effects(y, ok, shape, level=level)
    failed = present & ~ok
    m = pd.DataFrame(moves, columns=["param", "value", "label", "kind"])
    m = pd.concat([m.reset_index(drop=True), fx], axis=1)
    m["n_failed"] = failed[1:].sum(axis=1).astype(int)
    m["center_failed"] = [int((failed[0] & present[1 + k]).sum()) for k in range(len(moves))]
    # A move that diverged or failed in a seed has no effect to measure there, only a finding: training breaks (in
    # every seed: `diverges`) or is unstable (in some). It stays in the table (scored as the uniform guess) but is
    # not ranked: its "effect" would be mostly the distance from the center to a uniform guess, whatever the
    # hyperparameter (one broken seed of two made cell rnn_relu "+1.93 bits/char, 95% CI -2.56 to +6.42" the leader).
    m["diverges"] = (m["n_failed"] > 0) & (m["n_failed"] == present[1:].sum(axis=1))
    params = importance(m[m["n_failed"] == 0], names, level=level, random_state=random_state, n_draws=n_draws)
    params["moved"] = params["param"].isin(set(m["param"]))  # moved, even where every move broke training
    tests = rank_tests(run)
    params = params.merge(tests[["param", "search_test", "search_p"]], on="param", how="left")
    c, c_ok = y[0], ok[0]
    uni = unigram_bpc(run)
    trained = score[good].to_numpy(float)
    return LocalEffects(
        budget_chars=float(spec.get("budget_chars") or (local["chars_seen"].max() if len(local) else math.nan)),
        steps=float(spec["steps"]) if isinstance(spec.get("steps"), (int, float)) else math.nan,
        seeds=tuple(seeds), center=dict(spec.get("center") or _center_of(local, moved, names)),
        chosen=spec.get("chosen") if isinstance(spec.get("chosen"), dict) else None, uniform=uniform, moves=m,
        params=params, pools=pools,
        center_mean=float(np.nanmean(c)) if np.isfinite(c).any() else math.nan,
        center_sd=float(np.std(c[c_ok], ddof=1)) if c_ok.sum() > 1 else math.nan,
        center_n=int(np.isfinite(c).sum()), center_failed=int(failed[0].sum()), n_trained=len(trained),
        n_formed=int((trained <= uni - FORMED_BITS).sum()) if math.isfinite(uni) else 0, unigram=uni,
        rank_tests=tests, level=level, random_state=random_state,
        center_from="spec" if spec.get("center_from") == "spec" else "search")
