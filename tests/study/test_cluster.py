"""The smoke study on a real two-node Ray cluster started on this machine, as a user starts one on two machines.

`ray start --head` and `ray start --address` each give their node one CPU and a custom resource that names it; the
head turns Ray's token authentication on by default (a token exists), so the second node and the driver run with
RAY_AUTH_MODE=token. Each `ray start` runs in its own session, so every process it leaves behind (GCS, raylet,
agents, workers) shares one process group, and teardown stops exactly those groups by id: never `ray stop`, which
would stop other people's Ray on the same machine. The nodes keep all their files under a private temp dir
(--temp-dir and RAY_TMPDIR), so /tmp/ray/ray_current_cluster never points at this short-lived cluster.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from study.inputs import SPECS_DIR
from tests.conftest import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.cluster,
    pytest.mark.skipif(not sys.platform.startswith(("linux", "darwin")), reason="needs POSIX process groups"),
]

START_TIMEOUT_S = 90
STUDY_TIMEOUT_S = 240
SEARCH_TRIALS = 8
STOP_GRACE_S = 5
ROLES = ("head", "worker")

# Run as a driver: waits until both nodes have joined, then prints {node_id: role} from their custom resources.
WAIT_FOR_NODES = """
import json, sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
deadline, nodes = time.monotonic() + float(sys.argv[2]), {}
while len(nodes) < 2 and time.monotonic() < deadline:
    nodes = {n["NodeID"]: [k[len("cluster_test_"):] for k in n["Resources"] if k.startswith("cluster_test_")]
             for n in ray.nodes() if n["Alive"]}
    time.sleep(0.5)
