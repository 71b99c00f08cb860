"""The final stage: the chosen configuration trained to convergence on the whole training text, with its search
trial's weights as the model to beat, for the time the study has left, and scored once on the test text.

Its budget is decided once, at its start, to fit that time (charrnn.pacer), and recorded in study.json `final`; a
study that replays this one's plan (--plan-from) trains that budget as given."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs
import torch
from ray import tune

from charrnn.checkpoint import MODEL_FILE
from charrnn.config import BASE_LR, TrainConfig
from study.cluster import final_resources
from study.plan import Plan
from study.results import ResultsWriter, checkpoint_exists
from study.rundir import RunDir
from study.stages.experiment import expect, fit, restored, run_config, trial_dirname, trial_params
from study.stages.experiment import storage as tune_storage
from study.timeplan import TimePlan, final_seconds
from study.trainable import run_trial

EXPERIMENT = "tune-final"


def trial_weights(plan: Plan, chosen: pd.Series) -> dict | None:
    """The best weights a search trial saved (its last checkpoint's model.pt), or None where they cannot be read."""
    where = chosen.get("checkpoint")
    if not isinstance(where, str) or not where:
        return None
    storage = tune_storage(plan)
    try:
        if "://" in storage:
            fs, _ = pyarrow.fs.FileSystem.from_uri(storage)
            with fs.open_input_file(f"{where.rstrip('/')}/{MODEL_FILE}") as f:
                data = f.read()
        else:
            data = (Path(where) / MODEL_FILE).read_bytes()
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)["state_dict"]
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        print(f"warning: cannot read trial {chosen['trial_id']}'s weights ({exc}); the final model starts afresh",
              flush=True)
        return None


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


def budget_record(metrics: dict, chars: int) -> dict:
    """What study.json `final` records of the final model's budget, from its last result: the characters decided at
    its start, the rate they were decided at, where they came from ("fitted" to the time left, "replayed" from
    another study's plan, or "fixed" in characters with no time limit), the one cut (None, or its numbers and
    `why`) and where the time ran out before the budget (None: it did not)."""
    raw = metrics.get("budget_decision_json")
    decision = json.loads(raw) if raw else None
    if decision is None:
        return {"budget_chars": chars, "decided_chars_per_s": None, "budget_from": "fixed", "refit": None,
                "stopped_at": None}
    return {"budget_chars": decision["budget_chars"], "decided_chars_per_s": decision["chars_per_s"] or None,
            "budget_from": "replayed" if decision["given"] else "fitted", "refit": decision["refit"],
            "stopped_at": decision["stopped_at"] or None}


def _step(spec) -> dict:
    """The final model's characters a step, where `final.step_chars` sets them ({} keeps the configuration's)."""
    return {"step_chars": int(spec.final["step_chars"])} if spec.final["step_chars"] else {}


def final_texts(spec, corpus) -> dict:
    """The texts the final model sees: the whole training text, the first `final.val_chars` of the validation text
    (all of it where 0), and the test text, scored once at the end."""
    return {"train": corpus.train, "val": corpus.val[: spec.final["val_chars"] or len(corpus.val)],
            "test": corpus.test}


def run(plan: Plan, chosen: pd.Series, writer: ResultsWriter) -> None:
    """Train the chosen configuration to convergence on the whole training text, with its search trial's weights as
    the model to beat, and score the better of the two once on the test text.

    Of the chosen trial's hyperparameters, all carry over but `train_chars`: a search trial's training-text size
    trades text for passes at the search's budget, while the final model trains many times longer, where more
    text can only help (early stopping ends it once validation stops improving). The trial's weights, scored
    first on the final model's validation text and counted as its best so far, mean the model handed over is never
    worse there than the trial it came from.
    """
    cpus, gpus = final_resources()
    corpus = plan.corpus
    weights = trial_weights(plan, chosen)
    data = {**final_texts(plan.spec, corpus), "vocab": corpus.vocab.chars, "init_weights": weights}
    trainable = tune.with_resources(tune.with_parameters(run_trial, data=data, cpus=cpus, gpus=gpus),
                                    {"cpu": cpus, "gpu": gpus})
    limit_s = time_limit_s(plan)
    writer.stage("final", 1, expect=expect(plan, "final", limit_s), repeat_of=str(chosen["trial_id"]))
    params = trial_params(plan, chosen)
    rate = final_rate(plan, params)
    step = _step(plan.spec)
    replayed = replayed_budget(plan)
    chars, decided = replayed or (plan.final_chars, 0.0)
    param_space = final_config(plan.spec, {**params, **rate}, chars, limit_s, plan.seed, decided_chars_per_s=decided)
    tuner = restored(plan, EXPERIMENT, trainable, writer, param_space)
    if tuner is None:
        budget = (f"for {chars:,} characters, the budget of the plan it replays" if replayed else
                  f"up to {chars:,} characters" + (f" or {limit_s / 60:.1f} minutes" if limit_s else ""))
        writer.echo(f"final model: trial {chosen['trial_id']}'s configuration"
                    + (", with its weights as the model to beat" if weights is not None else "")
                    + f", on the whole training text ({len(corpus.train):,} characters), {budget}"
                    + f", on {cpus:g} CPUs" + (" and a GPU" if gpus else "") + "; scored once on the test text")
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(metric="best_val_bpc", mode="min", num_samples=1,
                                        trial_dirname_creator=trial_dirname),
            run_config=run_config(plan, EXPERIMENT, writer),
        )
    RunDir(plan.run_dir).update_study({"final": {
        "train_chars": len(corpus.train), "started_from": str(chosen["trial_id"]) if weights is not None else None,
        "planned_minutes": limit_s / 60.0,
        "learning_rate": rate or None, "step_chars": step.get("step_chars"),
        "why": "every hyperparameter of the chosen trial but train_chars, which the final model takes as the whole "
               "training text (it trains many times longer than any trial, where more text can only help), and a "
               "learning rate above the optimizer's usual one, which it caps there (a rate that wins a few hundred "
               "steps made the validation score of a 13-minute run worse for its first half)"
               + (f"; it takes {step['step_chars']:,} characters a step (final.step_chars) where the search took "
                  f"{step_size(plan, params):,}: a step's time grows less than its size, and the final model takes "
                  "thousands of them" if step else "")}})
    results = fit(tuner, 1, writer.stop)
    result = results[0]
    if result.metrics and "chars_seen" in result.metrics:  # the budget as decided, for the report and --plan-from
        RunDir(plan.run_dir).update_study({"final": budget_record(result.metrics, chars)})
    # A resume of a study that had ended finds the checkpoint deleted (retention) and the model installed.
    if result.checkpoint is not None and not result.error and checkpoint_exists(result.checkpoint):
        with result.checkpoint.as_directory() as directory:
            RunDir(plan.run_dir).install_final_model(Path(directory) / MODEL_FILE)


