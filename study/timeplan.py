"""A study that fits its time: measure this machine's training speed, then size the budgets to `--minutes`.

The plan is made once, when a study starts, and recorded in study.json (`plan`); a resumed study reads it back.

    measured speed --> characters the search can train --> the first rung (at least `min_steps` optimizer steps
    for every trial) and the rungs above it --> the repeats' budget --> the final model's minutes

Where the time goes, for `--minutes M` (all of it measured or estimated here, and printed):
- a margin of MARGIN x M for what cannot be predicted (a busier machine, Ray's start, a slow trial at the end);
- the report: REPORT_S plus REPORT_S_PER_TRIAL per trial;
- the final model: FINAL_SHARE of what is left (at most the spec's `final.minutes`, when it sets one);
- the seed repeats: `repeats` trials of each of the MAX_CANDIDATES best configurations to the last rung below the
  full budget;
- the search: the rest. Successive halving at reduction factor rf with K rungs below the full budget trains
  n x R1 x (1 + K (1 - 1/rf)) characters for n trials and a first rung of R1 characters, so R1 follows from
  the characters the search can afford; K is the largest (at most MAX_RUNGS) whose R1 gives every trial
  COMFORT x `min_steps` optimizer steps by the first rung (else `min_steps`): `min_steps` is where a typical
  trial leaves the unigram plateau, and the slower learners of a space need a few times that.

The final model's minutes are planned again when it starts, from the time actually left (`final_seconds`), so a
search that ran long shortens the final model rather than the study running over, and one that ran short gives
the final model the time; so does the margin, all but END_MARGIN x M of it, once the search is behind, and the
report's reserve, all but REPORT_KEPT of it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from charrnn.config import TrainConfig
from charrnn.corpus import Corpus
from runcontract import MAX_CANDIDATES
from study.machine import machine_key, settle
from study.spec import MIN_EVALS, StudySpec

MARGIN = 0.12
# Of the margin, what is still kept back when the final model starts: by then the search and the repeats, what the
# margin is for, are behind, and the final model fits itself to its time limit after every evaluation; its end
# (the last evaluation, the test text, samples, Ray letting go) takes seconds. The rest goes to the final model.
END_MARGIN = 0.04
REPORT_S, REPORT_S_PER_TRIAL = 30.0, 1.2
# Of the report's reserve, what is still kept when the final model starts. The reserve sizes the plan generously
# (a machine slower or busier than this one); the build took 15 s of its 118 s for a 102-trial study on the 2-core
# AMD EPYC of BENCHMARKS.md ("The final model's minutes"), and 227 s of CPU of its 658 s for 500 trials ("Report
# build time"): 40% keeps 3x the first and 1.2x the second. The rest goes to the final model, as the margin's does.
REPORT_KEPT = 0.4
FINAL_SHARE = 0.45
FINAL_SHARE_MIN = 0.3  # a plan with a local design gives the final model no less, or refuses the study
MAX_RUNGS = 2
COMFORT = 2  # the first rung aims at this many times min_steps before it settles for min_steps
# Training speed counted for the search: evaluations, checkpoints and a trial's start take the rest (measured
# 7-11% for evaluation alone on the CPU).
SEARCH_EFFICIENCY = 0.85
MEASURE_CONFIGS, MEASURE_S = 8, 1.0


class PlanError(ValueError):
    """The time asked for cannot hold the study; the message is one line for the CLI."""


@dataclass(frozen=True)
class TimePlan:
    """How a study spends `minutes`; every figure is in seconds or characters. Recorded in study.json."""

    minutes: float
    chars_per_s: float  # one trial's training speed, averaged over the search space (time-weighted)
    parallel: int  # trials at once
    min_steps: int
    step_chars: int  # the most characters an optimizer step of this space takes
    grace_chars: int
    budget_chars: int
    rungs: list[int]
    planned: list[int]  # trials synchronous halving sends to each rung, then to the full budget
    repeat_chars: int
    search_s: float
    repeats_s: float
    final_s: float
    report_s: float
    margin_s: float
    local_chars: int = 0  # each trial of the local design (study.local); 0 = no local design
    local_points: int = 0  # its trials: (center + moves) x seeds
    local_s: float = 0.0
    noise_sd: float = 0.0  # the expected sd of a move's paired difference at the local design's steps (NOISE_SD)
    local_seeds: int = 0
    measured_chars_per_s: float = 0.0  # what the speed measurement gave, before the rounding (0: not recorded)
    speed_file: str = ""  # where an earlier study's reading on this machine was remembered, when the plan used it

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TimePlan:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def describe(self) -> str:
        """The plan in two lines, for the console."""
        if self.local_points:
            return self._describe_local()
        steps = self.grace_chars // self.step_chars
        rungs = f"rungs at {_chars(self.rungs)}, " if self.rungs else "no rungs: every trial trains "
        return (f"plan for {self.minutes:g} minutes at {self.chars_per_s:,.0f} chars/s per trial, {self.parallel} "
                f"at once: search {self.search_s / 60:.1f} min ({rungs}full budget {_chars([self.budget_chars])} "
                f"characters; every trial at least {steps} optimizer steps before it can be stopped), repeats "
                f"{self.repeats_s / 60:.1f} min, final model {self.final_s / 60:.1f} min, "
                f"report {self.report_s / 60:.1f} min")


    def resolvable(self) -> float:
        """The smallest effect (bits/char) the local design's 95% intervals are expected to tell from zero."""
        return 2.0 * self.noise_sd / math.sqrt(max(self.local_seeds, 1))

    def _describe_local(self) -> str:
        s, l_steps = self.budget_chars // self.step_chars, self.local_chars // self.step_chars
        measured = (f"the measured {self.measured_chars_per_s:,.0f}" if self.measured_chars_per_s else
                    "the measured speed")
        source = (f"this machine's reading in an earlier study, remembered in {self.speed_file}: {measured} lies "
                  "within one step of it on the grid of powers of sqrt 2" if self.speed_file else
                  f"{measured} rounded down to a power of sqrt 2")
        return (f"plan for {self.minutes:g} minutes at {self.chars_per_s:,.0f} chars/s per trial ({source}), "
                f"{self.parallel} at once: search {self.search_s / 60:.1f} min "
                f"({self.planned[0]} trials x {s} optimizer steps), repeats "
                f"{self.repeats_s / 60:.1f} min, local design {self.local_s / 60:.1f} min ({self.local_points} trials "
                f"x {l_steps} steps; expected noise of an effect there: sd {self.noise_sd:.2f} bits/char a seed pair, "
                f"so with {self.local_seeds} seeds effects under about {self.resolvable():.2f} bits/char cannot be "
                f"told from noise), final model {self.final_s / 60:.1f} min, report {self.report_s / 60:.1f} min")


