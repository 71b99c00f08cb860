"""The final stage: the chosen configuration trained to convergence on the whole training text, with its search
trial's weights as the model to beat, for the time the study has left, and scored once on the test text.

Where the spec names a hand-picked baseline (`final.baseline`) and `final.race_evals`, the chosen configuration and
the hand-picked ones first race: each trains on the final model's terms, its schedule spanning the whole run, one
after the other, in rounds of successive halving: all to the first rung (`race_evals`, evaluations of `final.evals`),
the better half (at least two) on from their checkpoints to the next, and at the last rung the best on validation
goes on to the end; the others' races are the cost (`race_limit_s`). What wins a search trial's few hundred steps
need not win thousands, and what leads at a fifth of the run need not lead at its end.

Its budget is decided once, at its start, to fit that time (charrnn.pacer), and recorded in study.json `final`; a
study that replays this one's plan (--plan-from) trains that budget as given, and so does a later study of the same
configuration on this machine with about the same time (the budget remembered, study.machine): two warm-ups read
speeds up to 1.4x apart, which alone would make the same study two models."""
from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.fs
import torch
from ray import tune

from charrnn.checkpoint import MODEL_FILE, STATE_FILE
from charrnn.config import BASE_LR, TrainConfig
from charrnn.pacer import RULE as PACER_RULE
from charrnn.pacer import chars_to_give
from runcontract import BASELINE, CHOSEN, RACE, TRAINED
from study.cluster import final_resources
from study.machine import Budget, machine_key, recall_budget, remember_budget
from study.plan import Plan
from study.results import ResultsWriter, checkpoint_exists
from study.rundir import RunDir
from study.stages.experiment import PointsSearch, expect, fit, restored, run_config, trial_dirname, trial_params
from study.stages.experiment import storage as tune_storage
from study.timeplan import TimePlan, final_seconds
from study.trainable import run_trial

EXPERIMENT, RACE_EXPERIMENT = "tune-final", "tune-race"


def checkpoint_file(plan: Plan, where: str, name: str) -> bytes:
    """The bytes of file `name` of the trial checkpoint at `where` (a path, or a path under a pyarrow URI storage).

    Raises:
        OSError: when it cannot be read.
    """
    if "://" in tune_storage(plan):
        fs, _ = pyarrow.fs.FileSystem.from_uri(tune_storage(plan))
        with fs.open_input_file(f"{where.rstrip('/')}/{name}") as f:
            return f.read()
    return (Path(where) / name).read_bytes()


def trial_weights(plan: Plan, chosen: pd.Series) -> dict | None:
    """The best weights a search trial saved (its last checkpoint's model.pt), or None where they cannot be read."""
    where = chosen.get("checkpoint")
    if not isinstance(where, str) or not where:
        return None
    try:
        data = checkpoint_file(plan, where, MODEL_FILE)
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)["state_dict"]
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        print(f"warning: cannot read trial {chosen['trial_id']}'s weights ({exc}); the final model starts afresh",
              flush=True)
        return None


@dataclass(frozen=True)
class Candidate:
    """A configuration the final stage may train: CHOSEN (the study's) or BASELINE (the spec's hand-picked)."""

    name: str
    params: dict


def candidates(spec, params: dict) -> list[Candidate]:
    """What the final stage races: the study's configuration `params`, then, where the spec races
    (`final.race_evals` > 0), the baseline and each alternative it names, as hyperparameters over `params` (one it
    leaves out keeps the chosen value; an `lr` or `lr_scale` it sets replaces either); a configuration already in the
    race is not raced twice."""
    pool = [Candidate(CHOSEN, dict(params))]
    if not race_rungs(spec):
        return pool
    named = [(BASELINE, spec.final.get("baseline") or {})] + list((spec.final.get("alternatives") or {}).items())
    for name, table in named:
        if not table:
            continue
        rate_keys = {"lr", "lr_scale"} if {"lr", "lr_scale"} & set(table) else set()
        other = {**{k: v for k, v in params.items() if k not in rate_keys}, **table}
        if all(other != c.params for c in pool):
            pool.append(Candidate(name, other))
    return pool


