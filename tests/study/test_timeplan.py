"""The time plan: pure arithmetic on a measured speed (no Ray, no training)."""
from __future__ import annotations

import pytest

from study.timeplan import (END_MARGIN, REPORT_KEPT, PlanError, TimePlan, final_seconds, plan_budgets, planned_counts,
                            repeats_seconds)

ARGS = dict(minutes=30, trials=50, reduction_factor=3, parallel=2, step_chars=800, min_steps=100, repeats=2)


def _search_chars(p: TimePlan, trials: int = 50) -> float:
    return trials * p.grace_chars * (1 + len(p.rungs) * (1 - 1 / 3))


def test_the_plan_adds_up_to_the_minutes_asked():
    p = plan_budgets(chars_per_s=30_000, **ARGS)
    total = p.search_s + p.repeats_s + p.final_s + p.report_s + p.margin_s
    assert total == pytest.approx(30 * 60)
    assert p.grace_chars // 800 >= 200  # every trial has twice the steps it takes to leave the plateau
    assert p.rungs == [p.grace_chars, 3 * p.grace_chars] and p.budget_chars == 9 * p.grace_chars
    assert p.planned == [50, 16, 5] and p.repeat_chars == p.rungs[-1]
    assert p.final_s > 8 * 60  # the final model keeps a real share of the time


def test_a_faster_machine_reaches_larger_budgets_in_the_same_minutes():
    slow, fast = plan_budgets(chars_per_s=30_000, **ARGS), plan_budgets(chars_per_s=300_000, **ARGS)
    assert fast.grace_chars >= 9 * slow.grace_chars
    assert fast.search_s == pytest.approx(slow.search_s, rel=0.05)


def test_a_short_time_drops_rungs_before_it_drops_the_floor():
    p = plan_budgets(chars_per_s=13_000, **ARGS)
    assert p.grace_chars >= 200 * 800 and p.rungs == [p.grace_chars] and p.planned == [50, 16]
    p = plan_budgets(chars_per_s=4_000, **ARGS)
    assert 100 * 800 <= p.grace_chars < 200 * 800


def test_too_few_minutes_is_one_clear_error():
    with pytest.raises(PlanError, match="cannot hold 50 trials of at least 100 optimizer steps"):
        plan_budgets(chars_per_s=1_000, **{**ARGS, "minutes": 5})


@pytest.mark.parametrize("speed, minutes", [(1_000, 5), (2_600, 12), (9_000, 3)])
def test_a_refusal_names_minutes_that_suffice_and_trials_that_fit(speed, minutes):
    """The minutes a refusal names are rounded up (a novel's "needs about 12 minutes" at --minutes 12 was a
    refusal that named its own minutes), and the trials it names fit in the minutes given."""
    import re

    args = {**ARGS, "minutes": minutes}
    with pytest.raises(PlanError) as err:
        plan_budgets(chars_per_s=speed, **args)
    need = int(re.search(r"needs about (\d+) minutes", str(err.value)).group(1))
    assert need > minutes
    plan_budgets(chars_per_s=speed, **{**args, "minutes": need})
    fit = re.search(r"at most (\d+) --trials", str(err.value))
    if fit:
        plan_budgets(chars_per_s=speed, **{**args, "trials": int(fit.group(1))})


def test_final_minutes_cap_and_round_trip():
    p = plan_budgets(chars_per_s=30_000, final_minutes_cap=2, **ARGS)
    assert p.final_s == 120
    assert TimePlan.from_dict(p.to_dict()) == p


def test_the_final_model_gets_what_is_left_of_the_study():
    p = plan_budgets(chars_per_s=13_000, **ARGS)
    on_time = p.search_s + p.repeats_s
    # On time, the final model also gets the margin the search and the repeats did not need, all but its end, and
    # the report's reserve, all but what the report is still expected to take.
    unused = p.margin_s - END_MARGIN * 60 * p.minutes + (1 - REPORT_KEPT) * p.report_s
    assert unused > 0.05 * 60 * p.minutes and 0 < REPORT_KEPT < 1
    assert final_seconds(p, on_time) == pytest.approx(p.final_s + unused)
    assert final_seconds(p, on_time + 120) == pytest.approx(p.final_s + unused - 120)  # a late search shortens it
    # The whole study still ends inside its minutes, with END_MARGIN to spare after the report's expected build.
    assert on_time + final_seconds(p, on_time) + REPORT_KEPT * p.report_s == pytest.approx(
        60 * p.minutes * (1 - END_MARGIN))
    assert final_seconds(p, 10 * 3600) == 60.0


