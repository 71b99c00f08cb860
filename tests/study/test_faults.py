"""Faults inside a running study (issue 11, item 2): a trial's own worker killed, a full disk under the tables."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO
from tests.study.test_reliability import _cmd, _env, _fifo_smoke, _wait_for
from tests.study.test_soak import _finished, _trials

pytestmark = pytest.mark.slow


def _held(hold: Path) -> tuple[str, int] | None:
    """(trial id, pid) of the trial the CHARRNN_TEST_HOLD hook holds, once it holds."""
    held = list(hold.glob("hold-*"))
    return (held[0].name[len("hold-"):], int(held[0].read_text())) if held else None


@pytest.mark.parametrize("damage", [None, "truncated state.pt"])
def test_killed_trial_worker_is_retried_from_its_checkpoint(tmp_path, damage):
    """SIGKILL of the trial's worker (not the driver) while it writes its second checkpoint: Tune retries the trial
    from the first one; a damaged first checkpoint makes the retry train again from the start instead of
    crash-looping."""
    out, hold = tmp_path / "run", tmp_path / "hold"
    hold.mkdir()
    cmd = _cmd(out, "--trials", "2", "--max-concurrent", "1", "--spec", str(_fifo_smoke(tmp_path)), "--verbose")
    with open(tmp_path / "stderr", "w") as err:
        driver = subprocess.Popen(cmd, cwd=REPO, env=_env(CHARRNN_TEST_HOLD=f"{hold}:2"), stdout=subprocess.DEVNULL,
                                  stderr=err, start_new_session=True)
        try:
            _wait_for(lambda: _held(hold) is not None, 300, "a trial holding at its second report")
            tid, pid = _held(hold)
            if damage:
                (state,) = out.glob(f"tune/trial_{tid}/checkpoint_*/state.pt")
                state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
            os.kill(pid, signal.SIGKILL)
            driver.wait(300)
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
    stderr = (tmp_path / "stderr").read_text()
    assert driver.returncode == 0, stderr[-3000:]
    trials = pd.read_parquet(out / "trials.parquet").set_index("trial_id")
    assert len(trials) == 2 and "running" not in set(trials["status"])
    assert trials.loc[tid, "retries"] == 1, trials[["status", "retries", "retry_error"]]
    assert trials.loc[tid, "status"] in ("completed", "stopped")
    curve = pd.read_parquet(out / "curves.parquet").query("trial_id == @tid")
    assert curve["chars_seen"].is_unique and curve["chars_seen"].is_monotonic_increasing, curve
    assert ("training again from the start" in stderr) == bool(damage)


# ---- a full disk under the run directory ---------------------------------------------------------------------
def _can_mount(where: Path) -> str | None:
    """None when this machine lets an unprivileged user mount a tmpfs in a namespace of its own; else why not."""
    if shutil.which("unshare") is None:
        return "no unshare(1) here"
    where.mkdir()
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "mount", "-t", "tmpfs", "-o",
                            "size=1m", "tmpfs", str(where)], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a user namespace: {probe.stderr.strip()}"


def _fill(directory: Path) -> Path:
    """Write zeros into `directory` until its file system is full; returns the filler file."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def full_disk_scenario(tmp: str) -> None:
    """Run inside `unshare --user --map-root-user --mount` (the tmpfs exists only there): start a study whose run
    directory is a tiny tmpfs, fill it once a trial has finished, let the study stop, free the space, resume.
    What it saw goes to `<tmp>/seen.json` for the test to judge."""
    tmp = Path(tmp)
    mnt, storage = tmp / "mnt", tmp / "storage"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    out = mnt / "run"
    seen: dict = {}
    before: dict = {}
    filler = mnt / "filler"
    # Every trial to its full budget (no early stopping), ten times the smoke budget (about ten seconds a trial): the
    # second trial is still training, and the study still writing, when the disk fills.
    cmd = _cmd(out, "--trials", "2", "--max-concurrent", "1", "--storage", str(storage),
               "--spec", str(_long_fifo_smoke(tmp)))
    with open(tmp / "stderr", "w") as err:
        driver = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=err)
        try:
            _wait_for(lambda: len(_finished(_trials(out))) >= 1, 300, "a finished trial")
            before = _finished(_trials(out))
            filler = _fill(mnt)
            driver.wait(300)
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            seen["hung"] = str(exc)
            if driver.poll() is None:  # where it is stuck: every thread's stack (study.run registers SIGUSR2)
                driver.send_signal(signal.SIGUSR2)
                time.sleep(3)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    if "hung" in seen:
        seen["hung"] += "\n" + (tmp / "stderr").read_text()[-6000:]
    seen.update(rc=driver.returncode, stderr=(tmp / "stderr").read_text(), out=str(out),
                before={k: list(v) for k, v in before.items()})
    try:
        seen["after"] = {k: list(v) for k, v in _finished(_trials(out)).items()}
        for name in ("curves.parquet", "samples.parquet"):
            pd.read_parquet(out / name)
    except Exception as exc:  # noqa: BLE001 - the test reports what made the tables unreadable
        seen["unreadable"] = f"{type(exc).__name__}: {exc}"
    filler.unlink(missing_ok=True)
    resumed = subprocess.run([sys.executable, "-m", "study.run", "--resume", str(out), "--no-report"], cwd=REPO,
                             env=_env(), capture_output=True, text=True, timeout=600)
    trials = _trials(out)
    seen.update(resume_rc=resumed.returncode, resume_stderr=resumed.stderr[-3000:],
                resumed=[] if trials is None else list(zip(trials["trial_id"], trials["status"])))
    (tmp / "seen.json").write_text(json.dumps(seen, indent=1))