def describe(c: Candidate) -> str:
    """A candidate in the console's words."""
    return {CHOSEN: "the chosen configuration", BASELINE: "the hand-picked baseline (final.baseline)"}.get(
        c.name, f"the hand-picked alternative {c.name!r} (final.alternatives)")


def race_rungs(spec) -> list[int]:
    """The race's rungs: the evaluations (of `final.evals`) at which it drops candidates, ascending (`final.race_evals`,
    one number or a list); [] where the spec does not race."""
    raw = spec.final.get("race_evals") or 0
    return [int(r) for r in (raw if isinstance(raw, (list, tuple)) else [raw]) if int(r) > 0]


def survivors(n: int, rungs: int) -> list[int]:
    """How many of `n` candidates race on past each of `rungs` rungs: the better half, rounded up and at least two, at
    each but the last, and one, the winner, at the last."""
    out = []
    for i in range(rungs):
        n = 1 if i == rungs - 1 else max(2, math.ceil(n / 2))
        out.append(n)
    return out


def race_cost(spec, n: int) -> float:
    """The share of one candidate's run that the race's losers train in all, when `n` race: each loser trains the share
    of its run up to the rung that drops it (3 candidates at rungs 2 and 4 of 10: 0.2 + 0.4)."""
    rungs, evals = race_rungs(spec), int(spec.final["evals"])
    cost, left = 0.0, n
    for rung, keep in zip(rungs, survivors(n, len(rungs))):
        cost, left = cost + (left - keep) * rung / evals, keep
    return cost


def race_limit_s(limit_s: float, cost: float) -> float:
    """Each candidate's time limit when the race's losers train `cost` of a run (`race_cost`) within the final
    stage's `limit_s`: the winner's whole run and the others' races fit, L + cost x L = limit_s (0: no limit)."""
    return limit_s / (1.0 + cost) if limit_s > 0 else 0.0


def race_ranking(rows: pd.DataFrame) -> pd.DataFrame:
    """Of a race round's rows, the candidates that trained normally (completed or stopped at the rung), best on
    validation first; a tie goes to the earlier row (the chosen configuration races first)."""
    ok = rows[rows["status"].isin(TRAINED) & rows["best_val_bpc"].map(lambda v: math.isfinite(float(v)))]
    return ok.assign(_score=ok["best_val_bpc"].astype(float)).sort_values("_score", kind="stable").drop(
        columns="_score")


def race_winner(rows: pd.DataFrame) -> pd.Series | None:
    """A race round's winner (`race_ranking`'s first), or None when none trained normally."""
    ranked = race_ranking(rows)
    return None if ranked.empty else ranked.iloc[0]


def time_limit_s(plan: Plan) -> float:
    """Seconds the final model may train: under a time plan, what is left of the study's minutes (at most
    --final-minutes when given); else --final-minutes (0 = no limit)."""
    if plan.time_plan is None:
        return 60.0 * plan.final_minutes
    left = final_seconds(TimePlan.from_dict(plan.time_plan), time.monotonic() - plan.started)
    return min(left, 60.0 * plan.final_minutes) if plan.final_minutes_asked and plan.final_minutes else left


def final_rate(plan: Plan, params: dict) -> dict:
    """The final model's learning rate: the chosen trial's, at most the optimizer's usual rate (BASE_LR).

    A short search favours rates that make fast early progress, and a final model trained many times longer at
    such a rate did worse (BENCHMARKS.md, "The final stage alone"). Returns the keys to override ({} when the
    trial's rate is no higher).
    """
    config = TrainConfig.from_flat({k: v for k, v in {**plan.spec.fixed, **params}.items()
                                    if k in TrainConfig.__dataclass_fields__})
    usual = BASE_LR[config.optimizer]
    if config.lr <= usual:
        return {}
    return {"lr_scale": 1.0} if config.lr_scale > 0 else {"lr": usual}


def step_size(plan: Plan, params: dict) -> int:
    """Characters per optimizer step of a configuration (batch_size x seq_len, as the trainer sets them)."""
    config = TrainConfig.from_flat({k: v for k, v in {**plan.spec.fixed, **params}.items()
                                    if k in TrainConfig.__dataclass_fields__})
    return config.batch_size * config.seq_len


