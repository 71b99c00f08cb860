"""Everything the report says, computed once from `RunData`: plots and both renderers read `Analysis`.

Compute, decide, word: this module computes (the global fANOVA view here, the local design's effects in
`reports._effects`), `reports._verdict` decides what the numbers mean, and `reports._wording` says it; `Analysis`
carries all three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.stats import chi2

from reports import _budget
from reports._budget import Budget, NoiseFloor, TrialCounts, rank_need
from reports._effects import LocalEffects, local_effects, uniform_bpc
from reports._importance import (METHODS, ImportanceResult, agreement, compute_importance, interaction_grid,
                                 interaction_shares)
from reports._load import RunData
from reports._reference import optuna_importances
from reports._selection import repeats_of, selection
from reports._steps import PlateauExit, plateau_exit
from reports._verdict import Verdict, decide, global_answer
from reports._wording import bullets, headline
from runcontract import LOCAL, SEARCH

SAMPLE_METRICS = ("known_word_frac", "copy20_frac")


@dataclass(frozen=True)
class BestTrial:
    """The best search trial and its seed repeats: its expected score is the repeats' mean; the gap to its own
    search score is the selection bias of picking the best of many noisy trials."""

    trial_id: str
    search: float
    repeats: tuple[float, ...]

    @property
    def expected(self) -> float:
        return float(np.mean(self.repeats)) if self.repeats else math.nan

    @property
    def gap(self) -> float:
        return self.expected - self.search


@dataclass(frozen=True)
class BudgetStep:
    """Importance at one evaluation milestone that enough trials reached, and how trial quality there ranks
    against the previous milestone (Spearman over the trials that reached both)."""

    chars: float
    n_trials: int
    leader: str
    share: float
    ci_low: float
    ci_high: float
    spearman_prev: float  # NaN for the first
    n_both: int
    clear: bool = True  # the leader's interval clears the noise floor
    fewest_steps: float = math.nan  # the fewest optimizer steps any compared trial had taken there
    formed: bool = True  # every compared trial had taken the steps it needs to leave the plateau


@dataclass(frozen=True)
class SeedNoise:
    """Seed noise at the compared budget: its sd in the metric's units (with a 95% CI), and its share of the
    fitted target's variance over the search space (point and 95% lower bound)."""

    floor: NoiseFloor
    sd_low: float = math.nan
    sd_high: float = math.nan
    share: float = math.nan
    share_low: float = math.nan


@dataclass(frozen=True)
class Fit:
    """Importance at one budget: what was fitted (`target`, e.g. "log val_bpc") and the seed noise there."""

    budget: Budget
    target: str
    log: bool  # the target is the log of the metric; marginals are shown back in the metric's units
    importance: ImportanceResult
    seed: SeedNoise
    capped: int = 0  # trials worse than guessing uniformly, counted at `cap`
    cap: float = math.nan


@dataclass(frozen=True)
class SampleTarget:
    """Importance of the hyperparameters for one sample metric, and which samples it was computed from."""

    metric: str
    result: ImportanceResult
    temperature: float
    at_budget: bool  # False: each trial's latest samples, at mixed budgets


@dataclass(frozen=True)
class Analysis:
    """The report's content as data: `verdict` is the answer decided, `summary` its headline (at most 40 words)
    and `bullets` the sentences that follow it; `effects` the local design's measurements (None in runs without
    one). `interaction_pair` names the two hyperparameters of the interaction figure: the answer's leader and its
    partner."""

    run: RunData
    counts: TrialCounts
    budget: Budget
    seed: SeedNoise
    importance: ImportanceResult
    interaction: pd.DataFrame | None
    samples: list[SampleTarget]
    showcase: pd.DataFrame  # best, median and worst valid trial by best_val_bpc, with samples
    pareto: pd.DataFrame  # wall_s against best_val_bpc, `on_front` marking the Pareto front
    summary: str
    notes: list[str] = field(default_factory=list)
    target: str = "val_bpc"  # what the importance fit explains the variance of
    log_target: bool = False
    survivors: Fit | None = None  # secondary check at a later milestone, survivors of the scheduler only
    interactions: pd.DataFrame | None = None  # pairwise interaction shares, largest first (interval on the first)
    best: BestTrial | None = None
    budgets: list[BudgetStep] = field(default_factory=list)
    plateau: PlateauExit | None = None  # when the search trials left the unigram plateau, from their curves
    verdict: Verdict | None = None
    bullets: list[str] = field(default_factory=list)
    effects: LocalEffects | None = None
    interaction_pair: tuple[str, str] | None = None


