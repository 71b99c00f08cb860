"""Do the report's 95% intervals hold the truth? `python -m benchmarks.calibrate [--shapes ...] [--reps N]`.

Known-answer studies of the shapes real studies have: few-valued ints (num_layers 1-3), log floats (lr),
categoricals, an interaction (optimizer x lr_scale), trials stopped early by ASHA and trials that diverged
(NaN), 12 to 60 trials, and seed noise at the level measured in real runs (sd 0.03 bits/char at val_bpc 2.5,
i.e. 0.012 on log val_bpc, the scale the report fits). Trials are drawn as the sampler's startup phase draws them:
independently from each hyperparameter's distribution (a log int log-uniformly over the integers, as Optuna's
IntDistribution). For each replicate the harness builds a run in memory through the results contract's
`RunData`, runs the report's own estimator (`reports._analysis.fit_budget`, the function `analyze` calls: the
equal-budget choice, the log transform and `compute_importance`) and checks every hyperparameter's interval
against the true share.

The true share of hyperparameter j is Var_j(E[f | x_j]) / (Var f + noise variance), computed by Monte Carlo
over exactly the sampling distributions, in value space, with code independent of the report's encoder. An
interval "holds" the truth at the resolution the report prints: rounded to whole percentages, low <= truth
<= high (an irrelevant hyperparameter's truth is 0%, and an interval printed as 0%-1% holds it).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time

import numpy as np
import pandas as pd
from scipy.stats import beta

from benchmarks.synthetic import NOISE_LOG_SD, SHAPES, Shape, _from_unit, draw, stepped_run, synthetic_run
from reports._importance import RESOLUTION
from reports._load import ParamSpec


def _support(s: ParamSpec, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Values and weights that integrate over one hyperparameter's sampling distribution: every value of a
    categorical or of an int with at most 64 values, else the midpoints of `n_points` equal-probability strata
    (stratified quadrature: its error falls as 1/n^2 for a smooth effect, against 1/sqrt(n) for random draws)."""
    if s.is_categorical:
        return np.array(s.choices, dtype=object), np.full(len(s.choices), 1 / len(s.choices))
    if s.kind == "int" and (s.high - s.low) // s.step + 1 <= 64:
        vals = np.arange(s.low, s.high + 1, s.step, dtype=float)
        w = (np.log(vals + 0.5) - np.log(vals - 0.5)) if s.log else np.ones(len(vals))
        return vals, w / w.sum()
    return _from_unit(s, (np.arange(n_points) + 0.5) / n_points), np.full(n_points, 1 / n_points)


def _total(shape: Shape, rng: np.random.Generator) -> float:
    return float(np.var(shape.f(draw(shape.specs, 200_000, rng)))) + NOISE_LOG_SD ** 2


def true_shares(shape: Shape, *, n_outer: int = 400, n_inner: int = 2000, seed: int = 12345) -> dict[str, float]:
    """Var(E[f | x_j]) / (Var f + noise) for every hyperparameter, by Monte Carlo over the sampling distributions.

    Few-valued hyperparameters (categories, ints with at most 64 values) are integrated exactly over their values;
    the others over `n_outer` strata of their distribution (`_support`). The inner average uses one shared set
    of `n_inner` draws of the others (common random numbers).
    """
    rng = np.random.default_rng(seed)
    inner = draw(shape.specs, n_inner, rng)
    total = _total(shape, rng)
    out = {}
    for s in shape.specs:
        vals, w = _support(s, n_outer)
        m = np.array([shape.f({**inner, s.name: np.full(n_inner, v, dtype=object if s.is_categorical else float)})
                      .mean() for v in vals])
        out[s.name] = float(w @ (m - w @ m) ** 2) / total
    return out


def pair_key(a: str, b: str) -> str:
    """One name for a pair of hyperparameters, whichever order it comes in."""
    return " × ".join(sorted((a, b)))


def true_pair_shares(shape: Shape, *, n_points: int = 24, n_inner: int = 1000, seed: int = 12345
                     ) -> dict[str, float]:
    """The share of every pair's interaction: the variance of E[f | x_a, x_b] minus both main effects and the
    mean (over the product of the two sampling distributions), over Var f + noise; by Monte Carlo as in
    `true_shares` (`n_points` strata per continuous hyperparameter, `n_inner` shared draws of the others)."""
    rng = np.random.default_rng(seed)
    inner = draw(shape.specs, n_inner, rng)
    total = _total(shape, rng)
    out = {}
    for i, a in enumerate(shape.specs):
        va, wa = _support(a, n_points)
        for b in shape.specs[i + 1:]:
            vb, wb = _support(b, n_points)
            ga, gb = np.repeat(va, len(vb) * n_inner), np.tile(np.repeat(vb, n_inner), len(va))
            batch = {name: np.tile(v, len(va) * len(vb)) for name, v in inner.items()}
            batch[a.name], batch[b.name] = ga, gb
            m = shape.f(batch).reshape(len(va), len(vb), n_inner).mean(axis=2)
            resid = m - (m @ wb)[:, None] - (wa @ m)[None, :] + wa @ m @ wb
            out[pair_key(a.name, b.name)] = float(wa @ resid ** 2 @ wb) / total
    return out