def final_config(spec, params: dict, chars: int, limit_s: float, seed: int, decided_chars_per_s: float = 0.0) -> dict:
    """The final model's flat config (what `TrainConfig.from_flat` takes): the spec's fixed and run settings, a
    configuration's hyperparameters `params`, and the final stage's own terms from `spec.final`: the whole training
    text, `step_chars` characters a step when set, `evals` evenly spaced evaluations, early stopping after `patience`
    evaluations without a gain of `min_delta`, up to `chars` characters or `limit_s` seconds (0: no limit).
    `decided_chars_per_s` > 0 says `chars` is a budget already decided at that rate (a replayed plan's).

    The final stage and benchmarks.final train with it; a rate cap (`final_rate`) is the caller's, in `params`.
    """
    final = spec.final
    return {**spec.fixed, **spec.run_settings(), **params, **_step(spec),
            "train_chars": 0, "budget_chars": chars, "eval_at": [],
            "evals_per_trial": final["evals"], "val_chars": 0, "patience": final["patience"],
            "min_delta": final["min_delta"], "time_limit_s": limit_s, "decided_chars_per_s": decided_chars_per_s,
            "seed": seed}


def replayed_budget(plan: Plan) -> tuple[int, float] | None:
    """The final budget a replayed plan carries (characters, and the rate it was decided at), or None: the study it
    replays recorded one (study.run's --plan-from), and this study trains a final model (at most --final-chars)."""
    time_plan = plan.time_plan or {}
    chars, rate = time_plan.get("final_budget_chars"), time_plan.get("final_chars_per_s")
    if not (time_plan.get("replayed") and chars and rate and plan.final_chars > 0):
        return None
    return min(int(chars), plan.final_chars), float(rate)


def budget_record(metrics: dict, chars: int, given_by: str = "replayed") -> dict:
    """What study.json `final` records of the final model's budget, from its last result: the characters decided at
    its start, the rate they were decided at, where they came from ("fitted" to the time left; for a budget given
    to the run, `given_by`: "replayed" from another study's plan or "remembered" from an earlier study here; or
    "fixed" in characters with no time limit), the one cut and the one extension (None, or its numbers and `why`)
    and where the time ran out before the budget (None: it did not)."""
    raw = metrics.get("budget_decision_json")
    decision = json.loads(raw) if raw else None
    if decision is None:
        return {"budget_chars": chars, "decided_chars_per_s": None, "budget_from": "fixed", "refit": None,
                "extended": None, "stopped_at": None}
    return {"budget_chars": decision["budget_chars"], "decided_chars_per_s": decision["chars_per_s"] or None,
            "budget_from": given_by if decision["given"] else "fitted", "refit": decision["refit"],
            "extended": decision.get("extended"), "stopped_at": decision["stopped_at"] or None}



def _step(spec) -> dict:
    """The final model's characters a step, where `final.step_chars` sets them ({} keeps the configuration's)."""
    return {"step_chars": int(spec.final["step_chars"])} if spec.final["step_chars"] else {}


def final_texts(spec, corpus) -> dict:
    """The texts the final model sees: the whole training text, the first `final.val_chars` of the validation text
    (all of it where 0), and the test text, scored once at the end."""
    return {"train": corpus.train, "val": corpus.val[: spec.final["val_chars"] or len(corpus.val)],
            "test": corpus.test}


WHY = ("every hyperparameter of the chosen trial but train_chars, which the final model takes as the whole training "
       "text (it trains many times longer than any trial, where more text can only help), and a learning rate above "
       "the optimizer's usual one, which it caps there (a rate that wins a few hundred steps made the validation score "
       "of a 13-minute run worse for its first half)")