def _seed_noise(floor: NoiseFloor, total_var: float, log: bool) -> SeedNoise:
    if not floor.known:
        return SeedNoise(floor)
    df = floor.n_repeats - 1
    var = floor.sd ** 2
    lo, hi = var * df / chi2.ppf(0.975, df), var * df / chi2.ppf(0.025, df)
    fitted = np.log(floor.values) if log else np.asarray(floor.values)  # on the scale the importance is on
    var_fit = float(np.var(fitted, ddof=1))
    if not total_var > 0:
        return SeedNoise(floor, math.sqrt(lo), math.sqrt(hi))
    return SeedNoise(floor, math.sqrt(lo), math.sqrt(hi), var_fit / total_var,
                     var_fit * df / chi2.ppf(0.975, df) / total_var)


def fit_budget(run: RunData, budget: Budget, *, n_bootstrap: int, random_state: int,
         methods: tuple[str, ...] = METHODS) -> Fit:
    """Importance of the hyperparameters for each trial's best val_bpc up to `budget`, judged against the seed
    noise there. The target keeps the metric's name ("log val_bpc"): it is the metric, at one budget.

    The fit is on log(metric) when the metric is positive: val_bpc is skewed (a few trials that learned nothing
    sit near uniform guessing, ~6.6 bits/char, while most sit within 1 bit/char of the best) and its spread
    grows with its level, so on the raw scale a handful of failed trials would carry most of the variance.
    """
    y = budget.values["y"].to_numpy(float)
    cap = uniform_bpc(run)
    capped = int((y > cap).sum())
    y = np.minimum(y, cap)
    log = bool(len(y)) and bool((y > 0).all())
    target = f"log {run.metric}" if log else run.metric
    params = run.trials.set_index("trial_id").loc[budget.values["trial_id"]]
    imp = compute_importance(run.params, params, np.log(y) if log else y, target=target,
                             n_bootstrap=n_bootstrap, random_state=random_state, methods=methods)
    seed = _seed_noise(_budget.noise_floor(run, budget.chars), imp.fit.get("total_var", math.nan), log)
    if math.isfinite(seed.share_low) and seed.share_low > imp.floors["applied"]:
        # The seed alone surely explains this much: an interval reaching it is no better than noise.
        imp = replace(imp, floors={**imp.floors, "applied": seed.share_low},
                      table=imp.table.assign(within_noise=imp.table["ci_low"] <= seed.share_low))
    if log and not imp.marginals.empty:
        imp = replace(imp, marginals=imp.marginals.assign(**{c: np.exp(imp.marginals[c].astype(float))
                                                             for c in ("mean", "low", "high")}))
    return Fit(budget, target, log, imp, seed, capped, cap)


def best_trial_repeats(run: RunData) -> BestTrial | None:
    """The search trial the study handed over (`reports._selection`: study.json's `selection`, else the documented
    rule) and its valid seed repeats, each scored by its own best_val_bpc; None when no configuration was chosen."""
    chosen = selection(run).chosen
    t = run.trials
    row = t[(t["trial_id"].astype(str) == chosen) & (t["role"] != "repeat")] if chosen is not None else t.iloc[:0]
    if row.empty:
        return None
    reps = repeats_of(run, chosen)
    reps = reps[_budget.valid_mask(reps)]
    return BestTrial(str(chosen), float(row["best_val_bpc"].iloc[0]), tuple(float(v) for v in reps["best_val_bpc"]))


def budget_steps(run: RunData, primary: Fit, *, n_bootstrap: int, random_state: int,
                 survivors: Fit | None = None) -> list[BudgetStep]:
    """Importance (fANOVA) at the milestones from the compared budget on that at least `rank_need` valid search
    trials reached (the compared one and the last before each drop in trials), and the Spearman rank correlation
    of trial quality with the previous such milestone over the trials that reached both."""
    from scipy.stats import spearmanr

    need = rank_need(len(run.params))
    table = primary.budget.milestones
    if table is None or table.empty:
        return []
    chosen = table[(table["chars_seen"] >= primary.budget.chars * (1 - 1e-9)) & (table["n_trials"] >= need)]
    # Between two ASHA rungs the same trials train on: of each run of milestones with one trial count, the last
    # (the most training for the same trials) stands for it, besides the compared budget itself.
    last = chosen.groupby("n_trials")["chars_seen"].transform("max") == chosen["chars_seen"]
    chosen = chosen[last | np.isclose(chosen["chars_seen"], primary.budget.chars)]
    steps, prev = [], None
    curves = _budget._curves(run)
    for chars_ in chosen["chars_seen"]:
        if math.isclose(chars_, primary.budget.chars, rel_tol=1e-9):
            f = primary
        elif survivors is not None and math.isclose(chars_, survivors.budget.chars, rel_tol=1e-9):
            f = survivors
        else:
            b = _budget._budget_at(run, curves, table, float(chars_), need, survivors=True)
            f = fit_budget(run, b, n_bootstrap=n_bootstrap, random_state=random_state, methods=("fanova",))
        vals = f.budget.values.set_index("trial_id")["y"]
        rho, both = math.nan, 0
        if prev is not None:
            common = vals.index.intersection(prev.index)
            both = len(common)
            if both >= 3:
                rho = float(spearmanr(prev.loc[common], vals.loc[common]).statistic)
        top = f.importance.table.iloc[0]
        if f.importance.n_trials >= 5 and np.isfinite(top["importance"]):
            fm = f.budget.formation
            steps.append(BudgetStep(float(chars_), f.importance.n_trials, str(top["param"]), float(top["importance"]),
                                    float(top["ci_low"]), float(top["ci_high"]), rho, both,
                                    not bool(top["within_noise"]), fm.fewest_steps if fm else math.nan,
                                    f.budget.formed))
        prev = vals
    return steps