@functools.cache
def _truth(name: str) -> tuple[dict[str, float], dict[str, float]]:
    """Every hyperparameter's true share and every pair's true interaction share."""
    return true_shares(SHAPES[name], n_outer=SHAPES[name].n_outer), true_pair_shares(SHAPES[name])


def _holds(lo: float, hi: float, truth: float) -> bool:
    r = lambda x: round(100 * x)  # noqa: E731 - the report prints whole percentages
    return r(lo) <= r(truth) <= r(hi)


def run_case(shape: Shape, rep: int, seed: int, n_bootstrap: int,
             truth: tuple[dict[str, float], dict[str, float]] | None = None) -> pd.DataFrame:
    """One replicate: the estimator's table for one synthetic study, joined with the true shares, and one more row
    (kind "pair") for the largest pairwise interaction the report names, with the true share of that pair."""
    from reports._analysis import fit_budget
    from reports._budget import choose_budget
    from reports._importance import interaction_shares

    mains, pairs = truth or _truth(shape.name)
    make = stepped_run if shape.slow else synthetic_run
    state = seed * 1000 + rep
    run = make(seed=state, shape=shape)
    budget = choose_budget(run)
    fit = fit_budget(run, budget, n_bootstrap=n_bootstrap, random_state=state, methods=("fanova",))
    t = fit.importance.table
    case = {"shape": shape.name, "seed": seed, "rep": rep, "n_trials": fit.importance.n_trials,
            "formed": budget.formed, "leader": t["param"].iloc[0] if len(t) else ""}
    main = pd.DataFrame({**case, "kind": "main", "param": t["param"], "relevant": t["param"].isin(shape.relevant),
                         "truth": t["param"].map(mains), "estimate": t["importance"], "ci_low": t["ci_low"],
                         "ci_high": t["ci_high"]})
    inter = interaction_shares(fit.importance, n_bootstrap=n_bootstrap, random_state=state)
    if inter.empty:
        return main
    top = inter.iloc[0]
    key = pair_key(top["a"], top["b"])
    true_top = max(pairs, key=pairs.get)
    pair = pd.DataFrame([{**case, "kind": "pair", "param": key, "relevant": pairs[true_top] >= RESOLUTION,
                          "truth": pairs[key], "estimate": top["share"], "ci_low": top["ci_low"],
                          "ci_high": top["ci_high"], "true_pair": key == true_top}])
    return pd.concat([main, pair], ignore_index=True)