def run(plan: Plan, chosen: pd.Series, writer: ResultsWriter) -> None:
    """Train the chosen configuration (or the baseline that beat it in the race) to convergence on the whole
    training text, with its search trial's weights as the model to beat, and score the better of the two once on
    the test text.

    Of the chosen trial's hyperparameters, all carry over but `train_chars`: a search trial's training-text size
    trades text for passes at the search's budget, while the final model trains many times longer, where more
    text can only help (early stopping ends it once validation stops improving). The trial's weights, scored
    first on the final model's validation text and counted as its best so far, mean the model handed over is never
    worse there than the trial it came from.
    """
    cpus, gpus = final_resources()
    corpus = plan.corpus
    weights = trial_weights(plan, chosen)
    params = trial_params(plan, chosen)
    rate = final_rate(plan, params)
    step = _step(plan.spec)
    pool = candidates(plan.spec, {**params, **rate})
    limit_s = time_limit_s(plan)
    base = {**final_texts(plan.spec, corpus), "vocab": corpus.vocab.chars}
    record = {"train_chars": len(corpus.train),
              "started_from": str(chosen["trial_id"]) if weights is not None else None,
              "planned_minutes": limit_s / 60.0, "learning_rate": rate or None, "step_chars": step.get("step_chars"),
              "why": WHY + (f"; it takes {step['step_chars']:,} characters a step (final.step_chars) where the search "
                            f"took {step_size(plan, params):,}: a step's time grows less than its size, and the final "
                            "model takes thousands of them" if step else "")}
    resume_files, winner, race_wall_s, given_by, race_chars = None, pool[0], 0.0, "replayed", 0
    if len(pool) > 1:
        race = _race(plan, chosen, pool, writer, {**base, "init_weights": weights}, limit_s, cpus, gpus)
        RunDir(plan.run_dir).update_study({"final": {"race": race["record"]}})
        if race["winner"] is not None:
            winner, resume_files, race_wall_s = race["winner"], race["files"], race["wall_s"]
            won = next((c for c in race["record"]["candidates"] if c["candidate"] == winner.name), {})
            given_by, race_chars = won.get("budget_from") or "replayed", int(won.get("budget_chars") or 0)
        if winner.name != CHOSEN:
            record["started_from"] = None  # the chosen trial's weights are of another model
            record["learning_rate"] = None  # the cap is the chosen trial's; the baseline trains at its own rate
            record["why"] = (f"the hyperparameters of {describe(winner)}, which beat the chosen trial's "
                             "configuration in the final race" + record["why"][len(WHY):])
        limit_s = race_limit_s(limit_s, race_cost(plan.spec, len(pool))) if plan.time_plan is None else (
            race_wall_s + time_limit_s(plan) if limit_s else 0.0)
    data = {**base, "init_weights": weights if winner.name == CHOSEN else None, "resume_files": resume_files}
    trainable = tune.with_resources(tune.with_parameters(run_trial, data=data, cpus=cpus, gpus=gpus),
                                    {"cpu": cpus, "gpu": gpus})
    writer.stage("final", 1, expect=expect(plan, "final", max(limit_s - race_wall_s, 0.0)),
                 repeat_of=str(chosen["trial_id"]))
    key = None
    if len(pool) > 1:  # the winner goes on with its race's budget (its checkpoint's, else the one it was given)
        replayed = _replayed(plan, winner.name, True)
    else:
        key = budget_key(plan, final_config(plan.spec, winner.params, 0, limit_s, plan.seed), cpus, gpus)
        replayed = decided_once(plan, "given", lambda: given_budget(plan, winner.name, False, key, limit_s))
        given_by = replayed[2] if replayed else given_by
    chars, decided = replayed[:2] if replayed else (plan.final_chars, 0.0)
    param_space = {**final_config(plan.spec, winner.params, chars, limit_s, plan.seed, decided_chars_per_s=decided),
                   **({"candidate": winner.name} if len(pool) > 1 else {})}
    tuner = restored(plan, EXPERIMENT, trainable, writer, param_space)
    if tuner is None:
        budget = (f"for the {race_chars:,} characters its race's schedule spans" if resume_files and race_chars else
                  f"for {chars:,} characters, the budget " + ("of the plan it replays" if given_by == "replayed" else
                                                              "an earlier study decided here") if replayed else
                  f"up to {chars:,} characters" + (f" or {limit_s / 60:.1f} minutes" if limit_s else ""))
        who = f"trial {chosen['trial_id']}'s configuration" if winner.name == CHOSEN else describe(winner)
        writer.echo(f"final model: {who}"
                    + (", going on from its race" if resume_files else "")
                    + (", with its weights as the model to beat" if data["init_weights"] is not None else "")
                    + f", on the whole training text ({len(corpus.train):,} characters), {budget}"
                    + f", on {cpus:g} CPUs" + (" and a GPU" if gpus else "") + "; scored once on the test text")
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(metric="best_val_bpc", mode="min", num_samples=1,
                                        trial_dirname_creator=trial_dirname),
            run_config=run_config(plan, EXPERIMENT, writer),
        )
    RunDir(plan.run_dir).update_study({"final": {**record, "candidate": winner.name}})
    results = fit(tuner, 1, writer.stop)
    result = results[0]
    if result.metrics and "chars_seen" in result.metrics:  # the budget as decided, for the report and --plan-from
        RunDir(plan.run_dir).update_study({"final": budget_record(result.metrics, chars, given_by)})
        if key is not None:
            keep_budget(key, result.metrics, limit_s)
    # A resume of a study that had ended finds the checkpoint deleted (retention) and the model installed.
    if result.checkpoint is not None and not result.error and checkpoint_exists(result.checkpoint):
        with result.checkpoint.as_directory() as directory:
            RunDir(plan.run_dir).install_final_model(Path(directory) / MODEL_FILE)