def _sample_targets(run: RunData, budget: Budget, n_bootstrap: int, random_state: int) -> list[SampleTarget]:
    s = run.samples
    ids = budget.values["trial_id"].tolist()
    out = []
    for metric in SAMPLE_METRICS:
        if metric not in s.columns or not np.isfinite(pd.to_numeric(s[metric], errors="coerce")).any():
            continue
        m = s[s["trial_id"].isin(ids)].assign(v=pd.to_numeric(s[metric], errors="coerce"))
        m = m[np.isfinite(m["v"])]
        nominal = _budget.milestone_of(m["chars_seen"], run.study)
        at = m[np.isclose(m["chars_seen"] if nominal is None else nominal, budget.chars)]
        at_budget = at["trial_id"].nunique() >= max(5, len(ids) // 2)
        if not at_budget:  # each trial's latest samples
            at = m[m["chars_seen"] == m.groupby("trial_id", sort=False)["chars_seen"].transform("max")]
        if at.empty:
            continue
        counts = at.groupby("temperature")["trial_id"].nunique()
        temp = float(counts[counts == counts.max()].index.min())
        per = at[at["temperature"] == temp].groupby("trial_id", sort=False)["v"].mean()
        params = run.trials.set_index("trial_id").loc[per.index]
        res = compute_importance(run.params, params, per.to_numpy(float), target=metric,
                                 n_bootstrap=n_bootstrap, random_state=random_state, methods=("fanova",))
        out.append(SampleTarget(metric, res, temp, bool(at_budget)))
    return out


def _showcase(run: RunData) -> pd.DataFrame:
    t = run.trials[(run.trials["role"] == SEARCH) & _budget.valid_mask(run.trials)].sort_values("best_val_bpc",
                                                                                                 kind="stable")
    t = t[t["trial_id"].isin(run.samples["trial_id"])]
    if t.empty:
        return pd.DataFrame(columns=["which", "trial_id", "best_val_bpc", "chars_seen", "temperature", "text"])
    picks = {"best": t.iloc[0], "median": t.iloc[(len(t) - 1) // 2], "worst": t.iloc[-1]}
    rows, seen = [], set()
    for which, tr in picks.items():
        if tr["trial_id"] in seen:
            continue
        seen.add(tr["trial_id"])
        s = run.samples[run.samples["trial_id"] == tr["trial_id"]]
        if "kind" in s.columns and (s["kind"] == "final").any():
            s = s[s["kind"] == "final"]
        s = s[s["chars_seen"] == s["chars_seen"].max()]
        temps = sorted(s["temperature"].dropna().unique())
        for temp in sorted({temps[0], temps[-1]}) if temps else []:
            st = s[s["temperature"] == temp]
            if "known_word_frac" in st.columns and np.isfinite(st["known_word_frac"].astype(float)).any():
                st = st.sort_values("known_word_frac", ascending=False)  # the most Conan Doyle-like
            row = st.iloc[0]
            rows.append({"which": which, "trial_id": tr["trial_id"], "best_val_bpc": tr["best_val_bpc"],
                         "chars_seen": row["chars_seen"], "temperature": temp, "text": row["text"],
                         **{m: row[m] for m in SAMPLE_METRICS if m in st.columns}})
    return pd.DataFrame(rows)


def _pareto(run: RunData) -> pd.DataFrame:
    t = run.trials[(run.trials["role"] == SEARCH) & _budget.valid_mask(run.trials)]
    t = t[np.isfinite(t["wall_s"])].sort_values(["wall_s", "best_val_bpc"], kind="stable")
    best, front = math.inf, []
    for v in t["best_val_bpc"]:
        front.append(v < best)
        best = min(best, v)
    return (t[["trial_id", "wall_s", "best_val_bpc", "chars_seen", "status"]].assign(on_front=front)
            .reset_index(drop=True))


def analyze(run: RunData, *, n_bootstrap: int = 100, random_state: int = 0,
            min_trials: int | None = None) -> Analysis:
    """Compute the whole report from a loaded run.

    Args:
        run: the run, from `load_run`.
        n_bootstrap: bootstrap resamples for every interval (sample metrics use half).
        random_state: seed of every randomized step.
        min_trials: trials needed at the compared budget (see `choose_budget`).

    Returns:
        An `Analysis`.
    """
    notes: list[str] = []
    pooled = run.study.get("pooled_from")
    if pooled:
        notes.append(f"Pooled from {len(pooled)} studies of one search space ({', '.join(map(str, pooled))}): "
                     "their search trials are fitted together; the seed noise floor is the first study's.")
    full, run = run, _search_view(run)  # the global view fits the search trials alone
    counts = _budget.count_trials(run.trials)
    budget = _budget.choose_budget(run, min_trials)
    fit = fit_budget(run, budget, n_bootstrap=n_bootstrap, random_state=random_state)
    imp, seed = fit.importance, fit.seed
    params = run.trials.set_index("trial_id").loc[budget.values["trial_id"]]
    y = np.minimum(budget.values["y"].to_numpy(float), fit.cap)  # as in the fit
    ref = optuna_importances(list(run.params), params, np.log(y) if fit.log else y, random_state)
    table = imp.table.merge(ref, on="param", how="left")
    methods = [c for c in ("fanova", "permutation", "optuna_fanova", "optuna_ped_anova") if c in table]
    imp = replace(imp, table=table, agreement=agreement(table, methods))
    later = _budget.survivor_budget(run, budget)
    survivors = None
    if later is not None and later.n_trials >= 5:
        survivors = fit_budget(run, later, n_bootstrap=n_bootstrap, random_state=random_state, methods=("fanova",))
    samples = _sample_targets(run, budget, max(n_bootstrap // 2, 0), random_state)
    interactions = (interaction_shares(imp, n_bootstrap=n_bootstrap, random_state=random_state)
                    if imp.surrogate is not None else None)
    steps = budget_steps(run, fit, n_bootstrap=max(n_bootstrap // 2, 0), random_state=random_state,
                         survivors=survivors)
    best = best_trial_repeats(run)
    if fit.capped:
        notes.append(f"{fit.capped} compared trial{'s' if fit.capped > 1 else ''} scored worse than guessing "
                     f"uniformly over the vocabulary ({fit.cap:.2f} bits/char) and {'are' if fit.capped > 1 else 'is'}"
                     f" counted at {fit.cap:.2f} in the importance fit: every trial that learned nothing is equally "
                     f"a failure, whatever its exact score.")
    if not seed.floor.known:
        notes.append("Seed noise floor unknown: fewer than two repeat trials (role == repeat) reached the "
                     "compared budget; hyperparameters are judged against the null-probe floor only.")
    effects = local_effects(full, random_state=random_state)
    verdict = decide(effects, global_answer(imp, budget, run.metric, interactions=interactions, budgets=steps))
    pair = _interaction_pair(imp, interactions, verdict)
    interaction = None
    if imp.surrogate is not None and pair is not None:
        interaction = interaction_grid(imp, *pair)
        if fit.log:
            interaction = interaction.assign(mean=np.exp(interaction["mean"]))
    plateau = plateau_exit(run, _budget._search_ids(run))
    return Analysis(full, counts, budget, seed, imp, interaction, samples, _showcase(run), _pareto(run),
                    headline(verdict), notes, fit.target, fit.log, survivors, interactions, best, steps, plateau,
                    verdict, bullets(verdict), effects, pair)


def _search_view(run: RunData) -> RunData:
    """The run without its local design's trials: what the global view (budgets, fits, seed noise) reads."""
    local = run.trials["role"] == LOCAL
    return replace(run, trials=run.trials[~local].reset_index(drop=True)) if local.any() else run


def _interaction_pair(imp: ImportanceResult, interactions: pd.DataFrame | None,
                      verdict: Verdict) -> tuple[str, str] | None:
    """The interaction figure's pair: the hyperparameter the answer names, and the one it interacts with most
    (the most important other one when the run has no interaction shares)."""
    names = imp.table["param"].astype(str).tolist()
    if len(names) < 2:
        return None
    lead = (verdict.leader.param if verdict.leader is not None and verdict.kind in ("ranked", "contenders")
            else verdict.global_answer.leader)
    lead = lead if lead in names else names[0]
    if interactions is not None and len(interactions):
        mine = interactions[(interactions["a"] == lead) | (interactions["b"] == lead)]
        if len(mine):
            r = mine.iloc[0]
            return lead, str(r["b"] if r["a"] == lead else r["a"])
    return lead, next(n for n in names if n != lead)