def test_the_repeats_are_estimated_at_the_chosen_configuration_s_own_speed():
    # The default study's seed 1 (BENCHMARKS.md): planned at 18,859 chars/s, it chose a configuration whose trial
    # trained at 3,852; its two repeats to 642k characters, two at once, took 2:51.
    p = plan_budgets(chars_per_s=18_859, **ARGS)
    assert p.repeats_s < 60
    assert repeats_seconds(p, 2, 642_400, 3_852) == pytest.approx(642_400 / 3_852)  # 2:47
    assert repeats_seconds(p, 3, 642_400, 3_852) == pytest.approx(2 * 642_400 / 3_852)  # two waves of two
    assert repeats_seconds(p, 2, 642_400, float("nan")) == p.repeats_s  # speed unknown: the plan's figure
    assert repeats_seconds(p, 0, 642_400, 3_852) == p.repeats_s


def test_planned_counts():
    assert planned_counts(50, 2, 3) == [50, 16, 5]
    assert planned_counts(50, 0, 3) == [50]


LOCAL = dict(minutes=30, trials=50, parallel=2, step_chars=800, min_steps=100, repeats=2, local_points=46,
             local_share=0.65, val_chars=10_000, local_seeds=2)


@pytest.mark.parametrize("speed", [4_700, 8_400, 17_000, 60_000])
def test_a_local_design_plan_fits_the_minutes_on_a_grid_of_steps(speed):
    from study.timeplan import STEP_GRID, plan_local

    p = plan_local(chars_per_s=speed, **LOCAL)
    total = p.search_s + p.repeats_s + p.local_s + p.final_s + p.report_s + p.margin_s
    assert total == pytest.approx(30 * 60)
    screen, local = p.budget_chars // 800, p.local_chars // 800
    assert screen in STEP_GRID and local in STEP_GRID and local >= max(100, screen) and screen >= 50
    assert p.rungs == [] and p.final_s >= 0.3 * (30 * 60 - p.margin_s - p.report_s) - 1
    assert "local design" in p.describe() and "cannot be told from noise" in p.describe()


def test_a_speed_measured_a_few_percent_apart_mostly_gives_the_same_budgets():
    import numpy as np

    from study.timeplan import plan_local

    speeds = np.geomspace(6_000, 40_000, 100)
    same = [(a.budget_chars, a.local_chars) == (b.budget_chars, b.local_chars)
            for a, b in ((plan_local(chars_per_s=s, **LOCAL), plan_local(chars_per_s=1.03 * s, **LOCAL))
                         for s in speeds)]
    assert np.mean(same) >= 0.88  # 3% apart: only a speed grid point between them changes the plan


def test_a_local_design_that_cannot_fit_is_one_line_naming_what_would():
    from study.timeplan import plan_local

    with pytest.raises(PlanError, match=r"needs about \d+ minutes, (or at most \d+ --trials|or a local design)"):
        plan_local(chars_per_s=4_700, **{**LOCAL, "minutes": 15})


def test_a_slow_center_cuts_the_local_budget_down_the_grid():
    from study.timeplan import local_refit, plan_local

    p = plan_local(chars_per_s=17_000, **LOCAL)
    assert local_refit(p, 17_000) == p.local_chars
    assert local_refit(p, 4_000) < p.local_chars and (local_refit(p, 4_000) // 800) >= 25


def test_a_fixed_local_center_counts_its_own_moves():
    from study.inputs import SPECS_DIR
    from study.local import design
    from study.spec import load_spec
    from study.timeplan import local_points

    spec = load_spec(SPECS_DIR / "sherlock.toml")
    assert local_points(spec) == 2 * (1 + len(design(spec, spec.local_center()))) == 46
