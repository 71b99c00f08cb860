"""study.guard: the run directory's lock, and what --resume trusts before anything is unpickled."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from study.guard import check_trusted, lock
from study.inputs import UsageError
from tests.conftest import REPO

HOLD = "import sys, time; from pathlib import Path; from study.guard import lock; lock(Path(sys.argv[1])); " \
       "print('held', flush=True); time.sleep(60)"


def test_a_second_holder_is_refused_in_one_line_and_a_killed_holder_releases_the_lock(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError) as refused:
            lock(run_dir)
        assert str(refused.value) == (f"{run_dir} is in use by another study.run (pid {holder.pid}); one driver "
                                      "at a time writes a run directory")
    finally:
        holder.kill()
        holder.wait()
    fd = lock(run_dir)  # the OS released the killed holder's lock
    assert (run_dir / ".lock").read_text() == f"{os.getpid()}\n"
    assert (run_dir / ".lock").stat().st_mode & 0o777 == 0o600
    os.close(fd)


def _run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "tune" / "trial_1").mkdir(parents=True)
    (run / "study.json").write_text("{}")
    (run / "tune" / "tuner.pkl").write_bytes(b"pickle")
    (run / "tune" / "trial_1" / "params.json").write_text("{}")
    for p in [run, *run.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return run


def test_a_run_directory_of_ones_own_is_trusted(tmp_path):
    run = _run_dir(tmp_path)
    (run / "report").mkdir()
    (run / "report" / "report.md").symlink_to("/etc/passwd")  # report/ is never read by a resume
    check_trusted(run)


@pytest.mark.parametrize("change, why", [
    (lambda run: (run / "tune" / "tuner.pkl").chmod(0o666), "tune/tuner.pkl is writable by every user (mode 0666)"),
    (lambda run: (run / "tune").chmod(0o777), "tune is writable by every user (mode 0777)"),
    (lambda run: run.chmod(0o757), "run is writable by every user (mode 0757)"),
    (lambda run: ((run / "tune" / "tuner.pkl").unlink(), (run / "tune" / "tuner.pkl").symlink_to(run / "study.json")),
     "tune/tuner.pkl is a symbolic link"),
])
def test_a_file_another_user_could_change_stops_the_resume_before_anything_is_read(tmp_path, change, why):
    run = _run_dir(tmp_path)
    change(run)
    with pytest.raises(UsageError) as refused:
        check_trusted(run)
    message = str(refused.value)
    assert message.startswith(f"--resume {run}: ") and why in message.replace(f"{tmp_path}/", ""), message
    assert "\n" not in message


def test_a_shared_storage_s_experiments_are_checked_too(tmp_path):
    run = _run_dir(tmp_path)
    storage = tmp_path / "storage" / "tune"
    storage.mkdir(parents=True)
    (storage / "tuner.pkl").write_bytes(b"pickle")
    (storage / "tuner.pkl").chmod(0o646)
    with pytest.raises(UsageError, match="tuner.pkl is writable by every user"):
        check_trusted(run, [storage])


def test_resume_refuses_an_untrusted_run_directory_with_status_2(tmp_path, capsys):
    from study.run import main

    run = _run_dir(tmp_path)
    (run / "study.json").write_text('{"schema_version": 2, "invocation": {"storage": "%s"}}' % run)
    (run / "tune" / "tuner.pkl").chmod(0o666)
    assert main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --resume {run}: ") and "writable by every user" in err and err.count("\n") == 1
