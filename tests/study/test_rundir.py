"""The run directory and the trial table's logic, without Ray: events in, rows out, in milliseconds."""
from __future__ import annotations

import errno
import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from runcontract import CURVE_COLUMNS, SCHEMA_VERSION
from study.rundir import RunDir, RunDirWriteError, TrialTable, _atomic, atomic_write_parquet, classify
from tests.conftest import REPO

CONFIG = {"lr": 0.01, "cell": "gru", "seed": 7, "prime": "\n"}


def _result(chars: int, val: float, best: float, **extra) -> dict:
    return {"chars_seen": chars, "wall_s": chars / 1000, "eval_s": 0.1, "train_bpc": val + 0.1, "val_bpc": val,
            "best_val_bpc": best, "lr": 0.01, "sample": f"text at {chars}", "sample_temperature": 0.8,
            "finished": False, "diverged": False, **extra}


def _table(*rows) -> TrialTable:
    return TrialTable(["lr", "cell"], None, rows or ([], [], []))


def test_importing_the_run_directory_does_not_import_ray():
    code = "import sys, study.rundir; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_trial_from_start_to_completion():
    t = _table()
    t.start("a", CONFIG)
    assert t.trials["a"]["status"] == "running" and t.trials["a"]["param.cell"] == "gru"
    assert t.result("a", CONFIG, _result(100, 3.0, 3.0), checkpoint="/ckpt/1")
    assert not t.result("a", CONFIG, _result(200, 3.2, 3.0))  # worse than its best: no new best
    t.result("a", CONFIG, _result(300, 2.5, 2.5, finished=True, final_samples_json=json.dumps({"0.5": "end"})))
    t.complete("a", CONFIG, _result(300, 2.5, 2.5, finished=True), checkpoint="/ckpt/3")
    row = t.trials["a"]
    assert row["status"] == "completed" and row["best_val_bpc"] == 2.5 and row["best_chars_seen"] == 300
    assert row["chars_seen"] == 300 and row["seed"] == 7 and row["checkpoint"] == "/ckpt/3"
    trials, curves, samples = t.frames()
    assert "val_bpc" not in trials.columns and trials["best_val_bpc"].dtype == "float64"
    assert tuple(curves.columns) == CURVE_COLUMNS
    assert curves["val_bpc"].tolist() == [3.0, 3.2, 2.5]  # each evaluation's own value
    assert curves["best_val_bpc"].tolist() == [3.0, 3.0, 2.5]  # the best so far
    assert samples[samples["kind"] == "final"]["text"].tolist() == ["end"]


@pytest.mark.parametrize("last, status", [
    (_result(300, 2.5, 2.5, finished=True), "completed"),
    (_result(100, 2.9, 2.9), "stopped"),
    (_result(150, math.nan, math.nan, diverged=True), "diverged"),
    (None, "failed"),
    ({}, "failed"),
    ({"trial_id": "x", "config": {}}, "failed"),  # Tune's own fields only: the trainer never reported
])
def test_how_a_trial_that_ended_is_classified(last, status):
    assert classify(last)[0] == status
    assert (classify(last)[1] is None) == (status in ("completed", "stopped"))


def test_a_diverged_trial_keeps_its_curve_and_says_where_it_diverged():
    t = _table()
    t.result("d", CONFIG, _result(100, 3.9, 3.9))
    t.result("d", CONFIG, _result(150, math.nan, math.nan, diverged=True))
    t.complete("d", CONFIG, _result(150, math.nan, math.nan, diverged=True))
    row = t.trials["d"]
    assert row["status"] == "diverged" and "150 chars" in row["error"] and row["best_val_bpc"] == 3.9
    assert t.frames()[1]["chars_seen"].tolist() == [100]


def test_a_retried_trial_loses_what_lies_past_its_checkpoint():
    t = _table()
    for chars in (100, 200, 300):
        t.result("r", CONFIG, _result(chars, 3.0 - chars / 1000, 3.0 - chars / 1000))
    t.retry("r", CONFIG, "RuntimeError: worker died")
    t.result("r", CONFIG, _result(200, 2.85, 2.85))  # resumed from the checkpoint at 100: re-reports 200
    _, curves, samples = t.frames()
    assert curves["chars_seen"].tolist() == [100, 200] and curves["val_bpc"].tolist() == [2.9, 2.85]
    assert samples["chars_seen"].tolist() == [100, 200]
    assert t.trials["r"]["retries"] == 1 and t.trials["r"]["retry_error"] == "RuntimeError: worker died"


