"""How far a run with a time limit may train: the one place that turns seconds into a budget of characters.

The trainer tells a `Pacer` what happened (after each step: characters seen, the run's seconds and the part of them
spent evaluating; after each evaluation: what it cost) and asks it how far it may go. The rule:

1. **Decided once, then from the start.** A warm-up (WARMUP_STEPS steps and RATE_WARMUP_S seconds of this run's
   own training, at most an eighth of the limit) measures the rate; the budget is the whole optimizer steps that
   fit in the time left at that rate, less EVAL_RESERVE of that time for the evaluations. The trainer then starts
   over from its initial weights with that budget (`BudgetDecision.warmup_chars` says what the warm-up trained), so
   a run that decided its budget trains exactly as one given the same budget (a replayed plan, or one remembered
   by an earlier study, study.machine), and its learning-rate warm-up spans its own budget from the first step.
   The warm-up's seconds are the cost. (Budgets used to be rounded down to a power of 2^(1/4) steps, so that runs
   whose speeds were a few percent apart decided the same budget; two warm-ups of one configuration read speeds up
   to 1.4x apart, which no such grid absorbs, and the rounding left 14-28% of the final model's minutes unused.)
2. **Cut once, when markedly slower.** At the first step after an evaluation, the run's end is projected: the rest
   of the budget at the pace since the previous check, plus the evaluations still to come. When that end lies past
   1 + REFIT_SLACK times the limit, the budget is cut, once, to what fits at that pace (in whole steps), and the
   pacer records why (`Refit`). The rounding leaves room, so a slightly slower machine still fits; one that does
   not, by less than the slack, meets the hard stop near its end, where the schedule has all but decayed.
3. **Extended once, when markedly faster.** When that end comes before 1 - EXTEND_SLACK times the limit, the budget
   grows, once, to what fits at that pace in all but EXTEND_RESERVE of the limit (in whole steps, at most the
   budget asked for), and the pacer records why (`BudgetDecision.extended`). A 15-second warm-up on a shared
   machine reads speeds up to 1.4x apart; a budget that only ever went down left a fifth of the final model's
   minutes unused (BENCHMARKS.md, "The final model's minutes"). The first check comes at the first evaluation, a
   tenth of the run in, where the learning-rate schedule has barely moved, so the longer schedule is almost the
   one a run given that budget would train. A given decision (a replayed plan, a remembered budget) is never
   extended: it is what makes two runs train alike.
4. **A hard stop.** Once the time left is less than the latest evaluation took, the current step is the last: the
   run ends within its limit whatever the budget (`BudgetDecision.stopped_at`).

Plain Python: no torch, nothing of the study.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

# The rule's version: a budget remembered under another (study.machine) is not given to a run under this one. Rule 1
# only ever cut; rule 2 extends once, so a budget rule 1 decided is the shorter one a slow warm-up read.
RULE = 2
WARMUP_STEPS = 10
# The warm-up's training seconds (at most an eighth of the limit): long enough that the rate does not hang on one
# noisy second.
RATE_WARMUP_S = 15.0
# The share of the time left kept for evaluations when the budget is decided (none has been timed yet).
EVAL_RESERVE = 0.08
# "Markedly slower": the run's projected end lies this share of the limit past it.
REFIT_SLACK = 0.15
# "Markedly faster": the run's projected end comes this share of the limit before it; an extended budget fits in all
# but EXTEND_RESERVE of the limit at the pace measured (the cut and the hard stop still guard it).
EXTEND_SLACK = 0.10
EXTEND_RESERVE = 0.03


@dataclass(frozen=True)
class Refit:
    """A decided budget moved once, and why: cut where the pace since the previous check would not fit, extended
    where it would leave much of the limit unused."""

    at_chars: int  # characters seen when it moved
    from_chars: int
    to_chars: int
    chars_per_s: float  # the pace measured since the previous check
    decided_chars_per_s: float  # the rate the budget was decided at
    projected_s: float  # when the run would have ended at that pace, its evaluations included
    limit_s: float

    @property
    def why(self) -> str:
        head = (f"at {self.at_chars:,} characters, training at {self.chars_per_s:,.0f} chars/s (decided at "
                f"{self.decided_chars_per_s:,.0f}), the run would have ended at {self.projected_s:.0f} s, ")
        if self.to_chars > self.from_chars:
            return (head + f"before {1 - EXTEND_SLACK:.2f} x its {self.limit_s:.0f} s limit: extended from "
                    f"{self.from_chars:,} to {self.to_chars:,} characters")
        return (head + f"past {1 + REFIT_SLACK:.2f} x its {self.limit_s:.0f} s limit: cut from {self.from_chars:,} to "
                f"{self.to_chars:,} characters")

    def to_dict(self) -> dict:
        return {**asdict(self), "why": self.why}


@dataclass(frozen=True)
class BudgetDecision:
    """What a time limit made of a run's budget: decided once, cut at most once, stopped at the limit at the latest.
    A checkpoint keeps it (`TrainState`), so a resumed run goes on with the same decision."""

    budget_chars: int  # decided at the run's start
    chars_per_s: float  # the training rate it was decided at (as measured in the warm-up)
    measured_chars_per_s: float = 0.0  # the warm-up's rate before rounding (0 where the decision was given)
    given: bool = False  # made before the run (a replayed plan), not measured by it
    refit: Refit | None = None  # the one cut
    extended: Refit | None = None  # the one extension
    stopped_at: int = 0  # characters seen when the time ran out before the budget (0: it did not)
    warmup_chars: int = 0  # what the warm-up trained before the run started over with this budget (0: given)

    def to_dict(self) -> dict:
        return {**asdict(self), "refit": self.refit.to_dict() if self.refit else None,
                "extended": self.extended.to_dict() if self.extended else None}

    @classmethod
    def from_dict(cls, d: dict) -> BudgetDecision:
        def move(m):
            return Refit(**{k: v for k, v in m.items() if k in Refit.__dataclass_fields__}) if m else None

        return cls(**{**{k: v for k, v in d.items() if k in cls.__dataclass_fields__},
                      "refit": move(d.get("refit")), "extended": move(d.get("extended"))})

    @property
    def moved_chars(self) -> int:
        """The budget as its moves left it, the later move last (the stop at the limit aside)."""
        moves = [m for m in (self.refit, self.extended) if m is not None]
        return max(moves, key=lambda m: m.at_chars).to_chars if moves else self.budget_chars


class Pacer:
    """The time limit's rule for one run (see the module doc): asked after every step for the budget.

    Args:
        limit_s: the run's time limit in seconds, earlier attempts (before a resume) included.
        budget_chars: the budget so far: the most asked for before a decision, the decided one after.
        chars_per_step: characters an optimizer step trains (budgets are whole steps).
        decision: the decision already made (by an earlier attempt, or given by a replayed plan), else None.
        eval_s: what the latest evaluation cost (an earlier attempt's), 0 when none was timed.
        cap_chars: the most an extension may grow the budget to (the budget asked for; default `budget_chars`).
    """

    def __init__(self, limit_s: float, budget_chars: int, chars_per_step: int,
                 decision: BudgetDecision | None = None, eval_s: float = 0.0, cap_chars: int = 0):
        if limit_s <= 0 or budget_chars < 1 or chars_per_step < 1:
            raise ValueError(f"a pacer needs a time limit, a budget and a step size, got {limit_s}, "
                             f"{budget_chars}, {chars_per_step}")
        self.limit_s, self.budget_chars, self.chars_per_step = limit_s, budget_chars, chars_per_step
        self.decision, self.eval_s = decision, eval_s
        self.cap_chars = max(cap_chars, budget_chars)
        self.evals_left = 0  # evaluations still to come, the last included, as of the latest one
        self._start: tuple[int, float] | None = None  # (chars, training seconds) at this process's first step
        self._mark: tuple[int, float] | None = None  # the same at the previous check of the pace
        self._check_due = False
        self._start_over = False

    def evaluated(self, seconds: float, evals_left: int) -> None:
        """An evaluation took `seconds` and `evals_left` more are to come: the next step checks the pace."""
        self.eval_s, self.evals_left, self._check_due = seconds, evals_left, True

    @property
    def starts_over(self) -> bool:
        """True once the warm-up has decided the budget: the trainer then starts over from its initial weights and
        tells the pacer so (`started_over`)."""
        return self._start_over

    def started_over(self, elapsed_s: float, eval_s: float) -> None:
        """The trainer started over at `elapsed_s` into the run (`eval_s` of it evaluating): the pace is measured
        from here."""
        self._start = self._mark = (0, elapsed_s - eval_s)
        self._start_over = False

    def budget(self, chars_seen: int, elapsed_s: float, eval_s: float) -> int:
        """How far the run may train, in characters, after the step that brought it to `chars_seen`.

        `elapsed_s` is the run's wall time and `eval_s` the part of it spent evaluating (both counting earlier
        attempts); their difference is training time.
        """
        train_s = elapsed_s - eval_s
        if self._start is None:  # this process's first step: its rate is measured from here
            self._start = self._mark = (chars_seen, train_s)
        if self.decision is None:
            self._decide(chars_seen, elapsed_s, train_s)
        elif self._check_due and (self.decision.refit is None or self._may_extend()):
            self._check(chars_seen, elapsed_s, train_s)
        if chars_seen < self.budget_chars and elapsed_s + self.eval_s >= self.limit_s:  # out of time
            self.decision = replace(self.decision or BudgetDecision(self.budget_chars, 0.0), stopped_at=chars_seen)
            self.budget_chars = chars_seen
        return self.budget_chars

    def _decide(self, chars_seen: int, elapsed_s: float, train_s: float) -> None:
        chars, seconds = chars_seen - self._start[0], train_s - self._start[1]
        if chars < WARMUP_STEPS * self.chars_per_step or seconds < min(RATE_WARMUP_S, self.limit_s / 8):
            return
        measured = chars / seconds
        rate = measured
        more = rate * max(self.limit_s - elapsed_s, 0.0) * (1.0 - EVAL_RESERVE)
        steps = int(more // self.chars_per_step)  # from the start again: the warm-up's characters do not count
        self.budget_chars = max(self.chars_per_step, min(self.budget_chars, steps * self.chars_per_step))
        self.decision = BudgetDecision(budget_chars=self.budget_chars, chars_per_s=rate,
                                       measured_chars_per_s=measured, warmup_chars=chars_seen)
        self._mark = (chars_seen, train_s)
        self._start_over = True

    def _may_extend(self) -> bool:
        return self.decision.extended is None and not self.decision.given

    def _check(self, chars_seen: int, elapsed_s: float, train_s: float) -> None:
        chars, seconds = chars_seen - self._mark[0], train_s - self._mark[1]
        if chars < WARMUP_STEPS * self.chars_per_step or not seconds > 0:
            return  # too few steps since the previous check to tell a pace: check again after the next step
        self._mark, self._check_due = (chars_seen, train_s), False
        pace = chars / seconds
        evals = self.evals_left * self.eval_s
        projected = elapsed_s + max(self.budget_chars - chars_seen, 0) / pace + evals
        if projected > (1.0 + REFIT_SLACK) * self.limit_s and self.decision.refit is None:
            left = max(self.limit_s - elapsed_s - evals, 0.0)
            fits = chars_seen + int(pace * left) // self.chars_per_step * self.chars_per_step
            cut = max(chars_seen + self.chars_per_step, min(self.budget_chars, fits))
            self.decision = replace(self.decision, refit=self._move(chars_seen, cut, pace, projected))
            self.budget_chars = cut
        elif projected < (1.0 - EXTEND_SLACK) * self.limit_s and self._may_extend():
            left = max((1.0 - EXTEND_RESERVE) * self.limit_s - elapsed_s - evals, 0.0)
            fits = chars_seen + int(pace * left) // self.chars_per_step * self.chars_per_step
            grown = min(self.cap_chars, fits)
            if grown > self.budget_chars:
                self.decision = replace(self.decision, extended=self._move(chars_seen, grown, pace, projected))
                self.budget_chars = grown

    def _move(self, chars_seen: int, to_chars: int, pace: float, projected: float) -> Refit:
        return Refit(at_chars=chars_seen, from_chars=self.budget_chars, to_chars=to_chars, chars_per_s=pace,
                     decided_chars_per_s=self.decision.chars_per_s, projected_s=projected, limit_s=self.limit_s)


def chars_to_give(decision: dict) -> int:
    """The budget another run of the same configuration is given (a replayed plan, a remembered budget), from a
    decision's dict (`BudgetDecision.to_dict`, or what study.json `final` records of it): the decided budget, or
    what its extension grew it to. A cut is not given: the slower pace it answered is the machine's moment, and a
    run given the decided budget cuts again if that pace comes back."""
    return int(((decision.get("extended") or {}).get("to_chars")) or decision["budget_chars"])