def _chars(values: list[int]) -> str:
    return ", ".join(f"{v / 1e6:.2g}M" if v >= 1e6 else f"{v / 1e3:.0f}k" for v in values)


def planned_counts(n_trials: int, n_rungs: int, reduction_factor: int) -> list[int]:
    """Trials that synchronous successive halving sends to each rung and then to the full budget: n, n/rf, ...
    (n_rungs + 1 numbers, the last the full budget's)."""
    return [max(1, n_trials // reduction_factor ** k) if k else n_trials for k in range(n_rungs + 1)]


def plan_budgets(*, minutes: float, trials: int, reduction_factor: int, chars_per_s: float, parallel: int,
                 step_chars: int, min_steps: int, repeats: int, final_minutes_cap: float = 0.0) -> TimePlan:
    """Size the search, the repeats and the final model to `minutes` at a measured speed (pure; see the module doc).

    Raises:
        PlanError: when even one rung of `min_steps` steps for every trial does not fit.
    """
    total = 60.0 * minutes
    margin = MARGIN * total
    report = REPORT_S + REPORT_S_PER_TRIAL * trials
    left = total - margin - report
    final = FINAL_SHARE * left
    if final_minutes_cap > 0:
        final = min(final, 60.0 * final_minutes_cap)
    floor = min_steps * step_chars
    rate = chars_per_s * parallel * SEARCH_EFFICIENCY  # characters the search trains per second
    rf = reduction_factor
    def first_rung(k: int) -> int:
        # The repeats train `repeats` trials to the last rung below the full budget, `parallel` at once.
        rep_rungs = rf ** (k - 1) if k else 1
        per_trial = trials * (1 + k * (1 - 1 / rf))
        rep_trials = math.ceil(repeats / parallel) * parallel if repeats else 0
        return int((left - final) * rate / (per_trial + rep_trials * rep_rungs) // 1000 * 1000)

    # The most rungs whose first gives every trial COMFORT x min_steps steps (formation takes 50-300 steps, median
    # ~90: BENCHMARKS.md); failing that, the most whose first gives min_steps; failing that, the study cannot fit.
    fits = [k for need in (COMFORT * floor, floor) for k in range(MAX_RUNGS, -1, -1) if first_rung(k) >= need]
    if not fits:
        rep_trials = math.ceil(repeats / parallel) * parallel if repeats else 0
        # The final model's share and the margin grow with the minutes: solve for the minutes, rounded up.
        need = math.ceil(((floor * (trials + rep_trials) / rate) / (1 - FINAL_SHARE) + report) / (1 - MARGIN) / 60.0)
        fit = int((left - final) * rate // floor) - rep_trials
        fewer = f"or at most {fit} --trials in these" if fit >= 2 else "or a smaller model space"
        raise PlanError(f"{minutes:g} minutes cannot hold {trials} trials of at least {min_steps} optimizer steps "
                        f"({floor:,} characters) each at the measured {chars_per_s:,.0f} chars/s per trial "
                        f"({parallel} at once): that needs about {need} minutes; give more --minutes, {fewer}")
    k = fits[0]
    grace = first_rung(k)
    rungs = [grace * rf ** j for j in range(k)]
    budget = grace * rf ** k
    repeat_chars = rungs[-1] if rungs else budget
    repeats_s = (math.ceil(repeats / parallel) * parallel * repeat_chars / rate) if repeats else 0.0
    search_s = trials * grace * (1 + k * (1 - 1 / rf)) / rate
    final = total - margin - report - repeats_s - search_s  # what the rounding freed goes to the final model
    if final_minutes_cap > 0:
        final = min(final, 60.0 * final_minutes_cap)
    return TimePlan(minutes=minutes, chars_per_s=chars_per_s, parallel=parallel, min_steps=min_steps,
                    step_chars=step_chars, grace_chars=grace, budget_chars=budget, rungs=rungs,
                    planned=planned_counts(trials, k, rf), repeat_chars=repeat_chars, search_s=search_s,
                    repeats_s=repeats_s, final_s=final, report_s=report, margin_s=margin)


def apply_plan(spec: StudySpec, plan: TimePlan) -> StudySpec:
    """The spec with the plan's budgets: the first rung, the full budget and where the repeats stop."""
    local = {**spec.local, "budget_chars": plan.local_chars} if plan.local_points else spec.local
    return replace(spec, budget_chars=plan.budget_chars, repeat_chars=plan.repeat_chars,
                   scheduler={**spec.scheduler, "grace_chars": plan.grace_chars}, local=local)


def repeats_seconds(plan: TimePlan, repeats: int, repeat_chars: int, chars_per_s: float) -> float:
    """Seconds the seed repeats take at the chosen configuration's own speed (its search trial's chars/s, measured
    as the repeats run: `parallel` trials at once), for the progress line; the plan's figure where that speed is
    unknown. The plan sizes the repeats at the search space's average speed, and the configuration a search picks
    can be several times slower: a seq_len-200 GRU 2x512 trained at 3.9k chars/s where the plan measured 18.9k, and
    its repeats took 2:51 of the 0:40 planned."""
    if not chars_per_s > 0 or not repeats:
        return plan.repeats_s
    return math.ceil(repeats / plan.parallel) * repeat_chars / chars_per_s


def final_seconds(plan: TimePlan, study_elapsed_s: float) -> float:
    """Seconds the final model may train when it starts `study_elapsed_s` into the study: what is left of the
    study's minutes after the end of the margin, END_MARGIN, and of the report's reserve, REPORT_KEPT (never less
    than a minute). On time, that is the planned `final_s` plus the margin the search and the repeats did not need
    and the part of the report's reserve it does not."""
    left = 60.0 * plan.minutes * (1.0 - END_MARGIN) - study_elapsed_s - REPORT_KEPT * plan.report_s
    return max(60.0, left)


def local_points(spec: StudySpec) -> int:
    """Trials of the spec's local design, counted around its fixed center, or the middle of the space where the
    search's best will be the center (0 when it has none)."""
    from study.local import design
    from study.space import from_unit, optuna_space

    if not int(spec.local["seeds"]):
        return 0
    middle = spec.local_center() or {name: from_unit(dist, 0.5) for name, dist in optuna_space(spec).items()}
    return (1 + len(design(spec, middle))) * int(spec.local["seeds"])


def measure_speed(spec: StudySpec, corpus: Corpus, seed: int, device: str = "cpu", threads: int = 1,
                  configs: int = MEASURE_CONFIGS, seconds: float = MEASURE_S) -> float:
    """One trial's training speed on this machine, in characters per second, averaged over the search space.

    Trains `configs` configurations drawn from a Latin hypercube over the space (the startup trials' design) for
    about `seconds` each with the real trainer, and returns their time-weighted mean: characters over the total
    seconds, as the search will spend them. The learning rate plays no part in speed and is left at a safe value.
    """
    from charrnn.speed import trainer_throughput
    from study.space import LatinHypercubeStartup, make_sampler, optuna_space

    space = optuna_space(spec)
    design = LatinHypercubeStartup(make_sampler(spec, seed), space, max(configs, 2), seed).design()[:configs]
    seconds_per_char = []
    for row in design:
        flat = {**spec.fixed, **row, "lr": 1e-3, "lr_scale": 0.0, "optimizer": "adam", "device": device,
                "threads": threads, "val_chars": 2_000, "sample_chars": 1, "final_temperatures": ()}
        flat = {k: v for k, v in flat.items() if k in TrainConfig.__dataclass_fields__}
        config = TrainConfig.from_flat(flat)
        chars, secs = trainer_throughput(config, corpus, seconds)
        seconds_per_char.append(secs / max(chars, 1))
    return len(seconds_per_char) / sum(seconds_per_char)


def make_plan(spec: StudySpec, corpus: Corpus, *, trials: int, seed: int, repeats: int, minutes: float,
              parallel: int, device: str = "cpu", threads: int = 1,
              final_minutes_cap: float = 0.0) -> tuple[StudySpec, TimePlan]:
    """Measure this machine and plan `minutes` for the study; returns the planned spec and the plan.

    Raises:
        PlanError: when the minutes cannot hold the trials.
    """
    rate = measure_speed(spec, corpus, seed, device=device, threads=threads)
    points = local_points(spec)
    if points:
        # The plan follows the speed grid; the same machine keeps its earlier study's point while it drifts less
        # than a step from it (study.machine).
        key = machine_key(threads=threads, parallel=parallel, device=device, space=repr(sorted(spec.search.items())),
                          fixed=repr(sorted(spec.fixed.items())), vocab=len(corpus.vocab.chars))
        reading = settle(rate, key, SPEED_GRID)
        plan = plan_local(minutes=minutes, trials=trials, chars_per_s=reading.chars_per_s, parallel=parallel,
                          step_chars=spec.step_chars_range()[1], min_steps=spec.min_steps,
                          repeats=repeats * MAX_CANDIDATES,
                          local_points=points, local_share=float(spec.local["share"]), val_chars=spec.val_chars,
                          local_seeds=int(spec.local["seeds"]),
                          final_minutes_cap=final_minutes_cap)
        plan = replace(plan, measured_chars_per_s=round(rate, 1),
                       speed_file=str(reading.path) if reading.remembered else "")
        return apply_plan(spec, plan), plan
    plan = plan_budgets(minutes=minutes, trials=trials, reduction_factor=spec.scheduler["reduction_factor"],
                        chars_per_s=rate, parallel=parallel, step_chars=spec.step_chars_range()[1],
                        min_steps=spec.min_steps, repeats=repeats * MAX_CANDIDATES,
                        final_minutes_cap=final_minutes_cap)
    return apply_plan(spec, plan), plan


# Budgets are rounded down to these optimizer steps, so that a speed measured a few percent apart gives the same plan
# (what the rounding frees goes to the final model).
STEP_GRID = (25, 35, 50, 70, 100, 140, 200, 280, 400, 560, 800, 1120, 1600, 2240, 3200)
# The sd over seeds of a move's paired difference (move - center, same seed) in validation bits/char, against
# optimizer steps (800 characters a step; a GRU 1x256 center and lr_scale x2.2: `python -m benchmarks.seed_noise`,
# BENCHMARKS.md); interpolated on log steps. One configuration's own seed sd there was 0.03-0.05.
NOISE_SD = ((50, 0.073), (100, 0.088), (200, 0.096), (400, 0.095))
EVAL_COST = 0.3  # a validation character's time against a training character's (a forward pass, in long streams)
SCREEN_MIN_FRACTION = 0.5  # a search trial of a local-design plan trains at least this x min_steps


SPEED_GRID = 2 ** 0.5  # a local-design plan reads the measured speed rounded down to a power of this


def on_speed_grid(chars_per_s: float) -> float:
    """`chars_per_s` rounded down to a power of SPEED_GRID (to the nearest char/s)."""
    if not chars_per_s > 0:
        return chars_per_s
    return float(round(SPEED_GRID ** math.floor(math.log(chars_per_s) / math.log(SPEED_GRID) + 1e-9)))


def on_grid(steps: float) -> int:
    """`steps` rounded down to STEP_GRID (0 below its first point)."""
    return max([g for g in STEP_GRID if g <= steps], default=0)


def expected_noise(steps: int) -> float:
    """NOISE_SD at `steps`, interpolated on log steps and held flat past its ends."""
    xs = [math.log(s) for s, _ in NOISE_SD]
    x = math.log(max(steps, 1))
    if x <= xs[0]:
        return NOISE_SD[0][1]
    for (x0, (_, y0)), (x1, (_, y1)) in zip(zip(xs, NOISE_SD), zip(xs[1:], NOISE_SD[1:])):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return NOISE_SD[-1][1]


def plan_local(*, minutes: float, trials: int, chars_per_s: float, parallel: int, step_chars: int, min_steps: int,
               repeats: int, local_points: int, local_share: float, val_chars: int = 0, local_seeds: int = 2,
               final_minutes_cap: float = 0.0) -> TimePlan:
    """Size a study with a local design (study.local) to `minutes`: the search's trials, the repeats, the local
    design's trials and the final model (pure; budgets on STEP_GRID).

    The search and the local design share what the margin, the report and the final model leave, `local_share` of it
    to the local design; each trial of either is evaluated at least MIN_EVALS times.

    Raises:
        PlanError: when the search's trials cannot get SCREEN_MIN_FRACTION x min_steps steps and the local design
            min_steps, with the minutes that would fit and the trials that fit in these.
    """
    error = None
    for share in (FINAL_SHARE, FINAL_SHARE_MIN):
        try:
            return _plan_local(minutes, trials, chars_per_s, parallel, step_chars, min_steps, repeats, local_points,
                               local_share, val_chars, local_seeds, final_minutes_cap, share)
        except PlanError as exc:
            error = error or exc
    raise error


def _plan_local(minutes, trials, chars_per_s, parallel, step_chars, min_steps, repeats, local_points, local_share,
                val_chars, local_seeds, final_minutes_cap, final_share) -> TimePlan:
    # Every budget follows from the speed rounded down to SPEED_GRID: two measurements a few percent apart then
    # give the same plan unless they straddle one of its points (BENCHMARKS.md), and --plan-from replays one exactly.
    chars_per_s = on_speed_grid(chars_per_s)
    total = 60.0 * minutes
    margin = MARGIN * total
    report = REPORT_S + REPORT_S_PER_TRIAL * (trials + local_points / 2)
    left = total - margin - report
    final = final_share * left
    if final_minutes_cap > 0:
        final = min(final, 60.0 * final_minutes_cap)
    rate = chars_per_s * parallel * SEARCH_EFFICIENCY
    rounds = lambda n: math.ceil(n / parallel) * parallel if n else 0  # noqa: E731 - trials in rounds of `parallel`
    search_trials, local_trials = rounds(trials) + rounds(repeats), rounds(local_points)
    # Evaluations take time too: MIN_EVALS of `val_chars` a trial, a forward pass at EVAL_COST of a training step's
    # time per character.
    eval_chars = MIN_EVALS * val_chars * EVAL_COST * (search_trials + local_trials)
    steps_budget = max((left - final) * rate - eval_chars, 0.0) / step_chars  # the search's and local design's
    screen_min, local_min = on_grid(SCREEN_MIN_FRACTION * min_steps) or STEP_GRID[0], on_grid(min_steps) or min_steps
    screen = on_grid((1 - local_share) * steps_budget / search_trials)
    if screen < screen_min:
        screen = screen_min
    local = on_grid((steps_budget - screen * search_trials) / local_trials) if local_trials else 0
    if local_trials and local < max(local_min, screen):
        need = screen_min * search_trials + max(local_min, screen_min) * local_trials
        minutes_needed = math.ceil(((need * step_chars + eval_chars) / rate / (1 - final_share) + report)
                                   / (1 - MARGIN) / 60.0)
        fit = max(0, int((steps_budget - max(local_min, screen_min) * local_trials) // screen_min) - rounds(repeats))
        fewer = (f"or at most {fit} --trials in these" if fit >= 2 else
                 "or a local design over fewer hyperparameters (the spec's [local] params)")
        raise PlanError(f"{minutes:g} minutes cannot hold {trials} search trials of {screen_min} optimizer steps and a "
                        f"local design of {local_points} trials of {local_min} at the measured {chars_per_s:,.0f} "
                        f"chars/s per trial ({parallel} at once): that needs about {minutes_needed} minutes, {fewer}")
    per_eval = MIN_EVALS * val_chars * EVAL_COST
    search_s = rounds(trials) * (screen * step_chars + per_eval) / rate
    repeats_s = rounds(repeats) * (screen * step_chars + per_eval) / rate
    local_s = local_trials * (local * step_chars + per_eval) / rate
    final = total - margin - report - search_s - repeats_s - local_s  # what the rounding freed goes to the final model
    if final_minutes_cap > 0:
        final = min(final, 60.0 * final_minutes_cap)
    budget = screen * step_chars
    return TimePlan(minutes=minutes, chars_per_s=chars_per_s, parallel=parallel, min_steps=min_steps,
                    step_chars=step_chars, grace_chars=budget, budget_chars=budget, rungs=[], planned=[trials],
                    repeat_chars=budget, search_s=search_s, repeats_s=repeats_s, final_s=final, report_s=report,
                    margin_s=margin, local_chars=local * step_chars, local_points=local_points, local_s=local_s,
                    noise_sd=expected_noise(local), local_seeds=local_seeds)


def local_refit(plan: TimePlan, center_chars_per_s: float, slack: float = 1.5) -> int:
    """The local design's budget at the center's own speed: the plan's, unless at that speed it would take more than
    `slack` x its planned time, then the largest STEP_GRID budget that fits (at least the grid's first point)."""
    if not plan.local_points or not center_chars_per_s > 0:
        return plan.local_chars
    rounds = math.ceil(plan.local_points / plan.parallel)
    steps = plan.local_chars // plan.step_chars
    while steps > STEP_GRID[0] and rounds * steps * plan.step_chars / center_chars_per_s > slack * plan.local_s:
        steps = max([g for g in STEP_GRID if g < steps], default=STEP_GRID[0])
    return steps * plan.step_chars
