"""Everything the report says, computed once from `RunData`: plots and both renderers read `Analysis`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.stats import chi2

from reports import _budget
from reports._budget import TRIALS_PER_PARAM, Budget, NoiseFloor, TrialCounts, rank_need
from reports._importance import (METHODS, ImportanceResult, agreement, compute_importance, interaction_grid,
                                 interaction_shares)
from reports._load import RunData
from reports._reference import optuna_importances
from reports._selection import repeats_of, selection
from reports._steps import FORMED_BITS, PlateauExit, plateau_exit, step_carried

SAMPLE_METRICS = ("known_word_frac", "copy20_frac")
# The answer names one hyperparameter as the most important only if it ranks first in at least FIRST_SURE of
# the bootstrap resamples; otherwise it names every one that ranks first in at least CONTENDER of them.
FIRST_SURE, CONTENDER = 0.8, 0.1
# A surrogate whose held-out R^2 is below this predicts trials hardly better than their mean: its numbers are
# not evidence (shown as such, never as a second opinion).
PREDICTS = 0.1


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
    """The report's content as data. `summary` is the answer sentence."""

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


def pct(x: float) -> str:
    """A share as a whole percentage ('<1%' for small non-zero shares)."""
    if not math.isfinite(x):
        return "n/a"
    return "<1%" if 0 < x < 0.005 else f"{100 * x:.0f}%"


def chars(x: float) -> str:
    """A character count for prose: 1.2M, 300k."""
    if not math.isfinite(x):
        return "n/a"
    return f"{x / 1e6:.3g}M" if x >= 1e6 else f"{x / 1e3:.3g}k" if x >= 1e3 else f"{x:.0f}"


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


def uniform_bpc(run: RunData) -> float:
    """Bits per character of guessing uniformly over the corpus vocabulary (inf when unknown or the metric is
    not val_bpc). A trial above it learned less than nothing: a handful of those (one exploded to 19.9 against
    6.6 in a real study) would otherwise carry a share of the variance that no failed trial deserves over
    another, so the fit counts them at this value."""
    vocab = (run.study.get("corpus") or {}).get("vocab_size")
    if run.metric != "val_bpc" or not isinstance(vocab, (int, float)) or not vocab > 1:
        return math.inf
    return math.log2(vocab)


def steps_text(x: float) -> str:
    return f"{x:,.0f}" if math.isfinite(x) else "n/a"


def signed(x: float) -> str:
    """A correlation for prose, with a true minus sign."""
    return f"{x:.2f}".replace("-", "−") if math.isfinite(x) else "n/a"


def compared_words(n: int, budget: Budget) -> str:
    """The budget in words a student understands: "48 trials compared after 150 optimizer steps (120k training
    characters, 800 per step)", or, when the steps differ between trials, "48 trials compared at 120k training
    characters (at least 150 optimizer steps each)"; characters alone when the steps are unknown."""
    f = budget.formation
    if f is None or not math.isfinite(f.fewest_steps):
        return f"{n} trials compared at {chars(budget.chars)} training characters"
    if math.isfinite(f.same_steps) and f.same_steps > 0:
        per = f.same_step_chars if math.isfinite(f.same_step_chars) else budget.chars / f.same_steps
        return (f"{n} trials compared after {steps_text(f.same_steps)} optimizer steps ({chars(budget.chars)} "
                f"training characters, {per:,.0f} per step)")
    return (f"{n} trials compared at {chars(budget.chars)} training characters (at least "
            f"{steps_text(f.fewest_steps)} optimizer steps each)")


def formed_text(budget: Budget) -> str:
    """The sentence that follows the answer: how many compared trials had formed, the fewest steps, and whether
    scores follow the steps taken ('' when the run says nothing of steps)."""
    f = budget.formation
    if f is None or not f.n_compared or not math.isfinite(f.fewest_steps):
        return ""
    fewest = (f"the fewest optimizer steps any compared trial had taken is {steps_text(f.fewest_steps)} (leaving the "
              f"unigram plateau takes about {f.need_steps})")
    rho = (f"n/a: every compared trial took the same {steps_text(f.same_steps)} steps" if math.isfinite(f.same_steps)
           else signed(f.spearman))
    if math.isfinite(f.formed_share):
        s = (f"At this budget {pct(f.formed_share)} of the compared trials ({f.n_formed} of {f.n_compared}) had "
             f"formed, at least {FORMED_BITS:g} bit/char below the unigram baseline ({f.unigram:.2f}); {fewest}")
    else:
        s = f"At this budget {fewest}; whether the trials had formed is unknown (the run has no unigram baseline)"
    s += f"; Spearman correlation of score with steps taken: {rho}."
    if math.isfinite(budget.moved_from):
        t = budget.milestones
        at = t[np.isclose(t["chars_seen"], budget.moved_from)]
        if len(at) and "n_short" in at:
            s += (f" The comparison is at {chars(budget.chars)} rather than at {chars(budget.moved_from)}, where "
                  f"{int(at['n_short'].iloc[0])} of {int(at['n_trials'].iloc[0])} trials had taken fewer than "
                  f"{f.need_steps} steps.")
    return s


