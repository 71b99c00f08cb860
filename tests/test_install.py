"""What a user does: a non-editable install into a new virtual environment, then the smoke study run from
another directory, with an empty HOME, no $CHARRNN_DATA and no checkout in sight.

It proves that the specs, the corpora and their SOURCES.md ship as package data. torch==2.13.0 goes in first,
as the README says, so that pip takes the CPU build it has rather than a CUDA one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

# What `git status --ignored` would show, plus the checkout's own metadata: none of it belongs in a build.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "runs", "data", "*.egg-info",
                                    "__pycache__", ".pytest_cache")


def _run(argv: list, env: dict, cwd, timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{argv[:4]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_installed_package_runs_the_smoke_study_from_anywhere(tmp_path):
    # Build from a copy, so that pip's in-tree build leaves nothing in the checkout.
    src, venv, home, work = tmp_path / "src", tmp_path / "venv", tmp_path / "home", tmp_path / "work"
    shutil.copytree(REPO, src, ignore=NOT_SOURCE)
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("CHARRNN_DATA", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0", PIP_NO_INPUT="1",
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    python = venv / "bin" / "python"

    # --no-compile: byte-compiling every installed module (torch's thousands) is most of pip's CPU time here;
    # Python compiles what the study imports when it imports it.
    pip = [python, "-m", "pip", "install", "-q", "--no-compile"]
    times = {}
    for step, argv, limit in (("venv", [sys.executable, "-m", "venv", venv], 120),
                              ("torch", [*pip, "torch==2.13.0"], 600),
                              ("project", [*pip, "-c", src / "constraints.txt", src], 900)):
        start = time.monotonic()
        _run(argv, env, work, limit)
        times[step] = time.monotonic() - start

    where = _run([python, "-c", "import study, charrnn; print(study.__file__); print(charrnn.__file__)"],
                 env, work, 60).stdout
    assert all(str(venv) in line for line in where.split()), where  # the installed copy, not the checkout

    out = work / "run"
    start = time.monotonic()
    proc = _run([python, "-m", "study.run", "--spec", "smoke", "--trials", "2", "--repeats", "0",
                 "--final-chars", "0", "--out", out, "--no-report"], env, work, 600)
    study_s = time.monotonic() - start
    times["smoke study"] = study_s
    print(", ".join(f"{k} {v:.0f} s" for k, v in times.items()))  # shown with -s

    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 2, proc.stdout[-2000:]
    assert trials["status"].isin(["completed", "stopped"]).all(), trials.filter(["trial_id", "status", "error"])
    assert trials["best_val_bpc"].notna().all()
    assert (out / "study.json").exists() and (out / "spec.toml").exists()
