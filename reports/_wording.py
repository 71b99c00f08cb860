"""The report's words: one place that turns a `Verdict` into sentences, and the one set of number formatters.

`headline(v)` is the answer in at most HEADLINE_WORDS words (the verdict, its budget and its configuration);
`bullets(v)` the clauses a careful reader needs next, one sentence each. Nothing here decides: a sentence says
what `reports._verdict` chose.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from reports._budget import TRIALS_PER_PARAM, Budget, rank_need
from reports._effects import SAME_SHAPE, SHAPE
from reports._steps import FORMED_BITS
from reports._verdict import (CenterFailed, Diverges, Effect, FailedMoves, FormedAt, FormedShare, GlobalAnswer,
                              GlobalDiffers, Interaction, LaterBudgets, MethodsDisagree, NoiseFloor, PoolFallback,
                              RankTestSees, SingleTest, Unmoved, Verdict)

HEADLINE_WORDS = 40
CELLS = {"gru": "GRU", "lstm": "LSTM", "rnn_tanh": "tanh RNN", "rnn_relu": "ReLU RNN", "rnn": "RNN"}
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "sgd": "SGD"}


# ---- numbers ----------------------------------------------------------------------------------------------------
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


def steps_text(x: float) -> str:
    """A step count: 1,200."""
    return f"{x:,.0f}" if math.isfinite(x) else "n/a"


def signed(x: float, digits: int = 2) -> str:
    """An effect in bits/char with its sign ('+0.31', '−0.12': a true minus sign)."""
    return f"{x:+.{digits}f}".replace("-", "−") if math.isfinite(x) else "n/a"


def corr(x: float) -> str:
    """A correlation for prose, with a true minus sign."""
    return f"{x:.2f}".replace("-", "−") if math.isfinite(x) else "n/a"


def bits(x: float) -> str:
    """A magnitude in bits/char, two decimals."""
    return f"{x:.2f}" if math.isfinite(x) else "n/a"


def ci(lo: float, hi: float, fmt: Callable[[float], str] = pct) -> str:
    """An interval, 'lo–hi' in `fmt` ('lo to hi' when `fmt` gives signs), 'n/a' when either end is unknown."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    a, b = fmt(lo), fmt(hi)
    return f"{a} to {b}" if b[:1] in "+−" else f"{a}–{b}"


def p_text(p: float) -> str:
    """A p-value: 0.012, or 3e-6 below 0.001."""
    if not math.isfinite(p):
        return "n/a"
    if p >= 0.001:
        return f"{p:.3f}"
    m, e = f"{p:.0e}".split("e")
    return f"{m}e-{int(e[1:])}"


