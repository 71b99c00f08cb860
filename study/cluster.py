"""Start or join the Ray cluster a study runs on, and what the driver asks of it (nodes, GPUs, shared storage).

A local study (no --address) is reachable from this machine only: every Ray server, agent and exporter it
starts listens on 127.0.0.1, and its token file is readable by its owner only. Ray binds loopback only when the
node's address really is 127.0.0.1, and on Linux `ray.init(_node_ip_address="127.0.0.1")` is rewritten to the
routable address (by resolve_ip_for_localhost in Ray's services module). The supported switch is Ray's single-machine
mode, the one macOS and Windows run in: `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`. Ray reads it when it is first
imported, so `local_only()` runs before anything imports Ray (study.run calls it before importing the driver),
and `start_ray` checks the node's address once Ray is up.
"""
from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from study.inputs import UsageError

TRIALS_PER_GPU = 4
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = ("127.0.0.1", "::1")


class ClusterError(RuntimeError):
    """Ray did not come up as the study needs (a bug in the start-up order, not a user's mistake)."""


def local_only() -> None:
    """Make the Ray that this process starts next listen on loopback only, with a token readable by its owner.

    Call before Ray is imported, and only for a local study: a driver joining a cluster must register with the
    address the other nodes reach it at. Worker processes inherit the setting through the environment.
    """
    os.environ[LOCAL_ONLY_ENV] = "0"
    # A local ray.init() turns token authentication on when RAY_AUTH_MODE is unset; say it, so no other default
    # (a future release, a user's shell) can leave the local servers without it.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
        private_token_file(Path.home() / ".ray" / "auth_token")


def private_token_file(path: Path) -> Path:
    """Ray's default token file, created with mode 0600 when missing (Ray writes it 0644) and narrowed to 0600
    when it exists wider; returns `path`. A token Ray generates is 32 random bytes in hex; so is this one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & 0o077:
            os.chmod(path, 0o600)
        return path
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secrets.token_hex(32))
    return path


def start_ray(address: str | None, verbose: bool = False) -> None:
    """Join the cluster at `address`, or start a local Ray on loopback (see `local_only`)."""
    import optuna
    import ray

    # Tune's console tables and per-checkpoint chatter are replaced by the progress line (study.progress);
    # a trial's errors still reach the user through Tune's error files (see results.error_summary).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Start-up chatter (Ray's token-authentication notice and "Started a local Ray instance", Optuna's
    # "A new study created") only with --verbose; Ray's warnings after start-up still show.
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    quiet = logging.INFO if verbose else logging.ERROR
    if address:
        ray.init(address=address, logging_level=quiet, log_to_driver=verbose)
    else:
        local_only()  # for the processes Ray starts; this process needed it before `import ray`
        # "local" always starts a fresh instance, never a stale cluster named in /tmp/ray.
        ray.init(address="local", include_dashboard=False, logging_level=quiet, log_to_driver=verbose)
        node_ip = ray.util.get_node_ip_address()
        if node_ip not in LOOPBACK:
            ray.shutdown()
            raise ClusterError(f"the local Ray started on {node_ip}, not on loopback: Ray was imported before "
                               "study.cluster.local_only() ran")
    logging.getLogger("ray").setLevel(logging.INFO if verbose else logging.WARNING)
    # On Ctrl-C these two say "Resume experiment with: Tuner.restore(...)" and that Tune's own result files
    # are missing: the CLI prints the resume command of the study, and its results are in the tables.
    for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis"):
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)


def check_storage_reachable(storage: str) -> None:
    """A local --storage must be one directory that every node sees, or trials elsewhere cannot checkpoint."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if "://" in storage or len(nodes) < 2:
        return
    marker = Path(storage) / f".storage-check-{os.getpid()}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    exists = ray.remote(num_cpus=0)(_path_exists)
    try:
        seen = ray.get([exists.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
            for n in nodes])
    finally:
        marker.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen) if not ok]
    if blind:
        raise UsageError(f"--storage {storage} is not shared with the nodes at {', '.join(blind)}; on a "
                         "multi-node cluster give a shared file system path or a URI such as s3://bucket/prefix")


def _path_exists(path: str) -> bool:
    return os.path.exists(path)


def gpus_per_trial(requested: float | None) -> float:
    """GPUs each trial asks for: `requested`, or a quarter of one when the cluster has GPUs (else none)."""
    import ray

    have = ray.cluster_resources().get("GPU", 0)
    if requested is None:
        return 1.0 / TRIALS_PER_GPU if have > 0 else 0.0
    if requested > 0 and have == 0:
        raise UsageError(f"--gpus-per-trial {requested} but the Ray cluster has no GPUs")
    return requested


def concurrent_trials(cpus: float, gpus: float, cpus_per_trial: float, gpus_per_trial: float,
                      max_concurrent: int | None, trials: int) -> int:
    """How many trials run at once on `cpus` and `gpus` in all: as many as fit, at most `max_concurrent` (when
    given) and `trials`, at least one. Planned before Ray starts (study.run, this machine) and once it has started
    (study.driver, a cluster)."""
    slots = int(cpus // cpus_per_trial)
    if gpus_per_trial:
        slots = min(slots, int(gpus / gpus_per_trial))
    return max(1, min(slots, max_concurrent or slots, trials))


def final_resources() -> tuple[float, float]:
    """(CPUs, GPUs) for the final model: a whole node, the largest one, not one trial's share."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    cpus = max((r.get("CPU", 0) for r in nodes), default=1)
    gpus = 1.0 if any(r.get("GPU", 0) >= 1 for r in nodes) else 0.0
    return max(1.0, float(cpus)), gpus