def _replayed(plan: Plan, name: str, raced: bool) -> tuple[int, float] | None:
    """The budget a replayed plan gives this candidate: its race's, where the study it replays raced (the winner
    goes on from its race's checkpoint, which holds that decision), else its final model's."""
    if not raced:
        return replayed_budget(plan)
    race = ((plan.time_plan or {}).get("final_race") or {}) if (plan.time_plan or {}).get("replayed") else {}
    given = race.get(name)
    return (min(int(given[0]), plan.final_chars), float(given[1])) if given and given[0] and given[1] else None


def budget_key(plan: Plan, point: dict, cpus: float, gpus: float) -> str:
    """The key a final-stage run's budget is remembered under on this machine: the run's whole configuration but its
    time and budget, the corpus, the resources it trains on, and the pacer's rule it was decided under."""
    what = {k: v for k, v in point.items() if k not in ("time_limit_s", "budget_chars", "decided_chars_per_s")}
    return machine_key(kind="final budget", point=what, corpus=plan.corpus.sha256, cpus=cpus, gpus=gpus,
                       pacer=PACER_RULE)


def given_budget(plan: Plan, name: str, raced: bool, key: str, limit_s: float) -> tuple[int, float, str] | None:
    """The budget a run of the final stage is given (characters, the rate it was decided at, and by what), or None:
    it decides its own. A replayed plan's comes first; else, in a study with a time plan, the one an earlier study
    decided for the same key with about the same time (study.machine.recall_budget)."""
    replayed = _replayed(plan, name, raced)
    if replayed:
        return (*replayed, "replayed")
    if plan.time_plan is None or not limit_s:
        return None
    known = recall_budget(key, limit_s)
    return (min(known.chars, plan.final_chars), known.chars_per_s, "remembered") if known else None


def decided_once(plan: Plan, field: str, decide):
    """What `decide()` gives, recorded in study.json `final.<field>` when first decided, and read back from there
    by a resumed study (which would otherwise find this study's own budgets remembered)."""
    if plan.resume:
        final = (RunDir(plan.run_dir).read_study() or {}).get("final") or {}
        if field in final:
            return final[field]
    value = decide()
    RunDir(plan.run_dir).update_study({"final": {field: value}})
    return value


def keep_budget(key: str, metrics: dict, limit_s: float) -> None:
    """Remember the budget a run decided for itself (its last result's decision), for the next study here."""
    raw = (metrics or {}).get("budget_decision_json")
    decision = json.loads(raw) if raw else None
    if decision and not decision.get("given") and decision.get("chars_per_s") and limit_s:
        remember_budget(key, Budget(chars_to_give(decision), float(decision["chars_per_s"]), limit_s))


