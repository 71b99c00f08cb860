"""The local design around the spec's fixed center, and the search's choice on its repeats, in one real study (Ray
Tune, Optuna, the report): the smoke spec with every trial to its budget, a local design over two hyperparameters
and a [local.center]."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from runcontract import MAX_CANDIDATES
from study.inputs import SPECS_DIR
from tests.conftest import REPO

pytestmark = pytest.mark.slow

CENTER = {"train_chars": 60_000, "embedding_dim": 16, "hidden_size": 32, "num_layers": 1, "cell": "gru",
          "lr": 0.01, "optimizer": "adam", "seq_len": 32, "batch_size": 16}
LOCAL = """
[local]
seeds = 2
params = ["lr", "num_layers"]

[local.center]
""" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in CENTER.items()) + "\n"


@pytest.fixture(scope="module")
def fixed_center_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fixed-center")
    spec = tmp / "smoke-center.toml"
    text = (SPECS_DIR / "smoke.toml").read_text(encoding="utf-8").replace('name = "asha"', 'name = "fifo"')
    spec.write_text(text + LOCAL, encoding="utf-8")
    out = tmp / "run"
    proc = subprocess.run([sys.executable, "-m", "study.run", "--spec", str(spec), "--trials", "4", "--repeats", "1",
                           "--max-concurrent", "2", "--out", str(out)],
                          cwd=REPO, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout + proc.stderr


def test_the_local_design_runs_around_the_spec_s_center_not_the_search_s_best(fixed_center_run):
    out, stdout = fixed_center_run
    local = json.loads((out / "study.json").read_text())["local"]
    assert local["center_from"] == "spec" and local["center_trial"] is None
    assert local["center"] == CENTER and local["seeds"] == [1000, 1001]
    trials = pd.read_parquet(out / "trials.parquet")
    center = trials[(trials["role"] == "local") & (trials["moved"].fillna("") == "")]
    assert len(center) == 2 and (center["param.cell"] == "gru").all() and (center["param.lr"] == 0.01).all()
    assert len(trials[trials["role"] == "local"]) == 2 * (1 + 2 + 1)  # the center, lr up and down, the other depth
    assert "local design around the spec's center (local.center)" in stdout
    assert local["chosen"] is None or local["chosen"]["handed_over"] is False


def test_the_final_model_trains_the_search_s_choice_on_its_repeats(fixed_center_run):
    out, _ = fixed_center_run
    study = json.loads((out / "study.json").read_text())
    trials = pd.read_parquet(out / "trials.parquet")
    search = trials[trials["role"] == "search"]
    repeats = trials[trials["role"] == "repeat"]
    candidates = [c["trial_id"] for c in study["selection"]["candidates"]]
    assert len(candidates) == MAX_CANDIDATES and set(candidates) <= set(search["trial_id"])
    assert set(repeats["repeat_of"]) == set(candidates) and len(repeats) == MAX_CANDIDATES  # 1 seed each
    means = repeats[repeats["status"].isin(["completed", "stopped"])].groupby("repeat_of")["best_val_bpc"].mean()
    chosen = study["selection"]["chosen"]
    assert chosen == means.idxmin()  # the best repeats, not the best search score
    final = trials[trials["role"] == "final"]
    assert len(final) == 1
    if final["candidate"].iloc[0] == "chosen":
        assert final["repeat_of"].iloc[0] == chosen


def test_the_report_says_the_center_is_the_spec_s(fixed_center_run):
    out, _ = fixed_center_run
    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "The center is the spec's reference configuration (local.center)" in report
    assert "The study trained the final model on" not in report