def test_a_failed_trial_keeps_its_error():
    t = _table()
    t.start("f", CONFIG)
    t.fail("f", CONFIG, "ValueError: boom")
    assert t.trials["f"]["status"] == "failed" and t.trials["f"]["error"] == "ValueError: boom"
    t.complete("f", CONFIG, None)  # Tune may still call complete: the first ending stays
    assert t.trials["f"]["error"] == "ValueError: boom"


def test_rows_read_back_from_disk_round_trip_and_finished_ones_never_change(tmp_path):
    run = RunDir(tmp_path)
    t = _table()
    t.result("done", CONFIG, _result(100, 3.0, 3.0))
    t.complete("done", CONFIG, _result(100, 3.0, 3.0, finished=True))
    t.start("live", CONFIG)
    t.result("live", CONFIG, _result(100, 3.3, 3.3))
    run.write_tables(t)

    again = TrialTable(["lr", "cell"], None, run.read_tables())
    pd.testing.assert_frame_equal(again.trials_frame(), t.trials_frame())
    # A resumed Tune reruns "done" from its checkpoint: nothing it reports changes the finished row.
    again.start("done", CONFIG)
    assert not again.result("done", CONFIG, _result(100, 2.0, 2.0))
    again.complete("done", CONFIG, _result(100, 2.0, 2.0))
    again.fail("done", CONFIG, "late")
    assert again.trials["done"] == t.trials["done"]
    # ... but the checkpoint it now keeps (Tune keeps one, so the one named before is gone) is the one named.
    again.complete("done", CONFIG, _result(100, 2.0, 2.0), checkpoint="/ckpt/rerun")
    assert again.trials["done"] == {**t.trials["done"], "checkpoint": "/ckpt/rerun"}
    assert again.frames()[1]["val_bpc"].tolist() == [3.0, 3.3]
    # The running one goes on.
    again.result("live", CONFIG, _result(200, 3.1, 3.1))
    assert again.trials["live"]["best_val_bpc"] == 3.1


def test_running_rows_the_trial_runner_does_not_know_are_dropped():
    """A driver killed after a trial started, before Tune saved it: that row would stay running forever."""
    t = _table()
    for tid in ("a", "ghost", "b"):
        t.start(tid, CONFIG)
    t.result("a", CONFIG, _result(100, 3.0, 3.0))
    t.result("ghost", CONFIG, _result(100, 3.1, 3.1))
    t.complete("a", CONFIG, _result(100, 3.0, 3.0, finished=True))
    t.stage("repeat", 1, repeat_of="a")
    t.start("rep", CONFIG)
    t.stage("search", 3)

    assert t.drop_unknown_running({"b"}) == ["ghost"]  # "a" is finished, "rep" is another stage's
    assert set(t.trials) == {"a", "b", "rep"}
    assert sorted(r["trial_index"] for r in t.trials.values()) == [0, 1, 2]
    _, curves, samples = t.frames()
    assert "ghost" not in set(curves["trial_id"]) | set(samples["trial_id"])


def test_rows_catch_up_with_what_tune_saved():
    """Tune saves its state after a step's callbacks: a driver stopped in between (killed, or by a full disk)
    leaves rows behind it. On resume each is brought up to Tune's trial: its last result, and how it ended."""
    t = _table()
    for tid in ("ended", "behind", "crashed", "current"):
        t.start(tid, CONFIG)
        t.result(tid, CONFIG, _result(100, 3.0, 3.0))
    assert t.catch_up("ended", CONFIG, _result(200, 2.8, 2.8, finished=True), ended="completed")
    assert t.catch_up("behind", CONFIG, _result(200, 2.9, 2.9))
    assert t.catch_up("crashed", CONFIG, _result(100, 3.0, 3.0), ended="failed", error="ValueError: x")
    assert not t.catch_up("current", CONFIG, _result(100, 3.0, 3.0))
    assert not t.catch_up("current", CONFIG, {"trial_id": "current", "config": {}})  # Tune's fields only
    rows = t.trials
    assert rows["ended"]["status"] == "completed" and rows["ended"]["best_val_bpc"] == 2.8
    assert rows["behind"]["status"] == "running" and rows["behind"]["chars_seen"] == 200
    assert rows["crashed"]["status"] == "failed" and rows["crashed"]["error"] == "ValueError: x"
    assert t.frames()[1].groupby("trial_id").size().to_dict() == {"behind": 2, "crashed": 1, "current": 1, "ended": 2}
    # A finished row is never changed, and another stage's rows are not this stage's to settle.
    assert not t.catch_up("ended", CONFIG, _result(300, 1.0, 1.0), ended="failed")
    t.stage("repeat", 1)
    assert not t.catch_up("current", CONFIG, _result(300, 1.0, 1.0), ended="completed")
    assert rows["current"]["status"] == "running"


