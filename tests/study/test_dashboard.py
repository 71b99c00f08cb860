"""optuna-dashboard, started the way the README says, serves the smoke study's trials with their states."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("optuna_dashboard") is None,
                       reason="optuna-dashboard is not installed (pip install -e '.[dashboard]')"),
]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dashboard") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "study.run", "--spec", "smoke", "--trials", "4", "--repeats", "0", "--out", str(out),
         "--no-report"],
        cwd=REPO, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.fixture
def dashboard(smoke_run):
    port = _free_port()
    exe = Path(sys.executable).with_name("optuna-dashboard")
    proc = subprocess.Popen([str(exe), f"sqlite:///{smoke_run / 'optuna.db'}", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/api/meta")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"optuna-dashboard did not start: {proc.stdout.read()[-2000:]}")
                time.sleep(0.3)
        yield base
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(15)
    assert proc.returncode is not None


def test_dashboard_serves_the_study_and_its_trial_states(smoke_run, dashboard):
    studies = _get(f"{dashboard}/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["smoke"]
    detail = _get(f"{dashboard}/api/studies/{studies[0]['study_id']}")
    table = pd.read_parquet(smoke_run / "trials.parquet").set_index("trial_id")
    table = table[table["role"] == "search"]  # the Optuna study holds the search; the final model is apart
    curves = pd.read_parquet(smoke_run / "curves.parquet")
    assert len(detail["trials"]) == len(table) == 4
    state = {"completed": "Complete", "stopped": "Pruned", "diverged": "Fail", "failed": "Fail"}
    for trial in detail["trials"]:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        row = table.loc[attrs["tune_trial_id"]]
        assert trial["state"] == state[row["status"]]
        steps = [v["step"] for v in trial["intermediate_values"]]
        assert steps == sorted(curves.loc[curves["trial_id"] == row.name, "chars_seen"])
    assert detail["has_intermediate_values"] is True
