"""The words: every headline within 40 words, a few rendered sentences, and the one set of formatters."""

from __future__ import annotations

import math
import re

import pytest

from reports._wording import HEADLINE_WORDS, bullets, ci, config_words, headline, p_text, pct, signed
from tests.reports.test_verdict import _global, verdict

CASES = {
    "ranked": {"effects": {"lr": 0.3}},
    "contenders": {"effects": {"lr": 0.3, "cell": 0.29, "hidden_size": 0.28, "dropout": 0.29}},
    "no_signal": {"effects": {}},
    "not_formed": {"effects": {"lr": 0.3}, "center_bpc": 3.0},
    "too_few_trials": {"effects": {"lr": 0.3}, "seeds": (1000,)},
}


@pytest.mark.parametrize("kind", list(CASES))
def test_every_kind_has_a_headline_within_the_word_limit(kind):
    v = verdict(**CASES[kind])
    assert v.kind == kind
    h = headline(v)
    assert len(h.split()) <= HEADLINE_WORDS, h
    assert not re.search(r"\w: [A-Z]", h), h  # no capital after a colon mid-sentence
    assert "4,000 optimizer steps" in h  # the budget it holds at
    if kind != "not_formed" and kind != "too_few_trials":
        assert "around a 256-unit GRU (Adam)" in h, h  # and the configuration
    assert all(b.endswith(".") and not re.search(r"\w: [A-Z]", b) for b in bullets(v)), bullets(v)


def test_a_ranked_headline_reads_as_the_answer():
    h = headline(verdict({"lr": 0.3}))
    assert re.fullmatch(r"At 4,000 optimizer steps around a 256-unit GRU \(Adam\), lr matters most: ×5\.6 from the "
                        r"center costs \+0\.\d\d bits/char \(95% CI 0\.\d\d–0\.\d\d\)\.", h), h


def test_contenders_name_each_other_and_the_rest_is_bulleted():
    v = verdict(CASES["contenders"]["effects"])
    h = headline(v)
    assert re.search(r"(lr|cell|hidden_size|dropout) has the largest clear effect: .* costs \+0\.\d\d bits/char "
                     r"\(95% CI .*\); 3 others' intervals reach it", h), h
    b = bullets(v)
    assert sum(x.split(":")[0] in ("lr", "cell", "hidden_size", "dropout") for x in b) == 1  # the leader's
    rest = next(x for x in b if f"3 others' joint intervals reach {v.leader.param}'s" in x)
    assert all(p in rest for p in ("lr", "cell", "hidden_size", "dropout") if p != v.leader.param)


def test_a_rank_test_the_local_design_calls_noise_is_said_not_called_noise():
    v = verdict({"cell": 0.3}, search_lr_slope=0.4, n_search=40)
    b = bullets(v)
    said = [s for s in b if s.startswith("The search trials' rank test (Spearman) finds lr (p = ")]
    assert len(said) == 1 and "around the center its effect is within noise" in said[0], b
    noise = next(s for s in b if s.startswith("Within noise"))
    assert "lr" not in re.findall(r"\w+", noise), noise


def test_a_global_leader_that_differs_is_said():
    b = bullets(verdict({"cell": 0.3}, answer=_global("leader", "optimizer")))
    assert any(s.startswith("Over the whole search space the fANOVA view ranks optimizer first (50%") for s in b), b


def test_formatters():
    assert ci(0.1, 0.25) == "10%–25%" and ci(math.nan, 1) == "n/a" and pct(0.001) == "<1%"
    assert ci(-0.05, 0.12, signed) == "−0.05 to +0.12" and signed(0.314) == "+0.31"
    assert p_text(3.2e-6) == "3e-6" and p_text(0.0123) == "0.012"
    assert config_words({"cell": "lstm", "num_layers": 2, "hidden_size": 512, "optimizer": "sgd"}) == \
        "an LSTM 2×512 (SGD)"
    assert config_words({}) == "the search's best configuration"
    long = config_words({"cell": "x " * 50, "optimizer": "y" * 80})
    assert len(long.split()) <= 3  # a run directory's strings cannot blow the word limit