def _long_fifo_smoke(tmp: Path) -> Path:
    path = _fifo_smoke(tmp)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("budget_chars = 48_000", "budget_chars = 480_000"), encoding="utf-8")
    assert "budget_chars = 480_000" in path.read_text(encoding="utf-8")
    return path


def test_full_disk_while_writing_the_tables_stops_with_one_line_and_resumes(tmp_path):
    why_not = _can_mount(tmp_path / "mnt")
    if why_not:
        pytest.skip(why_not)
    (tmp_path / "storage").mkdir()
    start = time.monotonic()
    scenario = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c",
         f"from tests.study.test_faults import full_disk_scenario; full_disk_scenario({str(tmp_path)!r})"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=1200)
    assert scenario.returncode == 0, scenario.stderr[-3000:]
    seen = json.loads((tmp_path / "seen.json").read_text())
    lines = [ln for ln in seen["stderr"].splitlines() if ln.strip() and not ln.startswith("[")]
    resume_lines = [ln for ln in seen["resume_stderr"].splitlines() if ln.strip() and not ln.startswith("[")]
    print(f"\nfull disk scenario, {time.monotonic() - start:.0f}s: exit {seen['rc']}; stderr besides progress:",
          *lines[-15:], f"finished before the fill: {seen['before']}", f"after: {seen.get('after')}",
          f"unreadable: {seen.get('unreadable')}", f"resume: exit {seen['resume_rc']}", *resume_lines[-8:],
          f"rows after the resume: {seen['resumed']}", sep="\n  ")

    assert "hung" not in seen, seen["hung"]
    assert seen["rc"] == 1, lines[-30:]
    assert "Traceback" not in seen["stderr"], lines[-30:]
    # The tables' write or Optuna's SQLite (optuna.db lives in the run directory too), whichever the disk refuses first.
    full = [ln for ln in lines if "No space left on device" in ln or "database or disk is full" in ln]
    assert len(full) == 1 and full[0].startswith(f"error: cannot write {seen['out']}/"), lines[-30:]
    assert f"--resume {seen['out']}" in seen["stderr"], lines[-30:]
    assert "unreadable" not in seen, seen["unreadable"]
    for tid, row in seen["before"].items():  # every row finished before the disk filled is there, unchanged
        assert seen["after"].get(tid) == row, (tid, row, seen["after"].get(tid))
    assert seen["resume_rc"] == 0, seen["resume_stderr"]
    assert len(seen["resumed"]) == 2 and all(status != "running" for _, status in seen["resumed"]), seen["resumed"]
