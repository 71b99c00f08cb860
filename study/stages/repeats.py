"""The repeats stage: retrain the best configuration with other seeds (the report's noise floor, and a check that it
trains reliably), and hand the first configuration that does to the final model (runcontract.selection decides)."""
from __future__ import annotations

import time

import pandas as pd
from ray import tune

from runcontract import selection
from study.plan import Plan
from study.results import ResultsWriter
from study.rundir import RunDir
from study.stages.experiment import (PointsSearch, expect, fit, restored, reuse_actors, run_config, trial_dirname,
                                     trial_params)
from study.timeplan import REPORT_KEPT, TimePlan, final_seconds, repeats_seconds

EXPERIMENT = "tune-repeats"


def choose_final(plan: Plan, trainable, writer: ResultsWriter) -> pd.Series | None:
    """Retrain each of the best `MAX_CANDIDATES` configurations with `repeats` other seeds (the noise floor for the
    report, and a check that each trains reliably), and choose on expected score: of those that never diverged, the
    one whose repeats scored best on average (runcontract.selection decides). Returns the search trial whose
    configuration the final model trains, and records the choice in study.json (`selection`)."""
    trials = writer.table.trials_frame()
    ranked = selection.ranked(trials, selection.points_reached(trials, plan.spec.eval_at()))
    candidates: list[tuple[str, str | None]] = []

    def decided(chosen: pd.Series | None) -> pd.Series | None:
        RunDir(plan.run_dir).update_study({"selection": selection.record(
            candidates, None if chosen is None else str(chosen["trial_id"]))})
        return chosen

    if ranked.empty:
        writer.echo("no trial finished; skipping the seed repeats and the final model")
        return decided(None)
    if plan.repeats == 0:
        candidates.append((str(ranked.iloc[0]["trial_id"]), None))
        return decided(ranked.iloc[0])
    top = ranked.head(selection.MAX_CANDIDATES)
    repeat(plan, trainable, writer, [candidate for _, candidate in top.iterrows()])
    trials = writer.table.trials_frame()
    chosen_id, checked = selection.decide(trials, top["trial_id"].astype(str).tolist())
    candidates.extend(checked)
    for tid, why in checked:
        if why is not None and why.startswith("unstable"):
            writer.echo(f"trial {tid}'s configuration is {why}; it is not handed over as the final model")
    if chosen_id is None:
        writer.echo(f"none of the {len(top)} best configurations trained reliably in every seed; no final model")
        return decided(None)
    chosen = top[top["trial_id"].astype(str) == chosen_id].iloc[0]
    writer.echo(f"the search's choice is trial {chosen_id}: its seed repeats scored "
                f"{selection.repeat_mean(trials, chosen_id):.3f} on average, the best of the {len(top)} best "
                "trials' repeats")
    return decided(chosen)


def repeat(plan: Plan, trainable, writer: ResultsWriter, candidates: list[pd.Series]) -> None:
    """Retrain each candidate configuration with `repeats` other seeds, on the search's schedule up to
    `repeat_chars`: one Tune experiment for all of them (one start, trials `max_concurrent` at a time), each trial
    labelled with the search trial it repeats (`repeat_of`)."""
    seeds = [plan.seed + k for k in range(1, plan.repeats + 1)]
    stop = plan.spec.repeat_chars or plan.spec.budget_chars
    n = len(candidates) * len(seeds)
    writer.stage("repeat", n, expect=_expect(plan, candidates, stop))
    points = [{**plan.spec.fixed, **plan.spec.run_settings(), **trial_params(plan, best), "stop_chars": stop,
               "seed": seed, "repeat_of": str(best["trial_id"])} for best in candidates for seed in seeds]
    tuner = restored(plan, EXPERIMENT, trainable, writer, {})
    if tuner is not None:
        fit(tuner, n, writer.stop)
        return
    writer.echo(f"retraining the {len(candidates)} best configurations (trials "
                f"{', '.join(str(c['trial_id']) for c in candidates)}) with seeds {seeds} to {stop:,} characters")
    tuner = tune.Tuner(
        trainable,
        param_space={},
        tune_config=tune.TuneConfig(search_alg=PointsSearch(points), num_samples=n, metric="best_val_bpc",
                                    mode="min", max_concurrent_trials=plan.max_concurrent,
                                    reuse_actors=reuse_actors(plan), trial_dirname_creator=trial_dirname),
        run_config=run_config(plan, EXPERIMENT, writer),
    )
    fit(tuner, n, writer.stop)


def _expect(plan: Plan, candidates: list[pd.Series], stop: int) -> tuple[float | None, float]:
    """The progress line's estimate for the repeats, at the candidates' own speeds, and for what follows: the final
    model takes what is left of the study's minutes when the repeats end (study.timeplan.final_seconds)."""
    if plan.time_plan is None:
        return expect(plan, "repeat")
    tp = TimePlan.from_dict(plan.time_plan)
    speeds = [float(c.get("chars_per_s") or 0.0) for c in candidates]
    speed = sum(speeds) / len(speeds) if all(speeds) else 0.0
    own = repeats_seconds(tp, plan.repeats * len(candidates), stop, speed)
    final = final_seconds(tp, time.monotonic() - plan.started + own) if plan.final_chars > 0 else 0.0
    return own, final + REPORT_KEPT * tp.report_s  # final_seconds gives the final model the rest of the reserve