def test_stages_stamp_their_role_and_count_their_own_trials():
    t = _table()
    t.stage("search", 4)
    t.result("s", CONFIG, _result(100, 3.0, 3.0))
    t.complete("s", CONFIG, _result(100, 3.0, 3.0))
    t.stage("repeat", 2, repeat_of="s")
    assert not t.result("r", {**CONFIG, "seed": 8}, _result(100, 1.0, 1.0))  # a repeat is never a new search best
    row = t.trials["r"]
    assert row["role"] == "repeat" and row["repeat_of"] == "s" and row["seed"] == 8
    tally = t.tally()
    assert (tally.stage, tally.total, tally.done, tally.running, tally.best) == ("repeat", 2, 0, 1, 3.0)


def test_the_directory_layout_and_schema(tmp_path):
    spec = tmp_path / "given.toml"
    spec.write_text('name = "x"\n')
    run = RunDir(tmp_path / "run")
    assert run.read_study() is None
    run.create(spec, {"name": "x"})
    assert run.read_study() == {"schema_version": SCHEMA_VERSION, "name": "x"} and SCHEMA_VERSION == 2
    assert (run / "spec.toml").read_text() == 'name = "x"\n'
    assert run.optuna_url == f"sqlite:///{(tmp_path / 'run').resolve() / 'optuna.db'}"
    assert run.read_tables() == ([], [], [])


def test_writes_are_atomic_and_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "t.parquet"
    atomic_write_parquet(path, pd.DataFrame({"a": [1, 2]}))
    atomic_write_parquet(path, pd.DataFrame({"a": [3]}))
    assert pd.read_parquet(path)["a"].tolist() == [3]

    def disk_full(tmp):
        with open(tmp, "wb") as f:
            f.write(b"PAR1 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RunDirWriteError, match=r"cannot write .*t\.parquet: No space left on device"):
        _atomic(path, disk_full)
    assert pd.read_parquet(path)["a"].tolist() == [3]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temporary file left behind


WRITE_UNDER_A_FILE_SIZE_LIMIT = """
import resource, signal, sys
from pathlib import Path
from study.rundir import RunDir, RunDirWriteError, TrialTable

run = RunDir(sys.argv[1])
table = TrialTable(["lr"], None, run.read_tables())
table.result("t", {"lr": 0.1}, {"chars_seen": 200, "wall_s": 1.0, "train_bpc": 3.0, "val_bpc": 2.9,
             "best_val_bpc": 2.9, "lr": 0.1, "sample": __import__("secrets").token_hex(150_000),
             "sample_temperature": 0.8})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
try:
    run.write_tables(table)
except RunDirWriteError as exc:
    print(exc)
"""


def test_a_write_that_fails_part_way_changes_none_of_the_tables(tmp_path):
    """The three tables are one set: samples.parquet cannot be written (a real write error from the OS, past a
    file-size limit), so curves and trials keep their old versions too, and no temporary file is left."""
    run = RunDir(tmp_path)
    t = _table()
    t.result("t", CONFIG, _result(100, 3.0, 3.0))
    run.write_tables(t)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    out = subprocess.run([sys.executable, "-c", WRITE_UNDER_A_FILE_SIZE_LIMIT, str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith(f"cannot write {tmp_path / 'samples.parquet'}: File too large"), out
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_trial_index_is_the_order_of_creation_whichever_trial_started_first():
    t = _table()
    t.start("s0", CONFIG)
    t.stage("local", 3)
    for tid in ("c", "a", "b"):  # Tune started them out of the order it created them in: a, b, c
        t.start(tid, CONFIG)
        t.order(["a", "b", "c"][: ["a", "b", "c"].index(tid) + 1] if tid != "c" else ["a", "b", "c"])
    t.order(["a", "b", "c"])
    assert {tid: r["trial_index"] for tid, r in t.trials.items()} == {"s0": 0, "a": 1, "b": 2, "c": 3}


def test_the_final_model_and_the_local_design_show_their_own_best():
    """The progress line during the final model's minutes shows the final model's best, not the search's."""
    t = _table()
    t.stage("search", 1)
    t.result("s", CONFIG, _result(100, 3.0, 3.0))
    t.complete("s", CONFIG, _result(100, 3.0, 3.0))
    for role, tid, score in (("local", "l", 2.7), ("final", "f", 1.9)):
        t.stage(role, 1)
        assert math.isinf(t.tally().best)
        t.result(tid, CONFIG, _result(200, score, score))
        assert t.tally().best == score and t.best_val_bpc() == 3.0
