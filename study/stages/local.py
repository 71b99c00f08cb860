"""The local stage: the center configuration and every one-at-a-time move from it (study.local), each trained with
the same seeds to the local budget, in a fixed order; then the configuration the final model trains is chosen."""
from __future__ import annotations

import math

import pandas as pd
from ray import tune

from study import local
from study.plan import Plan
from study.results import ResultsWriter
from study.rundir import RunDir
from study.spec import MIN_EVALS
from study.timeplan import TimePlan, local_refit
from study.stages.experiment import (PointsSearch, expect, fit, restored, reuse_actors, run_config, trial_dirname,
                                     trial_params)

EXPERIMENT = "tune-local"


def run(plan: Plan, trainable, writer: ResultsWriter, center: pd.Series | None,
        uniform_bpc: float) -> local.Choice | None:
    """Train the local design around the spec's fixed center (`local.center`) or, without one, around `center` (a
    search trial), and choose the best-confirmed configuration among the center and its moves; both are recorded
    in study.json (`local`). Returns the choice, or None when neither the center nor a better move trained normally
    in every seed."""
    spec = plan.spec
    fixed = spec.local_center()
    searched = None if fixed is not None else center  # the search trial at the center, if it is one
    params = fixed if fixed is not None else trial_params(plan, center)
    seeds = local.seeds_for(plan.seed, int(spec.local["seeds"]))
    points = local.points(spec, params, seeds)
    budget, refit = _budget(plan, searched)
    step = _step_chars(plan, params)
    moves = local.design(spec, params)
    RunDir(plan.run_dir).update_study({"local": {
        "budget_chars": budget, "steps": budget // step, "seeds": seeds,
        "center_trial": None if searched is None else str(searched["trial_id"]),
        "center_from": "spec" if fixed is not None else "search",
        "center": params, "moves": [m.to_dict() for m in moves], "refit": refit}})
    writer.stage("local", len(points), expect=_expect(plan, len(points), budget, searched))
    param_space = {**spec.fixed, **spec.run_settings(), **params, "budget_chars": budget, "eval_at": [],
                   "evals_per_trial": MIN_EVALS}
    tuner = restored(plan, EXPERIMENT, trainable, writer, param_space)
    if tuner is None:
        where = "the spec's center (local.center)" if searched is None else f"trial {searched['trial_id']}"
        writer.echo(f"local design around {where}: the center and {len(moves)} moves "
                    f"({len(spec.local_params())} hyperparameters), each with seeds {seeds}, to {budget:,} characters "
                    f"({budget // step} steps): {len(points)} trials")
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(search_alg=PointsSearch(points), num_samples=len(points),
                                        metric="best_val_bpc", mode="min", max_concurrent_trials=plan.max_concurrent,
                                        reuse_actors=reuse_actors(plan), trial_dirname_creator=trial_dirname),
            run_config=run_config(plan, EXPERIMENT, writer),
        )
    fit(tuner, len(points), writer.stop)
    choice = local.choose(writer.table.trials_frame(), spec, uniform_bpc)
    RunDir(plan.run_dir).update_study({"local": {"chosen": None if choice is None else {
        **choice.to_dict(), "handed_over": fixed is None}}})
    if choice is not None and fixed is None:
        writer.echo(f"the final model trains {'the center' if not choice.moved else choice.moved + ' moved'}: "
                    f"{choice.why}")
    return choice


def _budget(plan: Plan, center: pd.Series | None) -> tuple[int, str | None]:
    """The local budget: the plan's, unless the center (a search trial) trains markedly slower than the plan
    measured (then cut to fit, and why). A fixed center is part of the plan, so its budget is the plan's."""
    budget = plan.spec.local_budget_chars
    if center is None or plan.time_plan is None or (plan.time_plan or {}).get("replayed"):
        return budget, None
    speed = float(center.get("chars_per_s") or 0.0)
    cut = local_refit(TimePlan.from_dict(plan.time_plan), speed) if math.isfinite(speed) else budget
    if cut >= budget:
        return budget, None
    return cut, (f"the center trains at {speed:,.0f} chars/s, against the {plan.time_plan['chars_per_s']:,.0f} the "
                 f"plan measured: {budget:,} characters a trial would not fit, so {cut:,}")


def _step_chars(plan: Plan, params: dict) -> int:
    from study.stages.final import step_size

    return max(1, step_size(plan, {**params, **({"step_chars": plan.spec.fixed["step_chars"]}
                                               if "step_chars" in plan.spec.fixed else {})}))


def _expect(plan: Plan, n: int, budget: int, center: pd.Series | None) -> tuple[float | None, float]:
    """The progress line's estimate: the local design at the center's own speed where a search trial measured it,
    `parallel` trials at once; else the plan's."""
    stage, after = expect(plan, "local")
    speed = float(center.get("chars_per_s") or 0.0) if center is not None else 0.0
    parallel = (plan.time_plan or {}).get("parallel") or plan.max_concurrent or 1
    if speed > 0 and math.isfinite(speed):
        stage = math.ceil(n / parallel) * budget / speed
    return stage, after
