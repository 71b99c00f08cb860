"""The speed reading a machine remembers between studies (study.machine): one grid step of drift keeps the plan."""
from __future__ import annotations

import json

from study.machine import cache_dir, settle
from study.timeplan import SPEED_GRID, on_speed_grid


def test_a_reading_within_a_grid_step_of_the_remembered_one_plans_at_it(tmp_path):
    path = tmp_path / "speed.json"
    first = settle(7_295.0, "m", SPEED_GRID, path)  # run A's reading, then run B's (BENCHMARKS.md)
    assert not first.remembered and on_speed_grid(first.chars_per_s) == 5_793
    again = settle(8_688.0, "m", SPEED_GRID, path)
    assert again.remembered and on_speed_grid(again.chars_per_s) == 5_793
    assert settle(4_200.0, "m", SPEED_GRID, path).remembered  # one step below 5,793 (4,096): the same plan
    # Two steps away: another machine's speed, or a much busier one; the new reading replaces the old.
    far = settle(12_000.0, "m", SPEED_GRID, path)
    assert not far.remembered and on_speed_grid(far.chars_per_s) == 11_585
    assert settle(9_000.0, "m", SPEED_GRID, path).remembered  # now around the new point
    # Another key (another machine, space or thread count) has its own reading.
    assert not settle(8_688.0, "other", SPEED_GRID, path).remembered
    assert set(json.loads(path.read_text())) == {"m", "other"}


def test_a_cache_that_cannot_be_read_or_written_is_measured_past(tmp_path):
    path = tmp_path / "speed.json"
    path.write_text("{not json")
    reading = settle(8_688.0, "m", SPEED_GRID, path)
    assert not reading.remembered and on_speed_grid(reading.chars_per_s) == 8_192
    assert json.loads(path.read_text())["m"]["exponent"] == reading.exponent  # rewritten whole
    blocked = tmp_path / "file"
    blocked.write_text("")
    reading = settle(8_688.0, "m", SPEED_GRID, blocked / "speed.json")  # its directory is a file
    assert reading.path is None and on_speed_grid(reading.chars_per_s) == 8_192


def test_the_cache_lives_where_the_user_says(monkeypatch, tmp_path):
    monkeypatch.setenv("CHARRNN_STUDY_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CHARRNN_STUDY_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "charrnn-study"


def test_a_budget_is_remembered_for_about_the_time_it_was_decided_for(tmp_path):
    from study.machine import BUDGET_TIME_MAX, BUDGET_TIME_MIN, Budget, recall_budget, remember_budget

    path = tmp_path / "budgets.json"
    assert recall_budget("k", 1000.0, path) is None  # nothing yet: the run decides its own
    budget = Budget(chars=15_585_600, chars_per_s=18_300.0, limit_s=1000.0)
    assert remember_budget("k", budget, path) == path
    assert recall_budget("k", 1000.0, path) == budget
    assert recall_budget("k", 1000.0 * BUDGET_TIME_MIN, path) == budget  # a little less time: the same budget
    assert recall_budget("k", 1000.0 * BUDGET_TIME_MAX, path) == budget
    assert recall_budget("k", 1000.0 * BUDGET_TIME_MIN - 1, path) is None  # too little time: decide afresh
    assert recall_budget("k", 1000.0 * BUDGET_TIME_MAX + 1, path) is None  # much more time: worth deciding for
    assert recall_budget("other", 1000.0, path) is None
    remember_budget("k", Budget(9_267_200, 11_000.0, 1000.0), path)  # a new decision replaces the old
    assert recall_budget("k", 1000.0, path).chars == 9_267_200
    path.write_text(json.dumps({"k": {"chars": "many"}}))  # a damaged entry is measured past
    assert recall_budget("k", 1000.0, path) is None
    path.write_text("[1, 2]")
    assert recall_budget("k", 1000.0, path) is None and remember_budget("k", budget, path) == path
    assert recall_budget("k", 1000.0, path) == budget


def test_a_corpus_s_baselines_are_remembered_under_its_text_and_the_compressors(tmp_path):
    from charrnn.corpus import from_text
    from study.driver import baselines_key
    from study.machine import recall_baselines, remember_baselines

    path = tmp_path / "baselines.json"
    corpus = from_text("It is a capital mistake to theorize before one has data. " * 200)
    key = baselines_key(corpus)
    assert key == baselines_key(from_text("It is a capital mistake to theorize before one has data. " * 200))
    assert key != baselines_key(from_text("It is a capital mistake to theorise before one has data. " * 200))
    assert recall_baselines(key, path) is None
    rows = [{"method": "ppmd", "split": "test", "bpc": 1.724, "detail": "PPMd order 8"}]
    remember_baselines(key, rows, path)
    assert recall_baselines(key, path) == rows and recall_baselines("other", path) is None
    path.write_text(json.dumps({key: [{"method": "ppmd"}]}))  # damaged: scored afresh
    assert recall_baselines(key, path) is None
