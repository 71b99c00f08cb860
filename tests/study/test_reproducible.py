"""A seed fixes the study: the same smoke study with a local design, run on this machine with 2 trials at once and
again on a real two-node Ray cluster (one CPU a node), gives the same trials, selection, local design, final model
and first sentence (real Ray Tune + Optuna, real Parquet)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest

from study.inputs import SPECS_DIR
from tests.conftest import REPO
from tests.study.test_cluster import Cluster, cluster  # noqa: F401 - the two-node cluster fixture

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

# The smoke spec with every trial to its budget (no promotion races) and a local design over two hyperparameters.
LOCAL_SPEC = """
[local]
seeds = 2
params = ["lr", "num_layers"]
"""


def _spec(tmp_path):
    text = (SPECS_DIR / "smoke.toml").read_text(encoding="utf-8").replace('name = "asha"', 'name = "fifo"')
    path = tmp_path / "smoke-local.toml"
    path.write_text(text + LOCAL_SPEC, encoding="utf-8")
    return path


def _study(spec, out, on: Cluster | None = None):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"} if on is None else dict(on.driver_env)
    env.pop("RAY_ADDRESS", None)
    where = ["--address", on.address, "--storage", str(out.parent / "storage")] if on else []
    proc = subprocess.run([sys.executable, "-m", "study.run", "--spec", str(spec), "--trials", "8", "--seed", "3",
                           "--max-concurrent", "2", "--out", str(out), *where],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _trials(out) -> pd.DataFrame:
    t = pd.read_parquet(out / "trials.parquet").sort_values("trial_index")
    cols = ["trial_index", "role", "status", "seed", "chars_seen", "moved"] + [c for c in t if c.startswith("param.")]
    return t[cols].assign(best=t["best_val_bpc"].round(4)).reset_index(drop=True)


def _headline(out) -> str:
    text = (out / "report" / "report.md").read_text(encoding="utf-8")
    paragraphs = [p for p in text.split("\n\n") if p.strip() and not p.startswith("#")]
    return re.sub(r"\b[0-9a-f]{8}(_\d{5})?\b", "<id>", paragraphs[0])


def test_the_same_seed_gives_the_same_study_here_and_on_two_nodes(tmp_path, cluster):  # noqa: F811
    spec = _spec(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    _study(spec, a)
    _study(spec, b, cluster)
    assert set(pd.read_parquet(b / "trials.parquet")["node_id"]) == set(cluster.node_ids.values())  # both nodes
    ta, tb = _trials(a), _trials(b)
    assert len(ta[ta["role"] == "local"]) == 2 * (1 + 2 + 1)  # the center, lr up and down, the other depth
    pd.testing.assert_frame_equal(ta, tb)
    sa, sb = (json.loads((d / "study.json").read_text()) for d in (a, b))
    ids = lambda d: dict(zip(pd.read_parquet(d / "trials.parquet")["trial_id"],  # noqa: E731
                             pd.read_parquet(d / "trials.parquet")["trial_index"]))
    ia, ib = ids(a), ids(b)
    assert [ia[c["trial_id"]] for c in sa["selection"]["candidates"]] == \
        [ib[c["trial_id"]] for c in sb["selection"]["candidates"]]
    assert {k: v for k, v in sa["local"]["chosen"].items() if k != "trial_id"} == \
        {k: v for k, v in sb["local"]["chosen"].items() if k != "trial_id"}
    assert ia[sa["local"]["chosen"]["trial_id"]] == ib[sb["local"]["chosen"]["trial_id"]]
    assert _headline(a) == _headline(b)