def _race(plan: Plan, chosen: pd.Series, pool: list[Candidate], writer: ResultsWriter, data: dict, limit_s: float,
          cpus: float, gpus: float) -> dict:
    """Race every candidate, one after another on the final model's resources and terms (its schedule spanning
    `race_limit_s` of the stage's `limit_s`), in rounds: all to the first of `race_rungs`, then the better half
    (`survivors`) on from their checkpoints to the next, and so on; returns the last round's winner (`race_winner`,
    None when none trained normally), its checkpoint's files to go on from (None where they cannot be read: the
    winner then trains afresh), its wall seconds so far, and what study.json `final.race` records."""
    spec = plan.spec
    rungs, evals = race_rungs(spec), int(spec.final["evals"])
    each = race_limit_s(limit_s, race_cost(spec, len(pool)))
    keys = {c.name: budget_key(plan, {**final_config(spec, c.params, 0, each, plan.seed), "candidate": c.name},
                               cpus, gpus) for c in pool}
    given = decided_once(plan, "race_given", lambda: {c.name: given_budget(plan, c.name, True, keys[c.name], each)
                                                     for c in pool})
    points = {}
    for c in pool:
        chars, decided, _ = given[c.name] or (plan.final_chars, 0.0, "")
        points[c.name] = {**final_config(spec, c.params, chars, each, plan.seed, decided_chars_per_s=decided),
                          "candidate": c.name}
    decisions: dict = {}  # each candidate's budget as its pacer decided it (for --plan-from)
    last: dict = {}  # each candidate's row at the last rung it raced to
    scores: dict = {c.name: [] for c in pool}  # [rung, best validation bits/char there] for each rung it raced to
    kept = survivors(len(pool), len(rungs))
    runs = [len(pool)] + kept[:-1]  # who trains each round, as planned: the progress line's count and time
    race_s = sum(each * (rung - previous) / evals * k for rung, previous, k in zip(rungs, [0] + rungs[:-1], runs))
    alive, files, previous, best, spent_s = list(pool), {}, 0, None, 0.0
    for i, (rung, keep) in enumerate(zip(rungs, kept)):
        name = RACE_EXPERIMENT if i == 0 else f"{RACE_EXPERIMENT}-{i + 1}"
        round_data = data if i == 0 else {**data, "init_weights": None,
                                          "resume_by": {c.name: files[c.name] for c in alive}}
        trainable = tune.with_resources(tune.with_parameters(run_trial, data=round_data, cpus=cpus, gpus=gpus),
                                        {"cpu": cpus, "gpu": gpus})
        # One count for all rounds (the whole race's runs); each round's progress line starts its own clock, so its
        # planned time is what is left of the race's.
        writer.stage(RACE, sum(runs), expect=((race_s - spent_s) or None,
                                              max(limit_s - race_s, 0.0) + expect(plan, "final")[1]),
                     repeat_of=str(chosen["trial_id"]))
        spent_s += each * (rung - previous) / evals * runs[i]
        tuner = restored(plan, name, trainable, writer, {})
        if tuner is None:
            writer.echo(_round_words(plan, chosen, pool, alive, i, rung, previous, each, given))
            config = run_config(plan, name, writer)
            config.stop = {"training_iteration": rung - previous}
            tuner = tune.Tuner(
                trainable, param_space={},
                tune_config=tune.TuneConfig(search_alg=PointsSearch([points[c.name] for c in alive]),
                                            num_samples=len(alive), metric="best_val_bpc", mode="min",
                                            max_concurrent_trials=1, trial_dirname_creator=trial_dirname),
                run_config=config,
            )
        ids = set()
        for result in fit(tuner, len(alive), writer.stop):
            metrics = result.metrics or {}
            ids.add(str(metrics.get("trial_id")))
            raw = metrics.get("budget_decision_json")
            if i == 0 and raw and result.config:
                who = result.config.get("candidate")
                decisions[who] = json.loads(raw)
                if who in keys:
                    keep_budget(keys[who], metrics, each)
        trials = writer.table.trials_frame()
        rows = trials[(trials["role"] == RACE) & trials["trial_id"].astype(str).isin(ids)].sort_values("trial_index")
        for _, r in rows.iterrows():
            last[str(r["candidate"])] = r
            scores[str(r["candidate"])].append([rung, _num(r.get("best_val_bpc"))])
        ranked = race_ranking(rows)
        writer.echo(f"final race at the {_ordinal(rung)} evaluation: " + race_scores(
            [{"candidate": str(r["candidate"]), "best_val_bpc": _num(r.get("best_val_bpc")), "status": r["status"]}
             for _, r in rows.iterrows()]))
        going_on = list(ranked["candidate"].astype(str).head(keep))
        alive, files = [c for c in pool if c.name in going_on], {}
        for c in list(alive):
            try:
                files[c.name] = {n: checkpoint_file(plan, last[c.name]["checkpoint"], n)
                                 for n in (MODEL_FILE, STATE_FILE)}
            except (OSError, TypeError) as exc:
                writer.echo(f"warning: cannot read {c.name}'s race checkpoint ({exc}); "
                            + ("it trains afresh" if keep == 1 else "it races no further"))
                if keep > 1:
                    alive.remove(c)
        previous = rung
        best = ranked.iloc[0] if keep == 1 and not ranked.empty else None
        if len(alive) < 2 and keep > 1:  # one left (or none) before the last rung: it wins there
            best = None if not alive else last[alive[0].name]
            break
    winner = None if best is None else next(c for c in pool if c.name == str(best["candidate"]))
    won_files = files.get(winner.name) if winner is not None else None
    record = {"evals": rungs, "cost": race_cost(spec, len(pool)), "limit_s": each,
              "winner": None if winner is None else winner.name,
              "candidates": [{"candidate": c.name, "trial_id": str(r["trial_id"]),
                              "status": str(r["status"]), "best_val_bpc": _num(r.get("best_val_bpc")),
                              "chars_seen": int(r.get("chars_seen") or 0), "wall_s": _num(r.get("wall_s")),
                              "budget_chars": int(r.get("budget_chars") or 0),
                              "decided_chars_per_s": (decisions.get(c.name) or {}).get("chars_per_s"),
                              "budget_from": _source(given.get(c.name), decisions.get(c.name)),
                              "scores": scores[c.name], "params": c.params}
                             for c in pool if (r := last.get(c.name)) is not None]}
    if winner is not None:
        writer.echo(f"final race: {describe(winner)} wins")
    wall = float(best["wall_s"]) if best is not None and won_files is not None else 0.0
    return {"winner": winner, "files": won_files, "wall_s": wall, "record": record}