def join(items: list[str] | tuple[str, ...]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ---- budgets ----------------------------------------------------------------------------------------------------
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


def local_budget(v: Verdict) -> str:
    """'200 optimizer steps' (the local design's budget), or its characters when the steps are unknown."""
    return (f"{steps_text(v.steps)} optimizer steps" if math.isfinite(v.steps)
            else f"{chars(v.chars)} training characters")


def config_words(center: dict | None) -> str:
    """The center in a few words: 'a GRU 1×256 (Adam)'; 'the search's best configuration' when it says nothing."""
    c = center or {}
    cell = CELLS.get(str(c.get("cell")), _short(c["cell"])) if c.get("cell") is not None else "model"
    width, layers = c.get("hidden_size"), c.get("num_layers")
    opt = f" ({OPTIMIZERS.get(str(c['optimizer']), _short(c['optimizer']))})" if c.get("optimizer") is not None else ""
    if cell == "model" and width is None and not opt:
        return "the search's best configuration"
    if width is not None and layers is not None:
        what = f"{cell} {_num(layers)}×{_num(width)}"
    else:
        what = f"{_num(width)}-unit {cell}" if width is not None else cell
    article = "an" if what.split()[0] in ("LSTM", "RNN") or what[:1].lower() in "aeio8" else "a"
    return f"{article} {what}{opt}"


def _short(x: object) -> str:
    """A run-directory value for a headline: one word, at most 24 characters."""
    s = "_".join(str(x).split()) or "?"
    return s if len(s) <= 24 else s[:23] + "…"


def _num(x: object) -> str:
    try:
        f = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _short(x)
    return value_text(f)


def value_text(x: object) -> str:
    """A hyperparameter's value for prose: 4 significant digits for a float, an integer as one."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return str(x)
    return f"{int(x)}" if float(x).is_integer() else f"{x:.4g}"


def move_label(label: str) -> str:
    """A move's label as printed: 'x2.2' as '×2.2', '/2.2' as '÷2.2', '-0.075' with a true minus."""
    if label[:1] in "x/" and label[1:2].isdigit():
        return ("×" if label[0] == "x" else "÷") + label[1:]
    return label.replace("-", "−") if label[:1] in "+-" else label


def move_words(e: Effect) -> str:
    """A move as a reader sees it: '×2.2 from the center', 'lstm instead of gru', '+0.075 from the center'."""
    if e.label[:1] in "+-" or (e.label[:1] in "x/" and e.label[1:2].isdigit()):
        return f"{move_label(e.label)} from the center"
    return f"{_short(e.label)} instead of {_num(e.center_value)}" if e.center_value is not None else _short(e.label)


def effect_words(e: Effect) -> str:
    """'costs +0.31 bits/char (95% CI 0.22–0.40)', 'saves 0.12 ...', or 'shifts val_bpc by +0.05 (95% CI ...)'."""
    if e.ci_low > 0:
        return f"costs {signed(e.effect)} bits/char (95% CI {ci(e.ci_low, e.ci_high, bits)})"
    if e.ci_high < 0:
        return f"saves {bits(-e.effect)} bits/char (95% CI {ci(-e.ci_high, -e.ci_low, bits)})"
    return f"shifts val_bpc by {signed(e.effect)} bits/char (95% CI {ci(e.ci_low, e.ci_high, signed)})"


def _fit(*candidates: str) -> str:
    """The first candidate of at most HEADLINE_WORDS words (the last, cut, if none is)."""
    for c in candidates:
        if len(c.split()) <= HEADLINE_WORDS:
            return c
    return " ".join(candidates[-1].split()[:HEADLINE_WORDS - 1]) + " …"


def diverged_words(c: Diverges) -> str:
    """'num_layers 2 and 3 and cell rnn_tanh': the moves of a Diverges, grouped by hyperparameter."""
    by: dict[str, list[str]] = {}
    for p, label, _ in c.moves:
        by.setdefault(p, []).append(move_label(label))
    return join([f"{p} {join(labels)}" for p, labels in by.items()])


# ---- the verdict ------------------------------------------------------------------------------------------------
def headline(v: Verdict) -> str:
    """The answer in at most HEADLINE_WORDS words: the verdict, its budget and the configuration it holds at; where
    training broke at some moves, they are named after it when the words allow (else in a bullet)."""
    text = _headline(v)
    broken = next((c for c in v.caveats if isinstance(c, Diverges)), None)
    if broken is None or v.kind in ("global_only", "too_few_trials", "not_formed") or text.endswith("…"):
        return text
    return _fit(f"{text[:-1]}; training broke at {diverged_words(broken)}.", text)


def _headline(v: Verdict) -> str:
    if v.kind == "global_only":
        return global_headline(v.global_answer)
    at, around = local_budget(v), config_words(v.center)
    lead = v.leader
    if v.kind == "too_few_trials":
        e = v.effects
        why = ("its center has no finished trial" if e is None or not e.center_n else
               "with one seed per configuration a paired difference has no noise estimate" if len(e.seeds) < 2 else
               "no move has a finished trial beside the center's")
        return _fit(f"The local design around {around} at {at} cannot measure an effect: {why}.",
                    f"The local design cannot measure an effect: {why}.")
    if v.kind == "not_formed":
        e = v.effects
        assert e is not None
        return _fit(f"At {at} the center, {around}, had not formed: its val_bpc {e.center_mean:.2f} is not "
                    f"{FORMED_BITS:g} bit/char below the unigram baseline ({e.unigram:.2f}), so no hyperparameter "
                    f"is named.", f"At {at} the center had not formed, so no hyperparameter is named.")
    assert lead is not None
    if v.kind == "no_signal":
        return _fit(f"At {at} around {around}, no hyperparameter stands out from noise: every interval reaches 0; "
                    f"the largest effect, {lead.param} {move_words(lead)}, is {signed(lead.effect)} bits/char.",
                    f"At {at} around {around}, no hyperparameter stands out from noise.",
                    f"At {at} no hyperparameter stands out from noise.")
    if v.kind == "ranked":
        return _fit(f"At {at} around {around}, {lead.param} matters most: {move_words(lead)} {effect_words(lead)}.",
                    f"At {at} around the center, {lead.param} matters most: {move_words(lead)} "
                    f"{effect_words(lead)}.", f"At {at}, {lead.param} matters most.")
    if len(v.contenders) > 2:
        # Many intervals reach the leader's: a list of names would say nothing; the one clear effect does.
        n = len(v.contenders)
        return _fit(f"At {at} around {around}, {lead.param} has the largest clear effect: {move_words(lead)} "
                    f"{effect_words(lead)}; {n} others' intervals reach it, so their order is open.",
                    f"At {at}, {lead.param} has the largest clear effect: {move_words(lead)} {effect_words(lead)}; "
                    f"{n} others' intervals reach it.",
                    f"At {at}, {lead.param} has the largest clear effect; {n} others' intervals reach it.")
    named = [lead, *v.contenders]
    names = join([x.param for x in named])
    return _fit(f"At {at} around {around}, {names} matter most, in an order these seeds cannot settle: their largest "
                f"moves shift val_bpc by {join([signed(x.effect) for x in named])} bits/char.",
                f"At {at} around {around}, {names} matter most, in an order these seeds cannot settle.",
                f"At {at}, {names} matter most, in an order these seeds cannot settle.")


def bullets(v: Verdict) -> list[str]:
    """The sentences that follow the headline, one clause each."""
    if v.kind == "global_only":
        return global_bullets(v.global_answer)
    e = v.effects
    assert e is not None
    out: list[str] = []
    k = len(e.moves)
    named = {x.param for x in (v.leader, *v.contenders) if x is not None}
    if v.kind in ("ranked", "contenders") and v.leader is not None:
        many = len(v.contenders) > 2  # then the headline names the leader alone: one line for the rest
        for x in (v.leader,) if many else (v.leader, *v.contenders):
            first = (f"; it is the largest in {pct(x.p_first)} of draws of the effects from their sampling "
                     f"distributions" if math.isfinite(x.p_first) else "")
            out.append(f"{x.param}: {move_words(x)} {effect_words(x)}; its importance (largest |effect|) is "
                       f"{bits(x.importance)} bits/char, 95% CI {ci(x.low, x.high, bits)} jointly over all {k} "
                       f"moves{first}.")
        if many:
            rest = join([f"{x.param} {move_label(x.label)} {bits(x.importance)} ({ci(x.low, x.high, bits)})"
                         for x in v.contenders])
            out.append(f"{len(v.contenders)} others' joint intervals reach {v.leader.param}'s, so any of them may "
                       f"matter as much (importance, joint 95% CI): {rest} bits/char.")
    nxt = [x for x in v.ranking if x.param not in named and x.param not in v.noise][:3]
    if nxt and v.kind in ("ranked", "contenders"):
        out.append("Next: " + join([f"{x.param} {bits(x.importance)} ({ci(x.low, x.high, bits)})" for x in nxt])
                   + " bits/char.")
    if v.noise and v.kind in ("ranked", "contenders", "no_signal"):
        out.append(f"Within noise around the center (interval reaching 0): {join(list(v.noise))}.")
    if e.center_from == "spec":
        out.append("The center is the spec's reference configuration (local.center), not the search's best: every "
                   "seed and machine measures its effects around the same point, so their answers can be compared; "
                   "the final model's configuration comes from the search and the race.")
    out.append(_noise_sentence(e))
    fallback = [c for c in v.caveats if isinstance(c, PoolFallback)]
    if len(fallback) > 1:  # both pools: one sentence
        out.append(f"Both kinds of move had too few degrees of freedom for a noise estimate of their own: they use "
                   f"the fit over every configuration ({fallback[0].df} df).")
    out += [_caveat(c, local=True) for c in v.caveats if len(fallback) < 2 or not isinstance(c, PoolFallback)]
    if v.chosen and v.chosen.get("handed_over", True):
        moved = v.chosen.get("moved")
        what = f"{moved} moved to {value_text(v.chosen.get('value'))}" if moved else "the center"
        why = str(v.chosen.get("why") or "").strip().rstrip(".")
        out.append(f"The study trained the final model on {what}" + (f": {why}." if why else "."))
    return [s for s in out if s]


def _noise_sentence(e) -> str:
    pools = [p for p in e.pools.values() if p.n_moves and math.isfinite(p.sd)]
    if not pools:
        return ""
    what = {SAME_SHAPE: "moves that keep the model's tensors", SHAPE: "moves that change them"}
    pair = "; ".join(f"{p.sd:.3f} for the {p.n_moves} {what.get(p.name, p.name)} ({p.df} df)" for p in pools)
    if not math.isfinite(e.center_sd):
        return f"A paired difference with the same seed varies by {pair} (sd, bits/char)."
    return (f"One seed moves the center by {e.center_sd:.3f} bits/char (sd over {e.center_n} seeds); a paired "
            f"difference with the same seed varies by {pair}.")


def _caveat(c, *, local: bool) -> str:
    """One caveat as one sentence (global ones worded for the view they appear in)."""
    if isinstance(c, FormedShare):
        below = f"{FORMED_BITS:g} bit/char below the unigram baseline ({c.unigram:.2f})"
        if not c.n_formed:
            return f"None of the {c.n_trials} local trials that trained normally was {below}."
        return f"{c.n_trials - c.n_formed} of the {c.n_trials} local trials that trained normally were not {below}."
    if isinstance(c, FormedAt):
        return " ".join(formed_sentences(c.budget))
    if isinstance(c, MethodsDisagree):
        if c.other != c.leader:
            return (f"The two methods disagree: fANOVA (GP) names {c.leader} ({pct(c.share)}, {ci(c.low, c.high)}), "
                    f"permutation names {c.other} ({pct(c.other_share)}, {ci(c.other_low, c.other_high)}).")
        return (f"The two methods name {c.leader} but disagree on its share: fANOVA (GP) {pct(c.share)} "
                f"({ci(c.low, c.high)}), permutation {pct(c.other_share)} ({ci(c.other_low, c.other_high)}), "
                f"intervals apart.")
    if isinstance(c, GlobalDiffers):
        return (f"Over the whole search space the fANOVA view ranks {c.other} first ({pct(c.share)}, 95% CI "
                f"{ci(c.low, c.high)}); around the center {c.local} leads: the two answer different questions.")
    if isinstance(c, Interaction):
        ival = f", 95% CI {ci(c.low, c.high)}" if math.isfinite(c.low) else ""
        if c.leader is not None and not local:
            other = c.b if c.a == c.leader else c.a
            return (f"{c.leader} acts mostly through its interaction with {other}: the pair explains {pct(c.share)} "
                    f"of the variance{ival}, more than any main effect.")
        s = (f"{c.a} and {c.b} act mostly together: their interaction explains {pct(c.share)}{ival}, more than "
             f"any main effect")
        return (f"Over the whole search space {s}, so a move's effect measured here holds at this center."
                if local else s[:1].upper() + s[1:] + ".")
    if isinstance(c, LaterBudgets):
        return _later(c)
    if isinstance(c, NoiseFloor):
        return (f"{c.param}'s effect ({signed(c.effect)} bits/char) is smaller than one seed's spread at the center "
                f"(sd {c.seed_sd:.3f}): a single run would not show it; the paired seeds do.")
    if isinstance(c, RankTestSees):
        return (f"The search trials' rank test ({c.test}) finds {c.param} (p = {p_text(c.p)}) across the whole "
                f"space; around the center its effect is within noise, so it is not called noise here.")
    if isinstance(c, Diverges):
        return (f"Training broke (diverged or failed in every seed) at {diverged_words(c)}: not ranked, since "
                f"a broken run scores as a uniform guess whatever broke it.")
    if isinstance(c, FailedMoves):
        listed = join([f"{p} {move_label(label)} ({n} of {s} seeds)" for p, label, n, s in c.moves])
        return (f"Training was unstable (diverged or failed in some seeds, counted there as the uniform guess, "
                f"{c.uniform:.2f} bits/char) at {listed}: not ranked, since a broken seed's score is a uniform "
                f"guess whatever broke it.")
    if isinstance(c, CenterFailed):
        return (f"The center itself diverged or failed in {c.n_failed} of its {c.n_seeds} seeds (counted as the "
                f"uniform guess).")
    if isinstance(c, PoolFallback):
        which = {SAME_SHAPE: "keep the model's tensors", SHAPE: "change them"}.get(c.pool, c.pool)
        return (f"The moves that {which} had too few degrees of freedom for a noise estimate of their own: they use "
                f"the fit over every configuration ({c.df} df), never below their own.")
    if isinstance(c, Unmoved):
        return f"Not moved by the local design: {join(list(c.params))}."
    if isinstance(c, SingleTest):
        return (f"Alone, the interval of {c.param} {c.label} ({ci(c.low, c.high, signed)}) excludes 0, but among "
                f"{c.n_moves} moves one in 20 would by chance: jointly, none stands out.")
    raise TypeError(f"no wording for {type(c).__name__}")


# ---- the global fANOVA view -------------------------------------------------------------------------------------
def _row(g: GlobalAnswer, name: str):
    return g.importance.table.set_index("param").loc[name]


def global_headline(g: GlobalAnswer) -> str:
    """The global view's answer in at most HEADLINE_WORDS words, with the budget it was compared at."""
    imp, b, t = g.importance, g.budget, g.importance.table
    n, k = imp.n_trials, len(t)
    where = compared_words(n, b)
    short = where.split(" (")[0]
    if g.case == "too_few":
        return (f"Too few comparable trials ({n}) to rank the hyperparameters; at least 5 finished trials with a "
                f"finite {g.metric} are needed.")
    if g.case == "not_formed":
        f = b.formation
        return _fit(f"Quality had not formed at any budget these trials share: at {chars(b.chars)} characters "
                    f"{f.n_short} of {f.n_compared} compared trials had taken fewer than {f.need_steps} optimizer "
                    f"steps (the fewest {steps_text(f.fewest_steps)}), so no hyperparameter is named.",
                    "Quality had not formed at any budget these trials share, so no hyperparameter is named.")
    if g.case == "few_to_rank":
        r = _row(g, g.leader)
        return _fit(f"At {chars(b.chars)} training characters, {n} comparable trials cannot rank {k} hyperparameters "
                    f"(a ranking needs about {rank_need(k)}, {TRIALS_PER_PARAM} per hyperparameter): {g.leader} leads "
                    f"in this sample ({pct(r['importance'])}, 95% CI {ci(r['ci_low'], r['ci_high'])}), which is no "
                    f"ranking.", f"{n} comparable trials cannot rank {k} hyperparameters (a ranking needs about "
                    f"{rank_need(k)}): {g.leader} leads in this sample, which is no ranking.")
    if g.case == "not_predictive":
        r2 = imp.fit.get("gp_loo_r2", math.nan)
        tail = (": the surrogate predicts a left-out trial no better than the mean of the others (leave-one-out R² "
                f"{r2:.2f}).")
        return _fit(f"No hyperparameter's effect can be told from noise across {where}{tail}",
                    f"No hyperparameter's effect can be told from noise across {short}{tail}")
    if g.case == "no_signal":
        tail = f": every interval reaches the noise floor of {pct(imp.floors['applied'])}."
        return _fit(f"No hyperparameter stands out from noise in {imp.target} across {where}{tail}",
                    f"No hyperparameter stands out from noise in {imp.target} across {short}{tail}")
    lead = _row(g, g.leader)
    share = f"{pct(lead['importance'])} (95% CI {ci(lead['ci_low'], lead['ci_high'])})"
    inter = next((c for c in g.caveats if isinstance(c, Interaction)), None)
    if inter is not None:
        ival = f" (95% CI {ci(inter.low, inter.high)})" if math.isfinite(inter.low) else ""
        who = (f"{inter.leader}, through its interaction with {inter.b if inter.a == inter.leader else inter.a}, "
               f"matters most: the pair explains" if inter.leader else
               f"{inter.a} and {inter.b} act mostly together: their interaction explains")
        body = f"{who} {pct(inter.share)}{ival} of the variance in {imp.target}, more than any main effect, across"
        return _fit(f"{body} {where}.", f"{body} {short}.")
    if g.case == "contenders":
        body = (f"{join([g.leader, *g.contenders])} matter most, in an order these trials cannot settle: {g.leader} "
                f"explains {share} of the variance in {imp.target} across")
        return _fit(f"{body} {where}.", f"{body} {short}.")
    if g.case == "carried":
        body = (f"{g.leader} leads, but its lead is carried by the optimizer steps it sets (Spearman "
                f"{corr(b.formation.spearman)} between score and steps), across")
        return _fit(f"{body} {where}.", f"{body} {short}.")
    body = f"{g.leader} matters most: it explains {share} of the variance in {imp.target} across"
    return _fit(f"{body} {where}.", f"{body} {short}.")


def global_bullets(g: GlobalAnswer) -> list[str]:
    """The global view's clauses after its headline, one sentence each."""
    imp, b, t = g.importance, g.budget, g.importance.table.set_index("param")
    out: list[str] = []
    where = compared_words(imp.n_trials, b)
    if g.case == "not_formed":
        return _not_formed(g)
    if g.case == "few_to_rank":
        out += [f"Budget: {where}, by the variance in {imp.target}.",
                (f"A study of at least {rank_need(len(t))} trials, or a second study pooled with this one (python -m "
                 f"reports.build RUN_A RUN_B --out DIR), would settle it.")]
    if g.case in ("leader", "contenders", "carried"):
        out += [_caveat(c, local=False) for c in g.caveats if isinstance(c, MethodsDisagree)]
        lead = t.loc[g.leader]
        share = f"{pct(lead['importance'])} (95% CI {ci(lead['ci_low'], lead['ci_high'])})"
        if any(isinstance(c, Interaction) for c in g.caveats):
            order = (f", in an order with {join(list(g.contenders))} that these trials cannot settle"
                     if g.contenders else "")
            out.append(f"Of the main effects, {g.leader} explains {share} of the variance in {imp.target}{order}.")
        if g.case == "contenders":
            floor = {c: ", interval reaching the noise floor" if t.loc[c, "within_noise"] else "" for c in g.contenders}
            out.append(f"{g.leader} ranks first in {pct(lead['p_first'])} of bootstrap resamples; " + "; ".join(
                f"{c} {pct(t.loc[c, 'importance'])} ({ci(t.loc[c, 'ci_low'], t.loc[c, 'ci_high'])}, first in "
                f"{pct(t.loc[c, 'p_first'])}{floor[c]})" for c in g.contenders) + ".")
            if g.carried:
                sets = "it sets" if len(g.carried) == 1 else "they set"
                out.append(f"The lead of {join(list(g.carried))} is carried by the optimizer steps {sets} (Spearman "
                           f"{corr(b.formation.spearman)} between score and steps).")
        if g.case == "carried":
            out.append(f"It explains {share} of the variance in {imp.target}.")
        if g.second is not None:
            r = t.loc[g.second]
            out.append(f"{g.second} is {'second' if g.case == 'leader' else 'next'} ({pct(r['importance'])}, "
                       f"{ci(r['ci_low'], r['ci_high'])}).")
    if g.noise and g.case in ("leader", "contenders", "carried"):
        out.append(f"{join(list(g.noise))} {'is' if len(g.noise) == 1 else 'are'} within noise.")
    out += [_caveat(c, local=False) for c in g.caveats if isinstance(c, LaterBudgets)]
    inter = [c for c in g.caveats if isinstance(c, Interaction)]
    if inter and g.case not in ("leader", "contenders", "carried"):
        out.append(_caveat(inter[0], local=False))
    if g.case not in ("too_few", "few_to_rank") and where not in global_headline(g):
        out.append(f"Budget: {where}.")
    out += [s for c in g.caveats if isinstance(c, FormedAt) for s in formed_sentences(c.budget)]
    return [s for s in out if s]


def _not_formed(g: GlobalAnswer) -> list[str]:
    f = g.budget.formation
    n, out = f.n_compared, []
    if math.isfinite(f.formed_share):
        out.append(f"{n - f.n_formed} of {n} were not yet {FORMED_BITS:g} bit/char below the unigram baseline "
                   f"({f.unigram:.2f}).")
    out.append("The importance below measures how far each trial had got, not what its hyperparameters do once "
               "trained.")
    if g.carried:
        out.append(f"{g.carried[0]} ranks first there, but its lead is carried by the optimizer steps it sets "
                   f"(Spearman {corr(f.spearman)} between score and steps).")
    if math.isfinite(f.max_step_chars):
        out.append(f"To compare trained models, compare every trial after at least {f.need_steps} steps: "
                   f"{chars(f.need_steps * f.max_step_chars)} characters for the trials that take "
                   f"{f.max_step_chars:,.0f} a step (a later first rung, or a smaller batch_size × seq_len).")
    return out


def formed_sentences(budget: Budget) -> list[str]:
    """What had formed at the compared budget: the share of compared trials 1 bit/char below the unigram baseline,
    the fewest steps, whether scores follow the steps taken, and why the comparison moved ([] without steps)."""
    f = budget.formation
    if f is None or not f.n_compared or not math.isfinite(f.fewest_steps):
        return []
    rho = (f"n/a: every compared trial took the same {steps_text(f.same_steps)} steps" if math.isfinite(f.same_steps)
           else corr(f.spearman))
    share = (f"At this budget {pct(f.formed_share)} of the compared trials ({f.n_formed} of {f.n_compared}) had "
             f"formed, at least {FORMED_BITS:g} bit/char below the unigram baseline ({f.unigram:.2f})."
             if math.isfinite(f.formed_share) else
             "Whether the compared trials had formed is unknown (the run has no unigram baseline).")
    fewest = (f"The fewest optimizer steps any compared trial had taken is {steps_text(f.fewest_steps)} (leaving the "
              f"unigram plateau takes about {f.need_steps}); Spearman correlation of score with steps taken: {rho}.")
    out = [share, fewest]
    if math.isfinite(budget.moved_from):
        at = budget.milestones[abs(budget.milestones["chars_seen"] - budget.moved_from) <= 1e-9 * budget.moved_from]
        if len(at) and "n_short" in at:
            out.append(f"The comparison is at {chars(budget.chars)} rather than at {chars(budget.moved_from)}, where "
                       f"{int(at['n_short'].iloc[0])} of {int(at['n_trials'].iloc[0])} trials had taken fewer than "
                       f"{f.need_steps} steps.")
    return out


def _later(c: LaterBudgets) -> str:
    lead, later = c.leader, list(c.later)
    changes = [b for b in later if b.leader != lead and b.clear]
    vague = [b for b in later if not b.clear]
    rhos = ", ".join(f"{b.spearman_prev:.2f}" for b in later if math.isfinite(b.spearman_prev))
    if changes:
        how = "the leader changes: " + ", ".join(f"{b.leader} at {chars(b.chars)} ({b.n_trials} trials, "
                                                 f"{pct(b.share)}, {ci(b.ci_low, b.ci_high)})" for b in changes)
    elif not vague:
        how = f"the leader stays {lead} (up to {chars(later[-1].chars)}, {later[-1].n_trials} trials)"
    else:
        how = (f"the leader stays {lead} where any hyperparameter stands out" if len(vague) < len(later)
               else "no hyperparameter stands out from noise")
    if vague and (changes or len(vague) < len(later)):
        how += "; none stands out at " + ", ".join(f"{chars(b.chars)} ({b.n_trials} trials)" for b in vague)
    elif vague:
        how += " at " + ", ".join(f"{chars(b.chars)} ({b.n_trials} trials)" for b in vague)
    return (f"This holds at {chars(c.chars)} characters, and at the later budgets {how}"
            + (f"; rank correlation of trial quality between successive budgets {rhos}" if rhos else "") + ".")


def plan_words(study: dict) -> str:
    """The time plan a study ran on, and where it came from (study.json `plan`, `plan_source`); "" without one."""
    p = study.get("plan")
    if not isinstance(p, dict) or not p.get("minutes"):
        return ""
    step = p.get("step_chars") or 0

    def steps(n: float) -> str:
        return f"{int(n) // step:,} optimizer steps" if step else f"{int(n):,} characters"

    measured = p.get("measured_chars_per_s")
    # The plan's own mark, not study.json's plan_source, which said "replayed" for every plan before 2026-12-03.
    source = ("replayed from another study's plan (--plan-from), not measured here" if p.get("replayed") else
              f"measured on this machine ({measured:,.0f} chars/s, rounded down to a power of sqrt 2)" if measured
              else "measured on this machine, rounded down to a power of sqrt 2")
    parts = [f"{p.get('planned', ['?'])[0]} search trials of {steps(p.get('budget_chars', 0))}"]
    if p.get("local_points"):
        parts.append(f"a local design of {p['local_points']} trials of {steps(p.get('local_chars', 0))}")
    parts.append(f"{p.get('final_s', 0) / 60:.1f} minutes for the final model")
    return (f"The plan: {p['minutes']:g} minutes at {p.get('chars_per_s', 0):,.0f} chars/s per trial, "
            f"{p.get('parallel', 1)} at once, {source}: {join(parts)}.")

