"""What the numbers mean: a typed verdict on the report's question (which hyperparameter matters most), decided
once from the local design's effects, or, in runs without one, from the global fANOVA view. Decide only:
`reports._wording` turns a verdict into sentences, and the tests assert on the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from reports._budget import Budget, rank_need
from reports._effects import LocalEffects
from reports._importance import ImportanceResult
from reports._steps import FORMED_BITS, step_carried

if TYPE_CHECKING:
    from reports._analysis import BudgetStep

KINDS = ("ranked", "contenders", "no_signal", "not_formed", "too_few_trials", "global_only")
GLOBAL_CASES = ("too_few", "not_formed", "few_to_rank", "not_predictive", "no_signal", "contenders", "carried",
                "leader")
# The global view names one hyperparameter only if it ranks first in at least FIRST_SURE of the bootstrap
# resamples; otherwise every one that ranks first in at least CONTENDER of them.
FIRST_SURE, CONTENDER = 0.8, 0.1
PREDICTS = 0.1  # a surrogate with a held-out R^2 below this predicts trials hardly better than their mean
RANK_P = 0.001  # a plain rank test this sure over the whole space is never called noise


# ---- caveats: each a typed item that the wording turns into one sentence ----------------------------------------
@dataclass(frozen=True)
class FormedShare:
    """Trials of the local design that trained normally but were not 1 bit/char below the unigram baseline."""
    n_formed: int
    n_trials: int
    unigram: float


@dataclass(frozen=True)
class FormedAt:
    """Global view: what had formed at the compared budget."""
    budget: Budget


@dataclass(frozen=True)
class MethodsDisagree:
    """Global view: fANOVA and permutation name different leaders, or the same one with intervals apart."""
    leader: str
    share: float
    low: float
    high: float
    other: str
    other_share: float
    other_low: float
    other_high: float


@dataclass(frozen=True)
class GlobalDiffers:
    """The global view over the whole space ranks another hyperparameter first than the local design."""
    local: str
    other: str
    share: float
    low: float
    high: float


@dataclass(frozen=True)
class Interaction:
    """Global view: the largest pairwise interaction is larger than the largest main effect."""
    a: str
    b: str
    share: float
    low: float
    high: float
    leader: str | None  # the answer's leader, when it is one of the pair


@dataclass(frozen=True)
class LaterBudgets:
    """Global view: the leader at the later milestones that enough trials reached."""
    leader: str
    chars: float
    later: tuple[BudgetStep, ...]


@dataclass(frozen=True)
class NoiseFloor:
    """The leader's effect is smaller than one seed's spread at the center: only the pairing shows it."""
    param: str
    effect: float
    seed_sd: float


@dataclass(frozen=True)
class RankTestSees:
    """A plain rank test on the search trials finds the hyperparameter (p < RANK_P) where the local design sees
    no effect around the center: not noise, a different question."""
    param: str
    test: str
    p: float


@dataclass(frozen=True)
class FailedMoves:
    """Moves that diverged or failed in some of their seeds (counted there as the uniform guess), so not ranked:
    (param, label, failed, seeds)."""
    moves: tuple[tuple[str, str, int, int], ...]
    uniform: float


@dataclass(frozen=True)
class Diverges:
    """Moves that diverged or failed in every seed: training breaks there, so they are not ranked
    ((param, label, seeds), in the study's order)."""
    moves: tuple[tuple[str, str, int], ...]


@dataclass(frozen=True)
class CenterFailed:
    n_failed: int
    n_seeds: int


@dataclass(frozen=True)
class PoolFallback:
    """A pool with too few degrees of freedom took the fit over every configuration (never below its own)."""
    pool: str
    df: int


@dataclass(frozen=True)
class Unmoved:
    params: tuple[str, ...]


@dataclass(frozen=True)
class SingleTest:
    """No hyperparameter stands out jointly, but one move's own 95% interval excludes 0 (one in 20 would)."""
    param: str
    label: str
    effect: float
    low: float
    high: float
    n_moves: int


Caveat = (FormedShare | FormedAt | MethodsDisagree | GlobalDiffers | Interaction | LaterBudgets | NoiseFloor
          | RankTestSees | FailedMoves | Diverges | CenterFailed | PoolFallback | Unmoved | SingleTest)


@dataclass(frozen=True)
class GlobalAnswer:
    """The global fANOVA view's answer: which `case` applies (GLOBAL_CASES) and whom it names. The numbers stay in
    `importance.table`, read by name."""

    case: str
    importance: ImportanceResult
    budget: Budget
    metric: str
    leader: str | None = None
    contenders: tuple[str, ...] = ()  # named with the leader, in an order the resamples cannot settle
    second: str | None = None  # the next after those named
    noise: tuple[str, ...] = ()
    carried: tuple[str, ...] = ()  # named ones whose lead is the optimizer steps they set
    caveats: tuple[Caveat, ...] = ()


@dataclass(frozen=True)
class Effect:
    """One hyperparameter in the local design: its largest move (label, kind, signed effect with its 95% interval)
    and its importance (the largest |effect|) with the simultaneous interval."""

    param: str
    label: str
    kind: str
    effect: float
    ci_low: float
    ci_high: float
    importance: float
    low: float
    high: float
    p_first: float
    center_value: object = None


@dataclass(frozen=True)
class Verdict:
    """The report's answer (`kind` in KINDS). `ranking` holds every moved hyperparameter by importance; `noise` the
    ones whose interval reaches 0 (less those a plain rank test finds: see RankTestSees)."""

    kind: str
    global_answer: GlobalAnswer
    leader: Effect | None = None
    contenders: tuple[Effect, ...] = ()
    ranking: tuple[Effect, ...] = ()
    noise: tuple[str, ...] = ()
    steps: float = math.nan
    chars: float = math.nan
    center: dict | None = None
    effects: LocalEffects | None = None
    caveats: tuple[Caveat, ...] = ()
    chosen: dict | None = None  # the study's choice for the final model (study.json local.chosen), as recorded


def _lead_row(t: pd.DataFrame) -> pd.Series:
    """The most important hyperparameter whose interval clears the noise floor, or the most important one."""
    real = t[~t["within_noise"]] if "within_noise" in t else t
    return real.iloc[0] if len(real) else t.iloc[0]


def global_answer(imp: ImportanceResult, budget: Budget, metric: str, *, interactions: pd.DataFrame | None = None,
                  budgets: list[BudgetStep] | None = None) -> GlobalAnswer:
    """Decide the global view's answer from the fANOVA importance at the compared budget.

    Args:
        imp: the importance fit (its table by importance, with `within_noise` and `p_first`).
        budget: the compared budget (its formation says whether quality had formed).
        metric: the metric's name.
        interactions: pairwise interaction shares, largest first.
        budgets: importance at the later milestones.

    Returns:
        A `GlobalAnswer`.
    """
    t, k, n = imp.table, len(imp.table), imp.n_trials
    formed = (FormedAt(budget),) if budget.formed and budget.formation is not None else ()
    base = {"importance": imp, "budget": budget, "metric": metric}
    if n < 5 or not np.isfinite(t["importance"]).any():
        return GlobalAnswer("too_few", **base, caveats=formed)
    if not budget.formed:
        top = str(t["param"].iloc[0])
        return GlobalAnswer("not_formed", **base, carried=(top,) if step_carried(top, budget.formation) else ())
    if n < rank_need(k):
        return GlobalAnswer("few_to_rank", **base, leader=str(t["param"].iloc[0]), caveats=formed)
    r2 = imp.fit.get("gp_loo_r2", math.nan)
    if math.isfinite(r2) and r2 < PREDICTS:
        return GlobalAnswer("not_predictive", **base, caveats=formed)
    real = t[~t["within_noise"]]
    noise = [str(p) for p in t.loc[t["within_noise"], "param"]]
    if real.empty:
        return GlobalAnswer("no_signal", **base, noise=tuple(noise), caveats=formed)
    top = _lead_row(t)
    lead = str(top["param"])
    p_first = t["p_first"].astype(float) if "p_first" in t else pd.Series(np.nan, index=t.index)
    rivals = [i for i in t.index if i != top.name and p_first[i] >= CONTENDER]
    contenders: list[str] = []
    if p_first[top.name] < FIRST_SURE and rivals:
        contenders = [str(t.loc[i, "param"]) for i in sorted(rivals, key=lambda i: -p_first[i])[:2]]
        case = "contenders"
    else:
        case = "carried" if step_carried(lead, budget.formation) else "leader"
    named = [lead, *contenders]
    rest = real[~real["param"].isin(named)]
    carried = [p for p in named if step_carried(p, budget.formation)] if case == "contenders" else []
    caveats: list[Caveat] = [*_methods(imp, lead), *_interaction(t, interactions, lead)]
    later = tuple(b for b in (budgets or []) if b.chars > budget.chars)
    if later:
        caveats.append(LaterBudgets(lead, budget.chars, later))
    return GlobalAnswer(case, **base, leader=lead, contenders=tuple(contenders),
                        second=str(rest["param"].iloc[0]) if len(rest) else None,
                        noise=tuple(p for p in noise if p not in named), carried=tuple(carried),
                        caveats=(*caveats, *formed))


def _interaction(t: pd.DataFrame, interactions: pd.DataFrame | None, lead: str) -> list[Caveat]:
    # Only when some main effect stands out: a 2% interaction "more than any main effect" says only that every
    # effect is small. Compared with the largest main effect, whichever hyperparameter the answer leads with.
    if interactions is None or not len(interactions) or t["within_noise"].all():
        return []
    pair = interactions.iloc[0]
    if not pair["share"] > float(np.nanmax(t["importance"].astype(float))):
        return []
    return [Interaction(str(pair["a"]), str(pair["b"]), float(pair["share"]), float(pair["ci_low"]),
                        float(pair["ci_high"]), lead if lead in (pair["a"], pair["b"]) else None)]


def _methods(imp: ImportanceResult, lead: str) -> list[Caveat]:
    t = imp.table
    if "permutation" not in t or not imp.fit.get("trees_oob_r2", math.nan) >= PREDICTS:
        return []
    perm = t.sort_values("permutation", ascending=False).iloc[0]
    mine = t.set_index("param").loc[lead]
    apart = (mine["permutation_ci_high"] < mine["ci_low"]) or (mine["permutation_ci_low"] > mine["ci_high"])
    if perm["param"] == lead and not apart:
        return []
    return [MethodsDisagree(lead, float(mine["importance"]), float(mine["ci_low"]), float(mine["ci_high"]),
                            str(perm["param"]), float(perm["permutation"]), float(perm["permutation_ci_low"]),
                            float(perm["permutation_ci_high"]))]


def _effect(r: pd.Series, center: dict) -> Effect:
    return Effect(str(r["param"]), str(r["label"]), str(r["kind"]), float(r["effect"]), float(r["ci_low"]),
                  float(r["ci_high"]), float(r["importance"]), float(r["imp_low"]), float(r["imp_high"]),
                  float(r["p_first"]), center.get(str(r["param"])))


def decide(effects: LocalEffects | None, answer: GlobalAnswer) -> Verdict:
    """The report's verdict: from the local design where the run has one, else the global view's (`global_only`).

    Local rules, in order: `too_few_trials` when no move has an interval (no center, or one seed); `not_formed` when
    the center's mean val_bpc is not at least FORMED_BITS below the unigram baseline; `no_signal` when no
    hyperparameter's importance interval excludes 0; `ranked` when the leader's (the most important one whose
    interval excludes 0) lies above every other's importance; `contenders` otherwise (the leader and every one
    whose interval overlaps it).
    """
    if effects is None:
        return Verdict("global_only", answer, chars=answer.budget.chars)
    e, p = effects, effects.params
    center = dict(e.center)
    base = {"steps": e.steps, "chars": e.budget_chars, "center": center, "effects": e, "chosen": e.chosen}
    moved = p[(p["n_moves"] > 0) & np.isfinite(p["importance"].astype(float))]
    ranking = tuple(_effect(r, center) for _, r in moved.iterrows())
    caveats = _local_caveats(e, moved)
    if not ranking or not np.isfinite(moved["imp_low"].astype(float)).any():
        return Verdict("too_few_trials", answer, ranking=ranking, caveats=caveats, **base)
    if math.isfinite(e.unigram) and not e.center_mean <= e.unigram - FORMED_BITS:
        return Verdict("not_formed", answer, ranking=ranking, caveats=caveats, **base)
    signal = [x for x in ranking if x.low > 0]
    seen = {c.param for c in caveats if isinstance(c, RankTestSees)}
    noise = tuple(x.param for x in ranking if not x.low > 0 and x.param not in seen)
    if not signal:
        single = [x for x in ranking if x.ci_low > 0 or x.ci_high < 0]
        extra = tuple(SingleTest(x.param, x.label, x.effect, x.ci_low, x.ci_high, len(e.moves)) for x in single[:1])
        return Verdict("no_signal", answer, leader=ranking[0], ranking=ranking, noise=noise,
                       caveats=(*caveats, *extra), **base)
    lead = signal[0]
    others = [x for x in ranking if x.param != lead.param]
    extra = _against_global(lead, answer) + _noise_floor(lead, e)
    if all(lead.low > x.importance for x in others):
        return Verdict("ranked", answer, leader=lead, ranking=ranking, noise=noise, caveats=(*caveats, *extra),
                       **base)
    rivals = tuple(x for x in others if x.high >= lead.low)
    named = {lead.param, *(x.param for x in rivals)}  # a contender is not noise, whatever its interval
    caveats = tuple(c for c in caveats if not (isinstance(c, RankTestSees) and c.param in named))
    return Verdict("contenders", answer, leader=lead, contenders=rivals, ranking=ranking,
                   noise=tuple(n for n in noise if n not in named), caveats=(*caveats, *extra), **base)


def _local_caveats(e: LocalEffects, moved: pd.DataFrame) -> tuple[Caveat, ...]:
    out: list[Caveat] = []
    if e.center_failed:
        out.append(CenterFailed(e.center_failed, e.center_n))
    m = e.moves
    broken = m["diverges"].astype(bool) if "diverges" in m else pd.Series(False, index=m.index)
    if broken.any():
        out.append(Diverges(tuple((str(r.param), str(r.label), int(r.n_failed)) for r in m[broken].itertuples())))
    bad = m[(m["n_failed"] > 0) & ~broken]
    if len(bad):
        out.append(FailedMoves(tuple((str(r.param), str(r.label), int(r.n_failed), int(r.n_seeds))
                                     for r in bad.itertuples()), e.uniform))
    out += [PoolFallback(pool.name, pool.df) for pool in e.pools.values() if pool.fallback and pool.df > 0]
    unmoved = e.params[~e.params["moved"].astype(bool)]["param"]  # not in the design (study.json local.params)
    if len(unmoved):
        out.append(Unmoved(tuple(str(x) for x in unmoved)))
    if math.isfinite(e.unigram) and e.n_formed < e.n_trained:
        out.append(FormedShare(e.n_formed, e.n_trained, e.unigram))
    for _, r in moved.iterrows():
        p = r.get("search_p", math.nan)
        if not r["imp_low"] > 0 and isinstance(p, float) and p < RANK_P:
            out.append(RankTestSees(str(r["param"]), str(r["search_test"]), float(p)))
    return tuple(out)


def _against_global(lead: Effect, answer: GlobalAnswer) -> tuple[Caveat, ...]:
    out: list[Caveat] = []
    if answer.case in ("leader", "contenders", "carried") and answer.leader and answer.leader != lead.param:
        r = answer.importance.table.set_index("param").loc[answer.leader]
        out.append(GlobalDiffers(lead.param, answer.leader, float(r["importance"]), float(r["ci_low"]),
                                 float(r["ci_high"])))
    out += [c for c in answer.caveats if isinstance(c, Interaction)]
    return tuple(out)


def _noise_floor(lead: Effect, e: LocalEffects) -> tuple[Caveat, ...]:
    if math.isfinite(e.center_sd) and abs(lead.effect) < e.center_sd:
        return (NoiseFloor(lead.param, lead.effect, e.center_sd),)
    return ()