def calibrate(shapes: list[str], reps: int, *, seed: int = 0, n_bootstrap: int = 100, jobs: int = 1,
              out: str | None = None, start: int = 0) -> pd.DataFrame:
    """Every (shape, replicate, hyperparameter or top pair) with its truth, estimate and interval, and `holds`.

    With `out`, each replicate's rows are appended to that CSV as soon as it finishes (a long run that is stopped
    keeps what it did), and a progress line goes to stderr. `start` numbers the replicates from there: two runs
    of 10 from 0 and 10 are the 20 studies of one run of 20."""
    cases = [(SHAPES[s], r) for s in shapes for r in range(start, start + reps)]
    truths = {s: _truth(s) for s in shapes}  # once, here, not in every worker
    t0 = time.perf_counter()

    def done(i: int, part: pd.DataFrame) -> pd.DataFrame:
        part = part.assign(holds=[_holds(lo, hi, t) for lo, hi, t in zip(part["ci_low"], part["ci_high"],
                                                                          part["truth"])])
        if out:
            part.to_csv(out, mode="a", header=not os.path.exists(out) or os.path.getsize(out) == 0, index=False)
        sh, r = cases[i]
        print(f"[{i + 1}/{len(cases)}] {sh.name} seed {seed} rep {r}: {int(part['holds'].sum())} of {len(part)} "
              f"intervals hold, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        return part

    args = [(sh, r, seed, n_bootstrap, truths[sh.name]) for sh, r in cases]
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as ex:
            parts = [done(i, p) for i, p in enumerate(ex.map(run_case, *zip(*args)))]
    else:
        parts = [done(i, run_case(*a)) for i, a in enumerate(args)]
    return pd.concat(parts, ignore_index=True)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for a coverage of k in n."""
    a = (1 - level) / 2
    lo = float(beta.ppf(a, k, n - k + 1)) if k > 0 else 0.0
    hi = float(beta.ppf(1 - a, k + 1, n - k)) if k < n else 1.0
    return lo, hi


def coverage_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per shape and harness seed: how many studies, how many main-effect intervals held the truth (with the
    Clopper-Pearson 95% interval of that coverage), the same for the relevant hyperparameters, the largest
    share any irrelevant hyperparameter got (point estimate), the median interval width of the relevant ones
    (what the coverage costs), the mean absolute error, and for the largest pairwise interaction: how many of
    its intervals held the true share of the pair the report named, and in how many studies that pair was the
    truly largest one (for a shape with an interaction). The steps shape's `slow_kept_out` counts the studies
    whose answer does not name the slow-stepping hyperparameter the leader at a budget where it had not formed.
    """
    rows = []
    for (name, seed), g in df.groupby(["shape", "seed"], sort=False):
        main, pair = g[g["kind"] == "main"], g[g["kind"] == "pair"]
        rel, irr = main[main["relevant"]], main[~main["relevant"]]
        k, n = int(main["holds"].sum()), len(main)
        pk, pn = int(pair["holds"].sum()), len(pair)
        interacts = bool(pair["relevant"].astype(bool).any())
        rows.append({"shape": name, "seed": int(seed), "studies": int(g["rep"].nunique()),
                     "trials": int(SHAPES[name].n_trials), "compared": float(main["n_trials"].median()),
                     "intervals": n, "held": k, "coverage": k / n if n else math.nan,
                     "cp_low": clopper_pearson(k, n)[0], "cp_high": clopper_pearson(k, n)[1],
                     "coverage_relevant": float(rel["holds"].mean()),
                     "max_irrelevant": float(irr["estimate"].max()) if len(irr) else math.nan,
                     "width_relevant": float((rel["ci_high"] - rel["ci_low"]).median()),
                     "mean_abs_error": float((main["estimate"] - main["truth"]).abs().mean()),
                     "pair_held": pk, "pair_n": pn, "pair_coverage": pk / pn if pn else math.nan,
                     "pair_cp_low": clopper_pearson(pk, pn)[0] if pn else math.nan,
                     "pair_cp_high": clopper_pearson(pk, pn)[1] if pn else math.nan,
                     "pair_truth": float(pair["truth"].max()) if interacts else 0.0,
                     "true_pair_named": (float(pair["true_pair"].astype(bool).mean()) if interacts and pn
                                         else math.nan),
                     "slow_kept_out": _kept_out(main, SHAPES[name].slow)})
    return pd.DataFrame(rows)


def _kept_out(g: pd.DataFrame, slow: str) -> float:
    """Share of the studies in which the report does not name `slow` the leader at an unformed budget."""
    if not slow:
        return math.nan
    per = g.groupby("rep")[["leader", "formed"]].first()
    return float(((per["leader"] != slow) | ~per["formed"].astype(bool)).mean())


def verdicts(table: pd.DataFrame, target: float = 0.9) -> list[str]:
    """One line per shape and seed that says whether coverage reached `target`, and for a shape with a
    slow-stepping hyperparameter whether the budget rule kept it from leading."""
    out = []
    for r in table.itertuples():
        s = (f"{r.shape} seed {r.seed}: main effects {r.held}/{r.intervals} = {100 * r.coverage:.1f}% "
             f"(95% CI {100 * r.cp_low:.1f}-{100 * r.cp_high:.1f}%) {'meets' if r.coverage >= target else 'MISSES'}"
             f" {100 * target:.0f}%")
        if r.pair_n:
            s += (f"; largest interaction {r.pair_held}/{r.pair_n} = {100 * r.pair_coverage:.1f}% "
                  f"({100 * r.pair_cp_low:.1f}-{100 * r.pair_cp_high:.1f}%)")
        out.append(s)
        slow = SHAPES[r.shape].slow
        if slow:
            kept = round(r.slow_kept_out * r.studies)
            out.append(f"{r.shape} seed {r.seed}: the budget rule kept {slow} from leading at an unformed budget in "
                       f"{kept} of {r.studies} studies" + ("" if kept == r.studies else " -- NOT in every study"))
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: print the coverage table, a verdict per shape and seed (and the
    per-hyperparameter detail with -v)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--reps", type=int, default=20, help="synthetic studies per shape (default 20)")
    parser.add_argument("--seed", type=int, nargs="+", default=[0], help="harness seeds, run one after another")
    parser.add_argument("--start", type=int, default=0, help="number of the first replicate (default 0)")
    parser.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples (the report's default)")
    parser.add_argument("--jobs", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--out", help="append every study's rows to this CSV as it finishes")
    parser.add_argument("--table", nargs="+", metavar="CSV", help="only print the table of earlier --out files")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print coverage per hyperparameter")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.bootstrap < 1 or args.jobs < 1 or args.start < 0:
        parser.error("--reps, --bootstrap and --jobs must be >= 1, --start >= 0")
    t0 = time.perf_counter()
    if args.table:
        missing = [p for p in args.table if not os.path.exists(p)]
        if missing:
            parser.error(f"no such file: {missing[0]}")
        df = pd.concat([pd.read_csv(p) for p in args.table], ignore_index=True)
    else:
        df = pd.concat([calibrate(args.shapes, args.reps, seed=s, n_bootstrap=args.bootstrap, jobs=args.jobs,
                                  out=args.out, start=args.start) for s in args.seed], ignore_index=True)
    table = coverage_table(df)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        if args.verbose:
            per = df.groupby(["shape", "kind", "param"], sort=False).agg(
                truth=("truth", "mean"), mean=("estimate", "mean"), n=("holds", "size"), coverage=("holds", "mean"))
            print(per.to_string(float_format=lambda x: f"{x:.3f}"))
    print("\n".join(verdicts(table)))
    print(f"({len(df)} intervals, {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
