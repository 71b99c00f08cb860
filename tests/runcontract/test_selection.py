"""The selection rule on plain tables (no Ray)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from runcontract import selection

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
    assert selection.ranked(t, selection.points_reached(t, EVAL_AT))["trial_id"].tolist() == ["c", "b", "a"]


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
    chosen, checked = selection.choose(t, selection.points_reached(t, EVAL_AT))
    assert chosen == "b" and checked == [("a", "unstable: diverged or failed in 1 of 2 seed repeats"), ("b", None)]
    rec = selection.record(checked, chosen)
    assert rec["chosen"] == "b" and rec["candidates"][0] == {"trial_id": "a", "skipped": checked[0][1]}


def test_no_candidate_when_each_of_the_best_is_unstable():
    rows = [{"trial_id": str(k), "best_val_bpc": 2.0 + k / 10, "chars_seen": 900} for k in range(4)]
    rows += [{"trial_id": f"r{k}", "role": "repeat", "repeat_of": str(k), "status": "failed",
              "best_val_bpc": math.nan, "chars_seen": 10} for k in range(4)]
    t = _trials(rows)
    chosen, checked = selection.choose(t, selection.points_reached(t, EVAL_AT))
    assert chosen is None and [tid for tid, _ in checked] == ["0", "1", "2"]  # MAX_CANDIDATES of them


def _repeated(scores: dict[str, tuple[float, list[float]]]) -> pd.DataFrame:
    rows = []
    for tid, (own, reps) in scores.items():
        rows.append({"trial_id": tid, "best_val_bpc": own, "chars_seen": 900})
        rows += [{"trial_id": f"{tid}-r{k}", "role": "repeat", "repeat_of": tid, "best_val_bpc": v, "chars_seen": 900}
                 for k, v in enumerate(reps)]
    return _trials(rows)


def test_the_choice_is_the_candidate_whose_repeats_score_best_not_the_luckiest_trial():
    # "a" was the luckiest draw (2.50) but its repeats score 3.00 on average; "c"'s score 2.70.
    t = _repeated({"a": (2.50, [3.1, 2.9]), "b": (2.55, [2.8, 2.9]), "c": (2.60, [2.7, 2.7]), "d": (2.65, [1.0])})
    chosen, checked = selection.choose(t, selection.points_reached(t, EVAL_AT))
    assert chosen == "c"  # "d" is not among the MAX_CANDIDATES best, whatever its repeats
    why = dict(checked)
    assert list(why) == ["a", "b", "c"] and why["c"] is None
    assert why["a"] == "its seed repeats scored 3.000 on average, against 2.700"
    assert selection.repeat_mean(t, "b") == pytest.approx(2.85)


def test_an_unstable_candidate_is_never_chosen_however_its_other_repeats_score():
    t = _repeated({"a": (2.5, [2.0]), "b": (2.6, [2.9])})
    t.loc[t["trial_id"] == "a-r0", ["status", "best_val_bpc"]] = ["diverged", math.nan]
    assert selection.choose(t, selection.points_reached(t, EVAL_AT))[0] == "b"


def test_an_older_run_that_repeated_only_its_first_candidate_keeps_it():
    t = _repeated({"a": (2.5, [2.9, 3.0]), "b": (2.6, []), "c": (2.7, [])})
    chosen, checked = selection.choose(t, selection.points_reached(t, EVAL_AT))
    assert chosen == "a" and checked == [("a", None)]