def _round_words(plan: Plan, chosen: pd.Series, pool: list[Candidate], alive: list[Candidate], i: int, rung: int,
                 previous: int, each: float, given: dict) -> str:
    """The console's line at the start of race round `i` (0: the first)."""
    evals, last = int(plan.spec.final["evals"]), rung == race_rungs(plan.spec)[-1]
    then = ("the best on validation goes on" if last or len(alive) == 2 else
            "the better half goes on to the next rung")
    if i == 0:
        return (f"final race: trial {chosen['trial_id']}'s configuration against "
                + ", ".join(describe(c) for c in pool[1:])
                + f", each on the final model's terms for its first {rung} of {evals} evaluations"
                + (f" (a run of {each / 60:.1f} minutes)" if each else "") + f"; {then}"
                + "".join(f"; {c.name} trains the budget {given[c.name][2]} ({given[c.name][0]:,} characters)"
                          for c in pool if given[c.name]))
    return (f"final race, round {i + 1}: " + " and ".join(describe(c) for c in alive)
            + f" go on from their {_ordinal(previous)} evaluation to their {_ordinal(rung)}; {then}")


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _source(given: tuple | None, decision: dict | None) -> str | None:
    """Where a race run's budget came from, as study.json records it (`budget_record`'s words)."""
    if given:
        return given[2]
    return "fitted" if decision else None


def race_scores(rows: list[dict]) -> str:
    """The race's candidates and their validation scores, for the console ("diverged" where a score is missing)."""
    return ", ".join(f"{r['candidate']} " + (f"{r['best_val_bpc']:.4f}" if r.get("best_val_bpc") is not None
                                             else str(r.get("status"))) for r in rows)


def _num(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
