"""The report's text: turns an `Analysis` into blocks that both renderers print the same way."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports._analysis import Analysis
from reports._budget import rung_counts
from reports._effects import N_DRAWS, SAME_SHAPE
from reports._final import final_blocks, final_model
from reports._importance import agreement
from reports._render import Block, Code, Details, Figure, Heading, Para, Table
from reports._steps import FORMED_BITS
from reports._verdict import FIRST_SURE, PREDICTS
from reports._wording import (bits, chars, ci, compared_words, config_words, corr, global_bullets, global_headline,
                              local_budget, move_label, p_text, pct, plan_words, signed, steps_text, value_text)

SAMPLE_DISPLAY_CHARS = 1500


def _center_source(e) -> str:
    """Where the local design's center came from, as the report's effects section names it."""
    return ("the spec's fixed reference configuration (local.center)" if e.center_from == "spec" else
            "the search's best configuration")


def importance_table(a: Analysis) -> pd.DataFrame:
    """The table shown in the report (the CSV keeps the raw numbers)."""
    t = a.importance.table
    out = pd.DataFrame({"rank": t["rank"], "hyperparameter": t["param"],
                        "fANOVA (GP)": [pct(v) for v in t["importance"]],
                        "95% CI": [ci(lo, hi) for lo, hi in zip(t["ci_low"], t["ci_high"])],
                        "within noise": t["within_noise"].astype(bool)})
    if "p_first" in t and np.isfinite(t["p_first"].astype(float)).any():
        out.insert(4, "first in", [pct(v) for v in t["p_first"]])  # share of bootstrap resamples
    if "permutation" in t and _trees_predict(a):
        out["permutation"] = [pct(v) for v in t["permutation"]]
        out["permutation 95% CI"] = [ci(lo, hi) for lo, hi in zip(t["permutation_ci_low"],
                                                                     t["permutation_ci_high"])]
    elif "permutation" in t:
        out["permutation"] = "not predictive"  # see the paragraph below the table
    for col, name in (("optuna_fanova", "Optuna fANOVA"), ("optuna_ped_anova", "Optuna PED-ANOVA")):
        if col in t:
            out[name] = [pct(v) for v in t[col]]
    return out


def _trees_predict(a: Analysis) -> bool:
    r2 = a.importance.fit.get("trees_oob_r2", math.nan)
    return math.isfinite(r2) and r2 >= PREDICTS


def _interaction_blocks(a: Analysis) -> list[Block]:
    i = a.interactions
    if i is None or i.empty:
        return []
    top = i.iloc[0]
    rest = ", ".join(f"{r.a} × {r.b} {pct(r.share)}" for r in i.iloc[1:4].itertuples())
    return [Para(f"Largest pairwise interaction: {top['a']} × {top['b']}, {pct(top['share'])} of the variance of "
                 f"{a.target} (95% CI {ci(top['ci_low'], top['ci_high'])}; the joint effect of the two, minus both "
                 f"main effects, from the same GP; interval: one posterior draw of the pair's joint effect per "
                 f"bootstrap resample of the trials, as for the main effects). Next: {rest or 'none'}.")]


def _budget_step_blocks(a: Analysis) -> list[Block]:
    if len(a.budgets) < 2:
        return []
    t = pd.DataFrame({"characters": [f"{b.chars:,.0f}" for b in a.budgets],
                      "trials": [b.n_trials for b in a.budgets],
                      "fewest steps": [steps_text(b.fewest_steps) + ("" if b.formed else " (not formed)")
                                       for b in a.budgets],
                      "leader": [b.leader for b in a.budgets],
                      "its share (95% CI)": [f"{pct(b.share)} ({ci(b.ci_low, b.ci_high)})" for b in a.budgets],
                      "Spearman with previous budget": ["" if not math.isfinite(b.spearman_prev) else
                                                        f"{b.spearman_prev:.2f} ({b.n_both} trials)"
                                                        for b in a.budgets]})
    return [Heading(3, "Importance at each budget"),
            Para("fANOVA at every evaluation milestone that at least max(10, 2 per hyperparameter) valid search "
                 "trials reached, and the rank correlation of trial quality (best val_bpc up to the milestone) with "
                 "the previous one over the trials that reached both. Later milestones hold only the scheduler's "
                 "survivors: a changed leader there says what matters among configurations already good."),
            Table(t)]


def _budget_blocks(a: Analysis) -> list[Block]:
    b, c = a.budget, a.counts
    rung = f" (ASHA rung {b.rung})" if b.rung else ""
    full = " This is the full training budget." if b.is_full else (
        " Trials that trained longer are judged by the best val_bpc they had reached at this point, so "
        "every compared value comes from the same number of training characters.")
    if not b.n_trials:
        return [Heading(2, "Equal budgets"), Para(f"No valid search trial has a finite {a.run.metric} in "
                                                  f"curves.parquet; there is nothing to compare.")]
    if math.isfinite(b.moved_from):
        chosen = (f"the first evaluation milestone after {b.moved_from:,.0f} characters (the highest that nearly all "
                  f"valid search trials reached) at which every compared trial had taken the optimizer steps it "
                  f"needs to leave the unigram plateau, and that at least {b.min_trials} trials reached")
    else:
        chosen = (f"the highest evaluation milestone that at least {b.min_trials} valid search trials reached "
                  f"(nearly all of them, unless --min-trials says otherwise)")
    text = (f"Trials are compared at {b.chars:,.0f} training characters{rung}, {chosen}: {b.n_trials} of {c.valid} "
            f"valid search trials are compared by their best {a.run.metric} up to that budget.{full}")
    why = ("Later milestones hold only the trials the scheduler promoted. Those were selected for being good "
           "(and a model-based sampler such as TPE puts them in one region of the search space), so the spread "
           "among them is range-restricted and would understate, or misattribute, what the hyperparameters do. "
           "The milestone (nearly) every trial reached is the only unbiased sample of the search space; a later "
           "one serves only as the check below.")
    if math.isfinite(b.moved_from) and b.survivors:
        why = (f"At {b.moved_from:,.0f} characters, the milestone nearly every trial reached and the only unbiased "
               f"sample of the search space, some compared trials had not yet taken the optimizer steps they need "
               f"to leave the unigram plateau: their scores there say how far they had got. This comparison is at "
               f"the first later milestone where every compared trial had, at the price of a sample the scheduler "
               f"selected ({b.n_trials} trials it promoted, which a model-based sampler such as TPE puts in one "
               f"region of the search space): its spread is range-restricted, and a hyperparameter the scheduler "
               f"already selected on can look less important than it is.")
    excl = (f"Of {c.search} search trials, {c.diverged} diverged, {c.failed} failed and {c.no_value} never "
            f"produced a finite {a.run.metric}; they are left out of every fit. {c.repeats} repeat trials "
            f"(role repeat) measure the seed noise and are kept out of the importance fit as well.")
    m = b.milestones.rename(columns={"chars_seen": "characters seen", "n_trials": "valid trials that reached it",
                                     "fewest_steps": "fewest optimizer steps",
                                     "n_short": "trials short of the steps to leave the plateau"})
    m["characters seen"] = m["characters seen"].map(lambda x: f"{x:,.0f}")
    if "fewest optimizer steps" in m:
        m["fewest optimizer steps"] = m["fewest optimizer steps"].map(steps_text)
    return [Heading(2, "Equal budgets"), Para(text), *_formed_blocks(a), Para(why), Para(excl), Table(m),
            *_rung_blocks(a), *_survivor_blocks(a)]


def _rung_blocks(a: Analysis) -> list[Block]:
    r = rung_counts(a.run.study)
    if r.empty:
        return []
    t = pd.DataFrame({"rung (characters)": [f"{v:,.0f}" if isinstance(v, (int, float)) else "" for v in r["chars"]],
                      "optimizer steps": [f"{v:,.0f}" if isinstance(v, (int, float)) else "" for v in r["steps"]],
                      "planned trials": r["planned"], "trials that reached it": r["reached"]})
    return [Para("Promotion, as study.json records it: per rung, the trials synchronous successive halving would "
                 "send there (planned) and those that reached it (optimizer steps: of a trial that takes the most "
                 "characters a step)."), Table(t)]


def _formed_blocks(a: Analysis) -> list[Block]:
    """Whether quality had formed at the compared budget, in optimizer steps, and when trials left the plateau."""
    f, p = a.budget.formation, a.plateau
    if f is None or not f.n_compared:
        return []
    share = (f"{pct(f.formed_share)} ({f.n_formed} of {f.n_compared}) of the compared trials had formed: their "
             f"{a.run.metric} was at least {FORMED_BITS:g} bit/char below the unigram baseline ({f.unigram:.3f}, "
             f"the character frequencies alone)" if math.isfinite(f.formed_share) else
             "Whether the compared trials had formed is unknown: the run has no unigram baseline (baselines.parquet)")
    rho = (f"n/a: every compared trial took the same {steps_text(f.same_steps)} steps" if math.isfinite(f.same_steps)
           else corr(f.spearman))
    verdict = ("Every compared trial had taken at least that many, so quality had formed at this budget." if f.qualifies
               else f"{f.n_short} of {f.n_compared} compared trials had taken fewer, and no later milestone with "
                    f"enough trials to rank had every trial past it: quality had NOT formed, and the importance "
                    f"in this report measures how far trials had got, not what their hyperparameters do once "
                    f"trained.")
    out = [Para(
        f"A model learns per optimizer step, and the characters a step takes (batch_size × seq_len) differ "
        f"between trials, so equal characters are not equal training. The trials were compared "
        f"{compared_words(f.n_compared, a.budget).split(' compared ', 1)[1]}; a trial needs about {f.need_steps} "
        f"to leave the unigram plateau (study.json's scheduler.min_steps, else 100). {verdict} {share}. Spearman "
        f"rank correlation of their scores with the steps they had taken: {rho}.")]
    if p is not None and p.n_left:
        out.append(Para(
            f"The steps it takes to leave the plateau, measured from curves: {p.n_left} of {p.n_trials} valid search "
            f"trials got {FORMED_BITS:g} bit/char below the unigram baseline at some evaluation; the first such "
            f"evaluation came after a median of {steps_text(p.median)} optimizer steps (90th percentile "
            f"{steps_text(p.p90)}). Evaluations are sparse, so these are upper bounds."))
    elif p is not None and math.isfinite(f.unigram):
        out.append(Para(f"None of the {p.n_trials} valid search trials got {FORMED_BITS:g} bit/char below the unigram "
                        f"baseline at any evaluation."))
    return out


def _survivor_blocks(a: Analysis) -> list[Block]:
    s = a.survivors
    if s is None:
        return []
    b, t = s.budget, s.importance.table
    where = "the full budget" if b.is_full else f"ASHA rung {b.rung}" if b.rung else "a later milestone"
    main = a.importance.table.set_index("param")["importance"]
    both = t.set_index("param")["importance"].to_frame("later").join(main.rename("primary"))
    rho = agreement(both.reset_index(), ["primary", "later"])["spearman"].iloc[0]
    top = t["param"].iloc[0]
    same = top == a.importance.table["param"].iloc[0]
    return [
        Heading(3, f"Check: survivors only, at {b.chars:,.0f} characters"),
        Para(f"The {b.n_trials} valid search trials that reached {b.chars:,.0f} characters ({where}), compared by "
             f"their best {a.run.metric} up to it. This sample is selected (survivors only), so it answers a "
             f"narrower question: what still matters among configurations that were already good. Here {top} "
             f"ranks first ({pct(t['importance'].iloc[0])}, {ci(t['ci_low'].iloc[0], t['ci_high'].iloc[0])}), "
             f"{'as' if same else 'unlike'} at the compared budget; Spearman rank correlation with the ranking "
             f"above {rho:.2f}."),
        Table(pd.DataFrame({"rank": t["rank"], "hyperparameter": t["param"],
                            "fANOVA (GP), survivors": [pct(v) for v in t["importance"]],
                            "95% CI": [ci(lo, hi) for lo, hi in zip(t["ci_low"], t["ci_high"])],
                            "within noise": t["within_noise"].astype(bool)})),
    ]


def _noise_blocks(a: Analysis) -> list[Block]:
    s, imp = a.seed, a.importance
    null = imp.floors.get("null_fanova", math.nan)
    out = [Heading(2, "Noise floor")]
    if s.floor.known:
        out.append(Para(
            f"Retraining the chosen configuration with {s.floor.n_repeats} other seeds moves {a.run.metric} by a "
            f"standard deviation of {s.floor.sd:.4f} bits/char (95% CI {s.sd_low:.4f}–{s.sd_high:.4f}) at the "
            f"compared budget: the seed alone accounts for about {pct(s.share)} of the variance of "
            f"{a.target} over the search space, and at least {pct(s.share_low)}."))
    else:
        out.append(Para("The seed noise floor is unknown: the run has fewer than two repeat trials that reached "
                        "the compared budget (study.run --repeats K retrains the best configuration with K seeds)."))
    b = a.best
    if b is not None and b.repeats:
        out.append(Para(
            f"The chosen search trial (the best whose seed repeats all trained), {b.trial_id}, reached a best "
            f"val_bpc of {b.search:.4f} bits/char; its "
            f"{len(b.repeats)} reruns with other seeds reach {b.expected:.4f} on average, its expected score. The "
            f"gap, {b.gap:+.4f}, is selection bias: the best of many noisy trials is partly the luckiest. The noise "
            f"floor above is measured on the reruns alone, never on the selected trial's own score."))
    out.append(Para(
        f"A column of random numbers, fitted alongside the hyperparameters on every resample, gets up to "
        f"{pct(null)} importance (95th percentile) from the same estimator. A hyperparameter whose interval "
        f"reaches {pct(imp.floors['applied'])}, the largest of this null floor, the lower bound of the seed's "
        f"share and {pct(imp.floors.get('resolution', 0.0))} (the smallest share the report calls an effect), "
        f"is marked as indistinguishable from no effect."))
    return out


def _method_paras(a: Analysis) -> list[Block]:
    imp = a.importance
    fit = imp.fit
    scale = (f"The fit is on {a.target}, not on {a.run.metric}: {a.run.metric} is skewed (trials that learned "
             f"nothing sit near uniform guessing, far above the rest), and on the raw scale a handful of them would "
             f"carry most of the variance. Importance is a share of the variance of {a.target}, i.e. of relative "
             f"changes in {a.run.metric}; effect plots are shown back in {a.run.metric}. "
             if a.log_target else "")
    text = (f"{scale}fANOVA: the variance of each hyperparameter's main effect over the search space (log scale "
            f"where the search space says so), as a share of the total variance of {a.target} there, seed noise "
            f"included; computed on a Gaussian process with an additive plus interaction kernel, which on a few "
            f"dozen trials switches irrelevant hyperparameters off instead of fitting noise with them. Permutation: "
            f"boosted trees fitted on each bootstrap resample, scored on the trials left out of it; the rise in "
            f"squared error when one hyperparameter is scrambled, over twice the variance. Both are averaged over "
            f"the bootstrap resamples (bagging). Intervals: percentile bootstrap over trials, {imp.n_bootstrap} "
            f"resamples; \"first in\" is the share of the resamples in which a hyperparameter has the largest fANOVA "
            f"importance, and the answer above names a single one only when that share is at least "
            f"{pct(FIRST_SURE)}. The GP's kernel hyperparameters are fitted once "
            f"on all trials and held fixed on the resamples, so its intervals show how the estimate moves with the "
            f"sample of trials, given which hyperparameters the full data says matter; the permutation column, "
            f"refitted from scratch on every resample, is the check on that choice. Hyperparameters the search "
            f"never varied independently (e.g. one value only ever tried together with one optimizer) cannot be "
            f"told apart by any method.")
    quality = (f"Surrogate fit: leave-one-out R² {fit.get('gp_loo_r2', math.nan):.2f} (GP), out-of-bag R² "
               f"{fit.get('trees_oob_r2', math.nan):.2f} (boosted trees). Main effects together explain "
               f"{pct(float(np.nansum(imp.table['importance'])))}; interactions about "
               f"{pct(fit.get('interaction_share', math.nan))}; the rest, about "
               f"{pct(fit.get('gp_noise_share', math.nan))}, is what the GP cannot predict for a trial left out "
               f"(seed noise and structure it missed), counted as noise.")
    out = [Para(text), Para(quality)]
    if fit.get("subsampled"):
        out.append(Para(f"{a.importance.n_trials} trials are more than the GP needs: it is fitted on "
                        f"{fit['subsampled']:.0f} of them drawn at random (kernel hyperparameters on "
                        f"{fit.get('hyper_fit_trials', fit['subsampled']):.0f}), and each bootstrap resample draws "
                        f"{fit['subsampled']:.0f} trials with replacement, so the intervals are those of a "
                        f"{fit['subsampled']:.0f}-trial study (conservative). Optuna's evaluators see the same "
                        f"number."))
    if fit.get("trees_oob_r2", 1.0) < PREDICTS:
        out.append(Para(f"The boosted trees predict held-out trials no better than their mean (median out-of-bag R² "
                        f"{fit.get('trees_oob_r2', math.nan):.2f}): their permutation importances are not evidence "
                        f"and are not shown."))
    return out


def _agreement_blocks(a: Analysis) -> list[Block]:
    ag = a.importance.agreement
    if not _trees_predict(a):  # a surrogate that does not predict is no second opinion
        ag = ag[(ag["method_a"] != "permutation") & (ag["method_b"] != "permutation")]
    if ag.empty:
        return []
    names = {"fanova": "fANOVA (GP)", "permutation": "permutation", "optuna_fanova": "Optuna fANOVA",
             "optuna_ped_anova": "Optuna PED-ANOVA"}
    t = pd.DataFrame({"method": ag["method_a"].map(names), "compared with": ag["method_b"].map(names),
                      "Spearman rank correlation": ag["spearman"].round(2), "same top hyperparameter": ag["same_top"]})
    return [Para("Agreement between methods. Optuna's evaluators are shown for reference, as point estimates "
                 "normalized to sum to 100%; PED-ANOVA measures what it takes to reach the top 10% of trials, not "
                 "a share of variance."), Table(t),
            Para("optuna-dashboard's importance panel (optuna-dashboard sqlite:///RUN/optuna.db) gives other "
                 "numbers, by design: it runs PED-ANOVA on the study's COMPLETE trials only, those that trained "
                 "their whole budget (trials ASHA stopped are PRUNED there and left out, so it sees the few "
                 "survivors the scheduler picked, or, in a study run before PRUNED was recorded, trials at mixed "
                 "budgets), while this report compares every valid trial at one equal budget with a bootstrapped "
                 "fANOVA on a Gaussian-process surrogate.")]


def _sample_blocks(a: Analysis) -> list[Block]:
    out: list[Block] = [Heading(2, "The text itself")]
    if a.showcase.empty:
        return out + [Para("The run has no generated samples for valid trials.")]
    out.append(Para("The best, median and worst valid trials by best val_bpc (each at its own budget, shown "
                    "in the heading), each at the lowest and highest "
                    "sampling temperature it has; where several samples exist, the one with the most real words "
                    "is shown. Generated text is shown verbatim and is untrusted."))
    for _, r in a.showcase.iterrows():
        metrics = "; ".join(f"{m} {r[m]:.2f}" for m in ("known_word_frac", "copy20_frac")
                            if m in r and isinstance(r[m], float) and math.isfinite(r[m]))
        out.append(Heading(3, f"{r['which']}: trial {r['trial_id']}, best {a.run.metric} {r['best_val_bpc']:.3f}, "
                              f"{chars(r['chars_seen'])} chars, temperature {r['temperature']:g}"))
        if metrics:
            out.append(Para(metrics))
        text = str(r["text"])
        out.append(Code(text if len(text) <= SAMPLE_DISPLAY_CHARS else text[:SAMPLE_DISPLAY_CHARS] + " …"))
    out.append(Heading(2, "What drives sample quality"))
    if not a.samples:
        return out + [Para("samples.parquet has no sample metrics (known_word_frac, copy20_frac); sample "
                           "quality is not ranked.")]
    for st in a.samples:
        t = st.result.table
        where = (f"at the compared budget ({chars(a.budget.chars)} chars)" if st.at_budget else
                 "from each trial's latest samples, at mixed budgets (too few trials have samples at the compared "
                 "budget)")
        top = t[~t["within_noise"]]
        lead = (f"{top['param'].iloc[0]} matters most ({pct(top['importance'].iloc[0])}, "
                f"{ci(top['ci_low'].iloc[0], top['ci_high'].iloc[0])})" if len(top) else
                "no hyperparameter stands out from noise")
        out.append(Para(f"{st.metric}, temperature {st.temperature:g}, {st.result.n_trials} trials {where}: {lead}."))
        out.append(Table(pd.DataFrame({"hyperparameter": t["param"], "importance": [pct(v) for v in t["importance"]],
                                       "95% CI": [ci(lo, hi) for lo, hi in zip(t["ci_low"], t["ci_high"])],
                                       "within noise": t["within_noise"].astype(bool)})))
    return out + [Figure("sample_importance.png", "Importance of the hyperparameters for sample metrics")]


def document(a: Analysis) -> list[Block]:
    """All blocks of the report. A student reads it first: the answer, the plots that carry it and the model's
    text come first; how the numbers were computed is one collapsed section at the end."""
    st = a.run.study
    pair = list(a.interaction_pair or ())
    front = a.pareto[a.pareto["on_front"]]
    how = [
        *_method_paras(a),
        *_agreement_blocks(a),
        *_budget_blocks(a),
        *_noise_blocks(a),
        Figure("interaction.png", f"Joint effect of {' and '.join(pair)}"),
        Figure("best_trial.png", "Best search trial: train and validation bits/char with a rolling average"),
        Heading(2, "Quality against cost"),
        Para(f"{len(front)} trials are on the Pareto front of wall time and best {a.run.metric}: "
             + ", ".join(f"{r.trial_id} ({r.wall_s:.0f} s, {r.best_val_bpc:.3f})" for r in front.tail(8).itertuples())
             + (" (the 8 best shown)" if len(front) > 8 else "")
             + ". Each trial's best over its whole run: budgets are mixed here on purpose, this plot is about "
               "what a result costs."),
        Figure("cost.png", f"Best {a.run.metric} of each trial against its wall time; red: Pareto front"),
        *_sample_blocks(a),
        Heading(2, "Run"),
        Para(f"Study {st.get('name', '?')}, created {st.get('created_utc', '?')}, {st.get('num_trials', '?')} "
             f"trials requested, sampler {(st.get('sampler') or {}).get('name', '?')} "
             f"(seed {(st.get('sampler') or {}).get('seed', '?')}), scheduler "
             f"{(st.get('scheduler') or {}).get('name', '?')}, full budget "
             f"{st.get('budget_chars', '?')} characters. " + _lr_note(st) + "Versions: "
             + ", ".join(f"{k} {v}" for k, v in (st.get("versions") or {}).items()) + "."),
        *[Para(t) for t in (plan_words(st),) if t],
        *[Para(n) for n in a.notes],
    ]
    unformed = ("" if a.budget.formed else
                " (NOT FORMED: compared before every trial had left the unigram plateau; this measures how far "
                "trials had got)")
    importance = Figure("importance.png",
                        f"Importance with 95% bootstrap intervals; dashed line: noise floor{unformed}")
    fanova = [
        Figure("marginals.png", "Main effect of the top hyperparameters on best val_bpc up to the compared "
                                "budget, with 95% bootstrap bands; dots: trials"),
        Figure("curves.png", "Validation curves (val_bpc of each evaluation) of the search trials against "
                             "characters seen, coloured by each trial's best val_bpc; grey lines: the compressors "
                             "on the same validation text"),
        Table(importance_table(a)),
        *_interaction_blocks(a),
        *_budget_step_blocks(a),
    ]
    top = [Heading(1, f"Which hyperparameter matters most? Study {st.get('name', '?')}"), Para(a.summary, lead=True),
           *[Para(f"• {b}") for b in a.bullets]]
    final = final_blocks(a.run, final_model(a.run))
    # The lab's order under the answer: the text and its training curve, then how quality depends on each
    # hyperparameter and which matters most.
    if a.effects is None:
        return [*top, *final, importance,
                Heading(2, "Importance" if a.budget.formed else "Importance (NOT FORMED: trials had not all left the "
                                                                "unigram plateau at this budget)"),
                *fanova, Details("How this was computed", tuple(_demote(how)))]
    g = a.verdict.global_answer
    return [*top, *final, *_local_blocks(a),
            Heading(2, "The whole search space: fANOVA on the search trials" + ("" if a.budget.formed else
                                                                                " (NOT FORMED)")),
            Para("The second view: how much of the variance of the search trials' scores, spread over the whole "
                 "space, each hyperparameter explains. " + global_headline(g)),
            *[Para(f"• {b}") for b in global_bullets(g)], importance, *fanova,
            Details("How this was computed", tuple(_demote(how)))]


def _local_blocks(a: Analysis) -> list[Block]:
    """The local design: every move's effect from the center, and each hyperparameter's importance."""
    e, v = a.effects, a.verdict
    names = [p.name for p in a.run.params]
    m = e.moves
    rows = []
    for name in names + [n for n in pd.unique(m["param"]) if n not in names]:
        mine = m[m["param"] == name]
        if mine.empty:
            rows.append({"hyperparameter": name, "move": "not moved", "value": "", "effect (bits/char)": "",
                         "95% CI": "", "seeds": ""})
        for r in mine.itertuples():
            failed = f" ({r.n_failed} diverged or failed)" if r.n_failed else ""
            value = value_text(r.value)
            rows.append({"hyperparameter": name, "move": move_label(str(r.label)) + failed,
                         "value": "" if value == str(r.label) else value,
                         "effect (bits/char)": signed(r.effect), "95% CI": ci(r.ci_low, r.ci_high, signed),
                         "seeds": int(r.n_seeds)})
    p = e.params[e.params["n_moves"] > 0]
    ranking = pd.DataFrame({
        "rank": p["rank"].astype(int), "hyperparameter": p["param"], "largest move": p["label"].map(move_label),
        "importance (bits/char)": [bits(x) for x in p["importance"]],
        "joint 95% CI": [ci(lo, hi, bits) for lo, hi in zip(p["imp_low"], p["imp_high"])],
        "first in": [pct(x) for x in p["p_first"]],
        "search trials' rank test": [f"{t}, p = {p_text(x)}" if isinstance(t, str) else ""
                                     for t, x in zip(p["search_test"], p["search_p"])]})
    pools = "; ".join(f"{q.sd:.3f} bits/char with {q.df} degrees of freedom for the {q.n_moves} moves that "
                      + ("keep the model's tensors" if q.name == SAME_SHAPE else "change them")
                      + (" (too few of their own: the fit over every configuration)" if q.fallback else "")
                      for q in e.pools.values() if q.n_moves)
    center = ", ".join(f"{k} {value_text(val)}" for k, val in e.center.items())
    k = int(e.params["moved"].astype(bool).sum())
    moved = ("Every searched hyperparameter was moved from it one at a time" if k == len(e.params) else
             f"{k} of the {len(e.params)} searched hyperparameters were moved from it one at a time (the table lists "
             f"the others as not moved)")
    return [
        Heading(2, "How quality depends on each hyperparameter"),
        Para(f"The center is {_center_source(e)}, {config_words(e.center)}: {center}. {moved}, and the "
             f"center and every move were trained with the same {len(e.seeds)} seeds "
             f"({', '.join(map(str, e.seeds))}) to {local_budget(v)} "
             f"({chars(e.budget_chars)} training characters). Seed s of a move and of the center share the data "
             f"order, and the initialisation where the move keeps the model's tensors, so their difference is the "
             f"move's effect plus a noise much smaller than a seed's."
             + (f" The center scores {e.center_mean:.3f} bits/char on average over its seeds" if
                math.isfinite(e.center_mean) else " The center has no finished trial")
             + (f" (unigram baseline {e.unigram:.2f})." if math.isfinite(e.unigram) else ".")),
        Figure("effects.png", "Effect of every move from the center on best val_bpc (bits/char; above 0: worse), "
                              "with 95% intervals; each row one move, grouped by hyperparameter"),
        Table(pd.DataFrame(rows)),
        Para(f"An effect is the mean over seeds of the move's best val_bpc minus the center's with the same seed; a "
             f"diverged or failed trial counts as the uniform guess ({e.uniform:.2f} bits/char), a model that "
             f"learned nothing. Its 95% interval is Student's t with a pooled noise: the sd of one paired difference "
             f"is {pools}, from the fit configuration + seed over the center and those moves, in which the center "
             f"counts once. A hyperparameter's importance is the largest |effect| among its moves; its interval "
             f"holds jointly for every hyperparameter (each move's interval at level 1 − 0.05/{len(m)}), and "
             f"\"first in\" is the share of {N_DRAWS:,} draws of every effect from its sampling distribution in which "
             f"it is the largest. The rank test is the plain check over the whole space: Spearman (numeric) or "
             f"Kruskal-Wallis (categorical) of log best val_bpc over the search trials that trained normally."),
        Table(ranking),
    ]


def _lr_note(st: dict) -> str:
    base = st.get("lr_base") or {}
    if base.get("searched_as") != "lr_scale":
        return ""
    rates = ", ".join(f"{k} {v:g}" for k, v in (base.get("rates") or {}).items())
    return (f"The learning rate was searched as lr_scale, a multiple of each optimizer's usual rate ({rates}), so "
            "that one range is fair to every optimizer. ")


def _demote(blocks: list[Block]) -> list[Block]:
    """Headings one level deeper, for blocks placed inside a Details section."""
    return [Heading(min(b.level + 1, 6), b.text) if isinstance(b, Heading) else b for b in blocks]