def not_formed(imp: ImportanceResult, budget: Budget) -> str:
    """The answer where no budget qualifies: quality had not formed, in how many trials, and what would fix it;
    no winner is named (a leader carried by the steps it sets is named as such)."""
    f = budget.formation
    n = f.n_compared
    s = (f"Quality had not formed at any budget these trials share: at {chars(budget.chars)} characters "
         f"{f.n_short} of {n} compared trials had taken fewer than {f.need_steps} optimizer steps (the fewest "
         f"{steps_text(f.fewest_steps)})")
    if math.isfinite(f.formed_share):
        s += (f", and {n - f.n_formed} of {n} were not yet {FORMED_BITS:g} bit/char below the unigram baseline "
              f"({f.unigram:.2f})")
    s += (", so this report names no hyperparameter as the one that matters most: the importance below measures how "
          "far each trial had got, not what its hyperparameters do once trained.")
    top = imp.table.iloc[0] if len(imp.table) else None
    if top is not None and step_carried(str(top["param"]), f):
        s += (f" {top['param']} ranks first there, but its lead is carried by the optimizer steps it sets "
              f"(Spearman {signed(f.spearman)} between score and steps).")
    if math.isfinite(f.max_step_chars):
        s += (f" To compare trained models, compare every trial after at least {f.need_steps} steps: "
              f"{chars(f.need_steps * f.max_step_chars)} characters for the trials that take "
              f"{f.max_step_chars:,.0f} a step (a later first rung, or a smaller batch_size × seq_len).")
    return s


def _leader(t: pd.DataFrame) -> pd.Series:
    """The hyperparameter the answer leads with: the most important one whose interval clears the noise floor, or
    the most important one where none does."""
    real = t[~t["within_noise"]] if "within_noise" in t else t
    return real.iloc[0] if len(real) else t.iloc[0]


def _summary(imp: ImportanceResult, budget: Budget, metric: str) -> str:
    t = imp.table
    if imp.n_trials < 5 or not np.isfinite(t["importance"]).any():
        return (f"Too few comparable trials ({imp.n_trials}) to rank the hyperparameters; "
                f"at least 5 finished trials with a finite {metric} are needed.")
    where = f"across {compared_words(imp.n_trials, budget)}"
    real = t[~t["within_noise"]]
    noise = t[t["within_noise"]]["param"].tolist()
    if real.empty:
        return (f"No hyperparameter stands out from noise in {imp.target} {where}: every interval reaches the "
                f"noise floor of {pct(imp.floors['applied'])}.")
    top = _leader(t)
    p_first = t["p_first"].astype(float) if "p_first" in t else pd.Series(np.nan, index=t.index)
    rivals = [i for i in t.index if i != top.name and p_first[i] >= CONTENDER]
    if p_first[top.name] < FIRST_SURE and rivals:
        # The resamples disagree on the leader: name every contender instead of an order the data do not give.
        # A contender whose interval reaches the noise floor is one the resamples switch on and off.
        lead = [top.name] + sorted(rivals, key=lambda i: -p_first[i])[:2]
        named = t.loc[lead, "param"].tolist()
        s = (f"{_join(named)} matter most, in an order these trials cannot settle: "
             f"{top['param']} explains {pct(top['importance'])} (95% CI {pct(top['ci_low'])}–{pct(top['ci_high'])}) "
             f"of the variance in {imp.target} {where} and ranks first in {pct(p_first[top.name])} of bootstrap "
             f"resamples")
        for i in lead[1:]:
            r = t.loc[i]
            s += (f"; {r['param']} {pct(r['importance'])} ({pct(r['ci_low'])}–{pct(r['ci_high'])}, first in "
                  f"{pct(p_first[i])}{', interval reaching the noise floor' if r['within_noise'] else ''})")
        rest = real.drop(index=[i for i in lead if i in real.index])
        if len(rest):
            nxt = rest.iloc[0]
            s += f"; {nxt['param']} is next ({pct(nxt['importance'])}, {pct(nxt['ci_low'])}–{pct(nxt['ci_high'])})"
        noise = [n for n in noise if n not in named]
        carried = [n for n in named if step_carried(n, budget.formation)]
        if carried:
            sets = "it sets" if len(carried) == 1 else "they set"
            s += (f"; the lead of {_join(carried)} is carried by the optimizer steps {sets} "
                  f"(Spearman {signed(budget.formation.spearman)} between score and steps)")
    elif step_carried(str(top["param"]), budget.formation):
        s = (f"{top['param']} leads, but its lead is carried by the optimizer steps it sets (Spearman "
             f"{signed(budget.formation.spearman)} between score and steps): it explains {pct(top['importance'])} (95% "
             f"CI {pct(top['ci_low'])}–{pct(top['ci_high'])}) of the variance in {imp.target} {where}")
        if len(real) > 1:
            sec = real.iloc[1]
            s += (f"; {sec['param']} is next ({pct(sec['importance'])}, {pct(sec['ci_low'])}–"
                  f"{pct(sec['ci_high'])})")
    else:
        s = (f"{top['param']} matters most: it explains {pct(top['importance'])} (95% CI {pct(top['ci_low'])}"
             f"–{pct(top['ci_high'])}) of the variance in {imp.target} {where}")
        if len(real) > 1:
            sec = real.iloc[1]
            s += (f"; {sec['param']} is second ({pct(sec['importance'])}, {pct(sec['ci_low'])}–"
                  f"{pct(sec['ci_high'])})")
    if noise:
        s += f"; {_join(noise)} {'is' if len(noise) == 1 else 'are'} within noise"
    return s + "."


