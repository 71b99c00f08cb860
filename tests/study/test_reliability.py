"""Failed trials, interrupted drivers and resumption, through real Ray Tune + Optuna."""
from __future__ import annotations

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
    try:
        trials = pd.read_parquet(out / "trials.parquet")
    except (OSError, ValueError):
        return pd.DataFrame(columns=["status"])
    return trials[trials["status"] != "running"]


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
    proc = subprocess.run(_cmd(out, "--trials", "3", "--max-failures", "1"), cwd=REPO,
                          env=_env(CHARRNN_TEST_FAIL="always:2"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 3
    failed = trials[trials["status"] == "failed"]
    assert len(failed) >= 1
    assert failed["error"].str.contains("InjectedFailure: injected failure").all()
    states = _optuna_states(out)
    for tid in failed["trial_id"]:
        assert states[tid] == "FAIL"


def test_sigkilled_driver_resumes_without_losing_or_redoing_finished_trials(tmp_path):
    out = tmp_path / "run"
    driver = subprocess.Popen(_cmd(out, "--trials", "6"), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: len(_finished(out)) >= 2, 300, "two finished trials")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    before = _finished(out).set_index("trial_id")
    assert len(before) >= 2

    proc = subprocess.run([sys.executable, "-m", "study.run", "--resume", str(out), "--no-report"], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = pd.read_parquet(out / "trials.parquet").set_index("trial_id")
    assert len(after) == 6 and after.index.is_unique
    assert "running" not in set(after["status"])
    for tid, row in before.iterrows():  # finished trials are neither redone nor changed
        assert after.loc[tid, "status"] == row["status"]
        assert after.loc[tid, "chars_seen"] == row["chars_seen"]
        assert after.loc[tid, "best_val_bpc"] == pytest.approx(row["best_val_bpc"], nan_ok=True)
    states = _optuna_states(out)
    assert set(after.index) <= set(states) and "RUNNING" not in states.values()
    # An Optuna trial asked just before the kill, that Tune never saved, is told FAIL ("orphaned").
    assert all(states[k] == "FAIL" for k in set(states) - set(after.index))


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly_and_the_study_resumes(tmp_path, sig, code):
    out = tmp_path / "run"
    driver = subprocess.Popen(_cmd(out, "--trials", "5"), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: len(_finished(out)) >= 1, 300, "a finished trial")
        driver.send_signal(sig)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == code, err[-2000:]
    assert f"--resume {out}" in err
    stopped = pd.read_parquet(out / "trials.parquet")
    assert len(stopped[stopped["status"] != "running"]) >= 1

    proc = subprocess.run([sys.executable, "-m", "study.run", "--resume", str(out), "--no-report"], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = pd.read_parquet(out / "trials.parquet")
    assert len(after) == 5 and "running" not in set(after["status"])
