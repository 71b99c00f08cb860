"""The time limit's rule (charrnn.pacer), fed numbers: no clock, no model."""
from __future__ import annotations

import math

import numpy as np
import pytest

from charrnn.pacer import EVAL_RESERVE, EXTEND_RESERVE, EXTEND_SLACK, REFIT_SLACK, BudgetDecision, Pacer, Refit

STEP = 1000  # characters a step


class Run:
    """A run as the trainer feeds its pacer: steps at a pace (chars/s), evaluations of some seconds."""

    def __init__(self, pacer: Pacer):
        self.pacer, self.chars, self.elapsed, self.eval_s = pacer, 0, 0.0, 0.0
        self.budgets: list[int] = []

    def steps(self, n: int, pace: float) -> int:
        for _ in range(n):
            if self.chars >= self.pacer.budget_chars:
                break
            self.chars += STEP
            self.elapsed += STEP / pace
            self.budgets.append(self.pacer.budget(self.chars, self.elapsed, self.eval_s))
            if self.pacer.starts_over:  # as the trainer does once the warm-up has decided
                self.chars = 0
                self.pacer.started_over(self.elapsed, self.eval_s)
        return self.pacer.budget_chars

    def evaluate(self, seconds: float, evals_left: int) -> None:
        self.elapsed += seconds
        self.eval_s += seconds
        self.pacer.evaluated(seconds, evals_left)


def decided(rate: float, limit_s: float = 600.0) -> int:
    """The budget a pacer decides for a run that trains at `rate` from its first step, 1 s into the run."""
    pacer = Pacer(limit_s, 10**12, 100)
    pacer.budget(100, 1.0, 0.0)
    steps = math.ceil(20 * rate / 100)
    return pacer.budget(100 + steps * 100, 1.0 + steps * 100 / rate, 0.0)


