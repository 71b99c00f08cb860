"""Failed trials, interrupted drivers and resumption, through real Ray Tune + Optuna."""
from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "study.run", "--spec", "smoke", "--out", str(out), "--no-report",
            "--repeats", "0", "--final-chars", "0", *extra]


def _env(**extra: str) -> dict:
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **extra}


def _optuna_states(out: Path) -> dict[str, str]:
    with sqlite3.connect(out / "optuna.db") as db:
        rows = db.execute(
            "select t.state, a.value_json from trials t left join trial_user_attributes a "
            "on a.trial_id = t.trial_id and a.key = 'tune_trial_id'").fetchall()
    return {(tid or "").strip('"'): state for state, tid in rows}


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _finished(out: Path) -> pd.DataFrame:
    try:  # into memory first: pyarrow opens a path twice and the writer may replace the file in between
        trials = pd.read_parquet(io.BytesIO((out / "trials.parquet").read_bytes()))
    except (OSError, ValueError):
        return pd.DataFrame(columns=["status"])
    return trials[trials["status"] != "running"]


def _crash_or_tail(err: str) -> str:
    """What a failed driver's stderr says: from a fatal error's report on (the crashing thread's stack), else its
    end."""
    at = err.find("Fatal Python error")
    return err[at:at + 4000] if at >= 0 else err[-2000:]


def _fifo_smoke(tmp_path: Path) -> Path:
    """The smoke spec without early stopping: a trial the scheduler stops at its first report could not crash."""
    from study.inputs import SPECS_DIR

    text = (SPECS_DIR / "smoke.toml").read_text(encoding="utf-8")
    path = tmp_path / "smoke-fifo.toml"
    path.write_text(text.replace('[scheduler]\nname = "asha"', '[scheduler]\nname = "fifo"'), encoding="utf-8")
    assert 'name = "fifo"' in path.read_text(encoding="utf-8")
    return path


def test_crashing_trial_is_retried_from_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(_cmd(out, "--trials", "2", "--max-concurrent", "1", "--spec", str(_fifo_smoke(tmp_path))),
                          cwd=REPO,
                          env=_env(CHARRNN_TEST_FAIL="once:1"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = pd.read_parquet(out / "trials.parquet")
    assert (trials["retries"] == 1).all(), trials[["trial_id", "status", "retries", "error"]]
    assert "retrying from its last checkpoint" in proc.stderr
    curves = pd.read_parquet(out / "curves.parquet")
    for tid, rows in curves.groupby("trial_id"):
        assert rows["chars_seen"].is_unique and rows["chars_seen"].is_monotonic_increasing
    # The retry resumed: it did not start again from zero (its first curve point is still the first eval).
    assert set(trials["status"]) <= {"completed", "stopped", "diverged"}


def test_trial_that_keeps_crashing_ends_failed_without_stopping_the_study(tmp_path):
    out = tmp_path / "run"
    # fifo: every trial trains to its budget (5 evaluations), so each attempt reaches its injected failure
    proc = subprocess.run(_cmd(out, "--trials", "2", "--max-failures", "1", "--spec", str(_fifo_smoke(tmp_path))),
                          cwd=REPO, env=_env(CHARRNN_TEST_FAIL="always:2"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 2
    failed = trials[trials["status"] == "failed"]
    assert len(failed) >= 1
    assert failed["error"].str.contains("InjectedFailure: injected failure").all()
    states = _optuna_states(out)
    for tid in failed["trial_id"]:
        assert states[tid] == "FAIL"


def test_sigint_then_sigterm_stop_cleanly_and_the_study_resumes(tmp_path):
    """Ctrl-C, resume, SIGTERM, resume: each stop exits with its status and the resume command, keeps what was
    finished, and the last resume completes the study. (A SIGKILL at every stage: tests/study/test_soak.py.)"""
    out = tmp_path / "run"
    # Every trial to its full budget, one at a time: the study must still be running when the signal comes (under
    # successive halving a 5-trial smoke study can end while the refused second --resume starts).
    first = _cmd(out, "--trials", "5", "--max-concurrent", "1", "--spec", str(_fifo_smoke(tmp_path)))
    resume = [sys.executable, "-m", "study.run", "--resume", str(out), "--no-report"]
    for argv, sig, code in ((first, signal.SIGINT, 130), (resume, signal.SIGTERM, 143)):
        finished = len(_finished(out)) + 1  # stop once this driver has finished a trial
        log = tmp_path / f"stderr-{sig.name}.txt"  # a file, not a pipe: read while the driver runs
        with log.open("w") as stderr:
            driver = subprocess.Popen(argv, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        try:
            _wait_for(lambda: len(_finished(out)) >= finished, 300, f"{finished} finished trial(s)")
            if argv is first:  # one driver at a time: a --resume of the directory this one holds is refused
                second = subprocess.run(resume, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
                assert second.returncode == 2, second.stderr[-2000:]
                assert second.stderr.startswith(f"error: {out} is in use by another study.run (pid {driver.pid})")
                assert second.stderr.count("\n") == 1, second.stderr
            if argv is first:  # a study that seems stuck: `kill -USR2 PID` prints where it is, and it goes on
                driver.send_signal(signal.SIGUSR2)
                _wait_for(lambda: "most recent call first" in log.read_text(errors="replace"), 60, "the stacks")
            driver.send_signal(sig)
            driver.wait(timeout=120)
        finally:
            if driver.poll() is None:
                driver.kill()
        err = log.read_text(errors="replace")
        assert driver.returncode == code, (driver.returncode, _crash_or_tail(err))
        assert ("most recent call first" in err) == (argv is first), err[-2000:]
        assert f"--resume {out}" in err
        assert len(_finished(out)) >= finished

    proc = subprocess.run(resume, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = pd.read_parquet(out / "trials.parquet")
    assert len(after) == 5 and "running" not in set(after["status"])
