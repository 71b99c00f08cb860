"""The selection policy on plain tables (no Ray)."""
from __future__ import annotations

import math

import pandas as pd

from study import selection

EVAL_AT = [100, 300, 900]


def _trials(rows: list[dict]) -> pd.DataFrame:
    base = {"role": "search", "status": "completed", "repeat_of": None}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_trials_that_got_further_rank_first_then_by_score():
    t = _trials([
        {"trial_id": "a", "best_val_bpc": 2.0, "chars_seen": 300, "status": "stopped"},
        {"trial_id": "b", "best_val_bpc": 2.5, "chars_seen": 900},
        {"trial_id": "c", "best_val_bpc": 2.2, "chars_seen": 900},
        {"trial_id": "d", "best_val_bpc": 1.0, "chars_seen": 900, "status": "running"},  # not finished
        {"trial_id": "e", "best_val_bpc": math.nan, "chars_seen": 900, "status": "diverged"},
    ])
    assert selection.ranked_search_trials(t, EVAL_AT)["trial_id"].tolist() == ["c", "b", "a"]
    assert selection.best_search_trial(t, EVAL_AT)["trial_id"] == "c"


def test_first_candidate_unstable_take_the_next():
    t = _trials([
        {"trial_id": "a", "best_val_bpc": 2.0, "chars_seen": 900},
        {"trial_id": "b", "best_val_bpc": 2.1, "chars_seen": 900},
        {"trial_id": "r1", "role": "repeat", "repeat_of": "a", "status": "diverged", "best_val_bpc": math.nan,
         "chars_seen": 50},
        {"trial_id": "r2", "role": "repeat", "repeat_of": "a", "status": "completed", "best_val_bpc": 2.0,
         "chars_seen": 300},
        {"trial_id": "r3", "role": "repeat", "repeat_of": "b", "status": "completed", "best_val_bpc": 2.1,
         "chars_seen": 300},
        {"trial_id": "r4", "role": "repeat", "repeat_of": "b", "status": "completed", "best_val_bpc": 2.1,
         "chars_seen": 300},
    ])
    ranked = selection.ranked_search_trials(t, EVAL_AT)["trial_id"].tolist()
    verdicts = {tid: selection.verdict(t, tid) for tid in ranked}
    assert verdicts == {"a": "diverged or failed in 1 of 2 seed repeats", "b": None}
    chosen = next(tid for tid in ranked if verdicts[tid] is None)
    assert chosen == "b"
    rec = selection.record([{"trial_id": "a", "skipped": verdicts["a"]}, {"trial_id": "b", "skipped": None}], "b")
    assert rec["chosen"] == "b" and rec["candidates"][0]["skipped"].startswith("diverged")


def test_the_final_model_caps_the_learning_rate_at_the_optimizers_usual_rate():
    """A rate that wins a few hundred steps is not the rate for a run many times longer (issue 18)."""
    from types import SimpleNamespace

    from study.stages.final import final_rate as _final_rate
    from study.inputs import resolve_spec

    plan = SimpleNamespace(spec=resolve_spec("sherlock"))
    assert _final_rate(plan, {"optimizer": "adam", "lr_scale": 2.82, "seq_len": 25}) == {"lr_scale": 1.0}
    assert _final_rate(plan, {"optimizer": "sgd", "lr_scale": 0.5, "seq_len": 25}) == {}
    smoke = SimpleNamespace(spec=resolve_spec("smoke"))
    assert _final_rate(smoke, {"optimizer": "adam", "lr": 0.0249, "seq_len": 16, "batch_size": 16}) == {"lr": 2e-3}