def test_the_budget_is_decided_once_after_warm_up():
    run = Run(Pacer(100.0, 10_000_000, STEP))
    # Warm-up: an eighth of the limit (12.5 s) of training from the first step, at 4k chars/s.
    assert run.steps(50, 4000.0) == 10_000_000 and run.pacer.decision is None
    budget = run.steps(1, 4000.0)
    rate = 4000.0  # as measured, unrounded; the budget is whole steps of what fits in the time left
    more = rate * (100.0 - run.elapsed) * (1 - EVAL_RESERVE)
    assert budget == int(more // STEP) * STEP == 321_000
    assert run.pacer.decision == BudgetDecision(budget_chars=321_000, chars_per_s=rate, measured_chars_per_s=4000.0,
                                                warmup_chars=51_000)
    assert run.chars == 0 and not run.pacer.starts_over  # the run started over with it
    # The machine keeps its pace, evaluations come and go: the budget stays.
    for _ in range(4):
        run.evaluate(0.5, 5)
        run.steps(20, 4000.0)
    assert set(run.budgets[50:]) == {321_000} and run.pacer.decision.refit is None
    assert run.pacer.decision.extended is None


def test_a_markedly_faster_machine_extends_the_budget_once_and_says_why():
    run = _decided_run()
    run.evaluate(0.5, 5)
    run.steps(10, 8000.0)  # the check needs WARMUP_STEPS steps since the decision to tell a pace
    # 10 steps at 8k chars/s; the rest (311 steps) and 5 evaluations would end at about 55 s of a 100 s limit.
    projected = run.elapsed + (321_000 - 10_000) / 8000.0 + 2.5
    left = (1 - EXTEND_RESERVE) * 100.0 - run.elapsed - 2.5
    assert run.pacer.budget_chars == 10_000 + int(8000.0 * left) // STEP * STEP
    extended = run.pacer.decision.extended
    assert (extended.at_chars, extended.from_chars, extended.to_chars) == (10_000, 321_000, run.pacer.budget_chars)
    assert extended.projected_s == pytest.approx(projected, abs=0.1)
    assert extended.projected_s < (1 - EXTEND_SLACK) * 100.0
    assert f"extended from 321,000 to {extended.to_chars:,} characters" in extended.why
    assert "8,000 chars/s (decided at 4,000)" in extended.why
    assert run.pacer.decision.moved_chars == extended.to_chars
    # Faster still: no second extension.
    run.evaluate(0.5, 4)
    run.steps(30, 16_000.0)
    assert run.pacer.decision.extended == extended and run.pacer.budget_chars == extended.to_chars
    # Then markedly slower: the one cut still guards the limit, and the later move is the budget.
    run.evaluate(0.5, 3)
    run.steps(20, 1000.0)  # the check after this evaluation still measures the fast steps before it
    run.evaluate(0.5, 2)
    run.steps(11, 1000.0)
    refit = run.pacer.decision.refit
    assert refit is not None and refit.from_chars == extended.to_chars > refit.to_chars == run.pacer.budget_chars
    assert run.pacer.decision.moved_chars == refit.to_chars


def test_an_extension_stays_within_the_budget_asked_for():
    run = Run(Pacer(100.0, 400_000, STEP))
    run.steps(51, 4000.0)
    assert run.pacer.budget_chars == 321_000
    run.evaluate(0.5, 5)
    run.steps(10, 8000.0)
    assert run.pacer.budget_chars == 400_000 and run.pacer.decision.extended.to_chars == 400_000
    at_cap = Run(Pacer(100.0, 321_000, STEP, cap_chars=321_000))
    at_cap.steps(51, 4000.0)
    at_cap.evaluate(0.5, 5)
    at_cap.steps(10, 8000.0)
    assert at_cap.pacer.budget_chars == 321_000 and at_cap.pacer.decision.extended is None


def test_the_decision_spends_the_time_left_but_the_evaluations_reserve():
    for rate in np.geomspace(1_000, 100_000, 50):
        for limit in (60.0, 300.0, 1000.0):
            steps = math.ceil(20 * rate / 100)  # as `decided` trains them
            elapsed = 1.0 + steps * 100 / rate
            fits = rate * (limit - elapsed) * (1 - EVAL_RESERVE)  # characters that fit, at the rate decided at
            assert fits - 100 < decided(rate, limit) <= fits  # whole steps of 100 characters, from the start again


def _decided_run(limit_s: float = 100.0) -> Run:
    run = Run(Pacer(limit_s, 10_000_000, STEP))
    run.steps(51, 4000.0)
    assert run.pacer.budget_chars == 321_000
    return run


def test_a_markedly_slower_machine_cuts_the_budget_once_and_says_why():
    run = _decided_run()
    run.steps(50, 1500.0)
    run.evaluate(1.0, 5)
    budget = run.steps(1, 1500.0)
    # Since the decision: 51 steps at 1.5k chars/s; the rest (270 steps) and 5 evaluations would end at 233 s.
    left, projected = 100.0 - run.elapsed, run.elapsed + (321_000 - 51_000) / 1500.0 + 5.0
    assert budget == 51_000 + int(1500.0 * (left - 5.0)) // STEP * STEP == 121_000
    refit = run.pacer.decision.refit
    assert (refit.at_chars, refit.from_chars, refit.to_chars, refit.decided_chars_per_s) == (51_000, 321_000,
                                                                                              121_000, 4000.0)
    assert refit.chars_per_s == pytest.approx(1500.0) and refit.projected_s == pytest.approx(projected, abs=0.1)
    assert refit.projected_s > (1 + REFIT_SLACK) * refit.limit_s
    assert "cut from 321,000 to 121,000 characters" in refit.why and "1,500 chars/s" in refit.why
    # Slower still: no second cut (the hard stop ends the run at the limit instead).
    run.steps(10, 700.0)
    run.evaluate(1.0, 3)
    run.steps(10, 700.0)
    assert run.pacer.decision.refit == refit and run.pacer.budget_chars == 121_000


def test_a_slightly_slower_machine_keeps_its_budget_and_stops_at_the_limit():
    run = _decided_run()
    run.steps(50, 3700.0)
    run.evaluate(1.0, 5)
    run.steps(1, 3700.0)
    # The run would end about 5% past its limit: within the slack, so no cut ...
    assert run.pacer.decision.refit is None and run.pacer.budget_chars == 321_000
    while run.chars < run.pacer.budget_chars:
        run.steps(20, 3700.0)
        if run.chars < run.pacer.budget_chars:
            run.evaluate(1.0, 3)
    # ... and the step that leaves less than an evaluation's time is the last.
    decision = run.pacer.decision
    assert decision.refit is None and 0 < decision.stopped_at == run.chars == run.pacer.budget_chars < 321_000
    assert decision.budget_chars == 321_000 and 99.0 <= run.elapsed < 100.0


def test_out_of_time_before_any_decision_stops_at_this_step():
    pacer = Pacer(10.0, 1_000_000, STEP, eval_s=2.0)
    assert pacer.budget(5_000, 7.0, 0.0) == 1_000_000
    assert pacer.budget(6_000, 8.0, 0.0) == 6_000  # 8 s + an evaluation's 2 s reach the limit
    assert pacer.decision == BudgetDecision(budget_chars=1_000_000, chars_per_s=0.0, stopped_at=6_000)


def test_a_given_decision_is_kept_and_a_decision_round_trips():
    given = BudgetDecision(budget_chars=300_000, chars_per_s=2896.0, given=True)
    run = Run(Pacer(600.0, 300_000, STEP, decision=given))
    for _ in range(5):
        run.steps(40, 3000.0)
        run.evaluate(0.5, 4)
    assert run.pacer.decision == given and set(run.budgets) == {300_000}  # twice as fast, never extended
    cut = BudgetDecision(budget_chars=372_000, chars_per_s=2896.0, measured_chars_per_s=4000.0,
                         refit=Refit(at_chars=1, from_chars=372_000, to_chars=3, chars_per_s=4.0,
                                     decided_chars_per_s=2896.0, projected_s=5.0, limit_s=2.0), stopped_at=7,
                         extended=Refit(at_chars=0, from_chars=300_000, to_chars=372_000, chars_per_s=5.0,
                                        decided_chars_per_s=2896.0, projected_s=1.0, limit_s=2.0))
    assert BudgetDecision.from_dict(cut.to_dict()) == cut and cut.to_dict()["refit"]["why"] == cut.refit.why
    assert "extended from 300,000 to 372,000" in cut.to_dict()["extended"]["why"]