print(json.dumps(nodes))
"""


@dataclass
class Cluster:
    address: str
    driver_env: dict[str, str]
    node_ids: dict[str, str]  # role -> Ray node id
    tmp: Path
    groups: list[int] = field(default_factory=list)  # process groups this test started, one per session
    logs: list[Path] = field(default_factory=list)


def _ray_cli() -> str:
    beside = Path(sys.executable).with_name("ray")  # the ray of this interpreter's environment, not another one
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        pytest.fail("the `ray` command is not installed beside this Python")
    return found


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no output)"


def _base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=str(tmp))
    has_token = (env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH")
                 or (Path.home() / ".ray" / "auth_token").exists())
    if not has_token:
        # A fresh machine has no token yet: give this cluster its own rather than writing into the user's home.
        token = tmp / "auth_token"
        token.write_text(secrets.token_hex(32))
        env["RAY_AUTH_TOKEN_PATH"] = str(token)
    return env


def _start_node(cluster: Cluster, name: str, args: list[str], env: dict[str, str]) -> None:
    log = cluster.tmp / f"{name}.log"
    cluster.logs.append(log)
    with open(log, "wb") as out:
        # A new session: the daemons `ray start` leaves behind keep its process group after it exits.
        proc = subprocess.Popen([_ray_cli(), "start", *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=cluster.tmp, start_new_session=True)
    cluster.groups.append(proc.pid)
    try:
        rc = proc.wait(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`ray start` ({name}) did not return within {START_TIMEOUT_S} s:\n{_tail(log)}")
    if rc != 0:
        pytest.fail(f"`ray start` ({name}) failed with status {rc}:\n{_tail(log)}")


def _live_members(pgid: int) -> list[int]:
    out = subprocess.run(["ps", "-A", "-o", "pid=,pgid=,stat="], capture_output=True, text=True).stdout
    rows = (line.split() for line in out.splitlines())
    return [int(r[0]) for r in rows if len(r) >= 3 and int(r[1]) == pgid and not r[2].startswith("Z")]


def _stop_groups(groups: list[int]) -> list[int]:
    """SIGTERM each process group, SIGKILL what is left after a grace period; returns pids that survived."""
    groups = [g for g in groups if g != os.getpgrp()]  # never our own group (start_new_session makes this moot)
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(_live_members(g) for g in groups):
            time.sleep(0.2)
        if not any(_live_members(g) for g in groups):
            return []
    return [pid for g in groups for pid in _live_members(g)]


@pytest.fixture(scope="module")
def cluster():
    # Short and private: Unix socket paths under it must stay below ~100 characters.
    tmp = Path(tempfile.mkdtemp(prefix="ray2n-", dir="/tmp" if os.path.isdir("/tmp") else None))
    base = _base_env(tmp)
    joiner_env = {**base, "RAY_AUTH_MODE": "token"}  # what the head's default turned on, said explicitly
    c = Cluster(address="", driver_env=joiner_env, node_ids={}, tmp=tmp)
    gcs_port, dashboard_port, head_agent_port, worker_agent_port = _free_ports(4)
    common = ["--num-cpus", "1", "--num-gpus", "0", "--temp-dir", str(tmp / "ray"),
              "--object-store-memory", str(128 * 1024**2), "--disable-usage-stats"]
    try:
        _start_node(c, "head", ["--head", "--port", str(gcs_port), "--include-dashboard", "false",
                                "--dashboard-port", str(dashboard_port),
                                "--dashboard-agent-listen-port", str(head_agent_port),
                                "--resources", json.dumps({"cluster_test_head": 1}), *common], env=base)
        head_log = _tail(c.logs[0], 100_000)
        assert "Token authentication is enabled" in head_log, f"the head did not turn token auth on:\n{head_log}"
        c.address = (tmp / "ray" / "ray_current_cluster").read_text().strip()
        _start_node(c, "worker", ["--address", c.address, "--dashboard-agent-listen-port", str(worker_agent_port),
                                  "--resources", json.dumps({"cluster_test_worker": 1}), *common], env=joiner_env)
        probe = subprocess.run([sys.executable, "-c", WAIT_FOR_NODES, c.address, str(START_TIMEOUT_S)],
                               env=joiner_env, cwd=tmp, capture_output=True, text=True,
                               timeout=START_TIMEOUT_S + 30)
        assert probe.returncode == 0, f"a driver could not connect to {c.address}:\n{probe.stderr[-3000:]}"
        nodes = json.loads(probe.stdout.strip().splitlines()[-1])
        c.node_ids = {roles[0]: node_id for node_id, roles in nodes.items() if roles}
        assert set(c.node_ids) == set(ROLES), f"expected a head and a worker node, the cluster has {nodes}"
        yield c
    finally:
        survivors = _stop_groups(c.groups)
        if not survivors:
            shutil.rmtree(tmp, ignore_errors=True)
        assert not survivors, f"processes of the test cluster still running after SIGKILL: {survivors}"


@pytest.fixture(scope="module")
def cluster_run(cluster: Cluster):
    """The smoke study with a local design on the two nodes (fifo, seed 3, 2 trials at once): the study the tests
    below read, and the one the reproducibility test compares with the same study run on this machine."""
    out = cluster.tmp / "run"
    _study(_spec(cluster.tmp), out, cluster)
    return out, out.parent / "storage"


def test_trials_run_on_both_nodes(cluster: Cluster, cluster_run):
    out, _ = cluster_run
    for name in ("study.json", "trials.parquet", "curves.parquet", "samples.parquet"):
        assert (out / name).is_file(), f"{name} missing from {out}"
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials[trials["role"] == "search"]) == SEARCH_TRIALS
    used = set(trials["node_id"])
    by_id = {v: k for k, v in cluster.node_ids.items()}
    assert used <= set(by_id), f"trials report node ids {used - set(by_id)} that are not in the cluster"
    assert {by_id[n] for n in used} == set(ROLES), (
        f"trials ran only on the {sorted(by_id[n] for n in used)} node:\n"
        f"{trials[['trial_id', 'status', 'node_id']].to_string()}")
    assert (trials["device"] == "cpu").all()
    meta = json.loads((out / "study.json").read_text())
    assert meta["invocation"]["address"] == cluster.address


def test_checkpoints_go_to_storage_in_a_directory_of_the_study_s_own(cluster_run):
    """Tune's files follow --storage, under a directory of this study's own (two studies sharing a --storage never
    share an experiment); once the study ends, no trial checkpoint is left there (retention)."""
    out, storage = cluster_run
    (own,) = storage.iterdir()
    assert own.name.startswith("smoke-"), own
    assert json.loads((out / "study.json").read_text())["invocation"]["storage"] == str(own.resolve())
    assert (own / "tune").is_dir() and not (out / "tune").exists(), "Tune's files must follow --storage"
    assert len(list((own / "tune").glob("trial_*/result.json"))) == SEARCH_TRIALS
    assert not list(own.glob("tune*/trial_*/checkpoint_*"))
    trials = pd.read_parquet(out / "trials.parquet")
    assert trials["checkpoint"].isna().all(), trials["checkpoint"].tolist()


# ---- issue 26: a seed fixes the study, here and on two nodes ---------------------------------------------------
# The same smoke study with a local design, run on this machine with 2 trials at once and again on the two-node
# cluster (one CPU a node), gives the same trials, selection, local design, final model and first sentence.

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
    proc = subprocess.run([sys.executable, "-m", "study.run", "--spec", str(spec), "--trials", str(SEARCH_TRIALS),
                           "--seed", "3",
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


def test_the_same_seed_gives_the_same_study_here_and_on_two_nodes(tmp_path, cluster: Cluster, cluster_run):
    a, (b, _) = tmp_path / "a", cluster_run
    _study(_spec(tmp_path), a)
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