def _ci_text(lo: float, hi: float) -> str:
    return f"{pct(lo)}–{pct(hi)}"


def answer(imp: ImportanceResult, budget: Budget, metric: str, *, interactions: pd.DataFrame | None = None,
           budgets: list[BudgetStep] | None = None) -> str:
    """The report's first sentence: `_summary`'s ranking, unless the trials cannot carry one, with what else a
    careful reader needs in it: the methods' disagreement, a leader that acts through an interaction, and
    whether the leader holds at the later budgets."""
    after = formed_text(budget) if budget.formed else ""  # an unformed answer says it in its own words
    return _answer(imp, budget, metric, interactions, budgets) + (f" {after}" if after else "")


def _answer(imp: ImportanceResult, budget: Budget, metric: str, interactions: pd.DataFrame | None,
            budgets: list[BudgetStep] | None) -> str:
    t, k, n = imp.table, len(imp.table), imp.n_trials
    if n < 5 or not np.isfinite(t["importance"]).any():
        return _summary(imp, budget, metric)
    if not budget.formed:
        return not_formed(imp, budget)
    top = t.iloc[0]
    where = compared_words(n, budget)
    if n < rank_need(k):
        return (f"{n} comparable trials cannot rank {k} hyperparameters (a ranking needs about {rank_need(k)}, "
                f"{TRIALS_PER_PARAM} per hyperparameter): {top['param']} leads in this sample "
                f"({pct(top['importance'])}, 95% CI {_ci_text(top['ci_low'], top['ci_high'])}, of the variance in "
                f"{imp.target} across {where}), which is no ranking; a study of at least {rank_need(k)} trials, or "
                f"a second study pooled with this one (python -m reports.build RUN_A RUN_B --out DIR), would "
                f"settle it.")
    r2 = imp.fit.get("gp_loo_r2", math.nan)
    if math.isfinite(r2) and r2 < PREDICTS:
        return (f"No hyperparameter's effect can be told from noise across {where}: the surrogate predicts a "
                f"left-out trial no better than the mean of the others (leave-one-out R² {r2:.2f}).")
    s = _summary(imp, budget, metric).rstrip(".")
    top = _leader(t)  # the one _summary leads with, so that the sentence's clauses name the same leader
    lead = top["param"]
    prefix = ""
    stands_out = "within_noise" not in t or not t["within_noise"].all()
    if interactions is not None and len(interactions) and stands_out:
        # An interaction larger than the largest main effect leads the sentence, unless no main effect stands out
        # from noise at all: a 2% interaction "more than any main effect" then only says every effect is small.
        pair = interactions.iloc[0]
        if pair["share"] > top["importance"]:
            ci = (f", 95% CI {_ci_text(pair['ci_low'], pair['ci_high'])}"
                  if math.isfinite(pair["ci_low"]) else "")
            if lead in (pair["a"], pair["b"]):
                other = pair["b"] if pair["a"] == lead else pair["a"]
                prefix = (f"{lead}, through its interaction with {other} ({pct(pair['share'])} of the variance"
                          f"{ci}, more than any main effect): ")
            else:
                prefix = (f"{pair['a']} and {pair['b']} act mostly together (their interaction explains "
                          f"{pct(pair['share'])}{ci}, more than any main effect): ")
    if "permutation" in t and imp.fit.get("trees_oob_r2", math.nan) >= PREDICTS:
        perm = t.sort_values("permutation", ascending=False).iloc[0]
        mine = t.set_index("param").loc[lead]
        apart = (mine["permutation_ci_high"] < mine["ci_low"]) or (mine["permutation_ci_low"] > mine["ci_high"])
        if perm["param"] != lead:
            prefix += (f"The two methods disagree — fANOVA (GP) names {lead} ({pct(top['importance'])}, "
                       f"{_ci_text(top['ci_low'], top['ci_high'])}), permutation names {perm['param']} "
                       f"({pct(perm['permutation'])}, {_ci_text(perm['permutation_ci_low'], perm['permutation_ci_high'])}"
                       f"): ")
        elif apart:
            prefix += (f"The two methods name {lead} but disagree on its share — fANOVA (GP) "
                       f"{pct(top['importance'])} ({_ci_text(top['ci_low'], top['ci_high'])}), permutation "
                       f"{pct(mine['permutation'])} ({_ci_text(mine['permutation_ci_low'], mine['permutation_ci_high'])}"
                       f"), intervals apart: ")
    if prefix:
        s = prefix + s
    later = [b for b in (budgets or []) if b.chars > budget.chars]
    if later:
        changes = [b for b in later if b.leader != lead and b.clear]
        vague = [b for b in later if not b.clear]
        rhos = ", ".join(f"{b.spearman_prev:.2f}" for b in later if math.isfinite(b.spearman_prev))
        last = later[-1]
        if changes:
            how = "the leader changes: " + ", ".join(f"{b.leader} at {chars(b.chars)} ({b.n_trials} trials, "
                                                     f"{pct(b.share)}, {_ci_text(b.ci_low, b.ci_high)})"
                                                     for b in changes)
        elif not vague:
            how = f"the leader stays {lead} (up to {chars(last.chars)}, {last.n_trials} trials)"
        else:
            how = (f"the leader stays {lead} where any hyperparameter stands out" if len(vague) < len(later)
                   else "no hyperparameter stands out from noise")
        if vague and (changes or len(vague) < len(later)):
            how += "; none stands out at " + ", ".join(f"{chars(b.chars)} ({b.n_trials} trials)" for b in vague)
        elif vague:
            how += " at " + ", ".join(f"{chars(b.chars)} ({b.n_trials} trials)" for b in vague)
        s += (f"; this holds at {chars(budget.chars)} characters, and at the later budgets {how}"
              + (f"; rank correlation of trial quality between successive budgets {rhos}" if rhos else ""))
    return s + "."


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


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


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
            at = m[m["chars_seen"] == m.groupby("trial_id")["chars_seen"].transform("max")]
        if at.empty:
            continue
        counts = at.groupby("temperature")["trial_id"].nunique()
        temp = float(counts[counts == counts.max()].index.min())
        per = at[at["temperature"] == temp].groupby("trial_id")["v"].mean()
        params = run.trials.set_index("trial_id").loc[per.index]
        res = compute_importance(run.params, params, per.to_numpy(float), target=metric,
                                 n_bootstrap=n_bootstrap, random_state=random_state, methods=("fanova",))
        out.append(SampleTarget(metric, res, temp, bool(at_budget)))
    return out


def _showcase(run: RunData) -> pd.DataFrame:
    t = run.trials[(run.trials["role"] != "repeat") & _budget.valid_mask(run.trials)].sort_values("best_val_bpc")
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
    t = run.trials[(run.trials["role"] != "repeat") & _budget.valid_mask(run.trials)]
    t = t[np.isfinite(t["wall_s"])].sort_values(["wall_s", "best_val_bpc"])
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
    interaction = None
    if imp.surrogate is not None and len(table) >= 2:
        interaction = interaction_grid(imp, table["param"].iloc[0], table["param"].iloc[1])
        if fit.log:
            interaction = interaction.assign(mean=np.exp(interaction["mean"]))
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
    summary = answer(imp, budget, run.metric, interactions=interactions, budgets=steps)
    plateau = plateau_exit(run, _budget._search_ids(run))
    return Analysis(run, counts, budget, seed, imp, interaction, samples, _showcase(run), _pareto(run),
                    summary, notes, fit.target, fit.log, survivors, interactions, best, steps, plateau)