def _global_case(case: str):
    """A global answer of `case` at its longest: 11 hyperparameters with long names, three named, steps that vary."""
    import pandas as pd

    from reports._budget import Budget
    from reports._importance import ImportanceResult
    from reports._steps import Formation
    from reports._verdict import GlobalAnswer, Interaction

    names = ["embedding_dim", "train_chars", "hidden_size", "num_layers", "grad_clip", "lr_scale", "optimizer",
             "seq_len", "dropout", "cell", "batch_size"]
    t = pd.DataFrame({"param": names, "importance": [0.3, 0.25, 0.2] + [0.01] * 8, "ci_low": 0.001,
                      "ci_high": 0.45, "p_first": [0.4, 0.35, 0.25] + [0.0] * 8,
                      "within_noise": [False] * 3 + [True] * 8})
    imp = ImportanceResult(table=t, marginals=pd.DataFrame(), agreement=pd.DataFrame(), floors={"applied": 0.05},
                           fit={"gp_loo_r2": 0.05}, n_trials=148, n_bootstrap=100, target="log val_bpc")
    unformed = case == "not_formed"
    f = Formation(100, 148, 7 if unformed else 150, 60 if unformed else 0, 4.45, 90, -0.74, math.nan, True, 12_800)
    budget = Budget(1_234_567.0, 148, 1, False, pd.DataFrame({"trial_id": [], "y": []}), pd.DataFrame(), formation=f)
    inter = (Interaction("embedding_dim", "train_chars", 0.45, 0.3, 0.6, "embedding_dim"),) if case == "inter" else ()
    return GlobalAnswer("leader" if case == "inter" else case, imp, budget, "val_bpc", leader="embedding_dim",
                        contenders=("train_chars", "hidden_size") if case == "contenders" else (),
                        second="num_layers", noise=tuple(names[3:]), caveats=inter)


@pytest.mark.parametrize("case", ["too_few", "not_formed", "few_to_rank", "not_predictive", "no_signal",
                                  "contenders", "carried", "leader", "inter"])
def test_every_global_headline_is_within_the_word_limit(case):
    from reports._verdict import Verdict

    g = _global_case(case)
    v = Verdict("global_only", g)
    h = headline(v)
    assert len(h.split()) <= HEADLINE_WORDS and not re.search(r"\w: [A-Z]", h), (len(h.split()), h)
    assert all(b.endswith(".") and not re.search(r"\w: [A-Z]", b) for b in bullets(v)), bullets(v)
    if case not in ("too_few", "not_formed"):
        assert "1.23M training characters" in h or "1.23M training characters" in " ".join(bullets(v)), h


def test_the_plan_is_said_with_where_it_came_from():
    from reports._wording import plan_words

    plan = {"minutes": 30, "chars_per_s": 4096.0, "measured_chars_per_s": 5012.4, "parallel": 2, "step_chars": 800,
            "budget_chars": 40_000, "planned": [50], "local_points": 46, "local_chars": 80_000, "final_s": 470.0}
    said = plan_words({"plan": plan, "plan_source": "replayed"})
    assert said == ("The plan: 30 minutes at 4,096 chars/s per trial, 2 at once, measured on this machine (5,012 "
                    "chars/s, rounded down to a power of sqrt 2): 50 search trials of 50 optimizer steps, a local "
                    "design of 46 trials of 100 optimizer steps and 7.8 minutes for the final model.")
    assert "replayed from another study's plan" in plan_words({"plan": {**plan, "replayed": True}})
    assert plan_words({}) == ""


def _around(center_from: str, chosen: dict | None):
    from benchmarks.synthetic import local_rundata
    from reports._effects import local_effects
    from reports._verdict import decide

    run = local_rundata({"lr": 0.3})
    run.study["local"].update(center_from=center_from, chosen=chosen)
    return bullets(decide(local_effects(run), _global()))


def test_a_fixed_center_says_so_and_does_not_claim_to_hand_over_its_choice():
    kept = {"moved": "", "value": None, "trial_id": "x000", "mean_bpc": 1.6, "why": "no move was better"}
    fixed = _around("spec", {**kept, "handed_over": False})
    assert any(b.startswith("The center is the spec's reference configuration (local.center)") for b in fixed)
    assert not any(b.startswith("The study trained the final model on") for b in fixed), fixed
    searched = _around("search", kept)  # a run written before handed_over: the choice was handed over
    assert not any("local.center" in b for b in searched)
    assert "The study trained the final model on the center: no move was better." in searched


def test_the_effects_section_says_where_the_center_came_from():
    from benchmarks.synthetic import local_rundata
    from reports._document import _center_source
    from reports._effects import local_effects

    run = local_rundata({"lr": 0.3})
    assert _center_source(local_effects(run)) == "the search's best configuration"
    run.study["local"]["center_from"] = "spec"
    assert _center_source(local_effects(run)) == "the spec's fixed reference configuration (local.center)"
