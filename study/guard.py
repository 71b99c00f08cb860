"""What `--resume` trusts in a run directory, and the lock that makes one driver its only writer.

Resuming unpickles what Tune saved (`tuner.pkl`, the trials in its experiment state): whoever can change those
files runs code as the user who resumes. So before anything is unpickled, every file and directory of the run
directory (its `report/` aside, which resuming never reads) and of the study's experiments in a local `--storage`
must be the user's own, no symbolic link, and writable by no other user: not by all, and by a group only when that
group is the user's own private group (a umask of 002). A bucket (`s3://...`) is trusted as its permissions are.

One driver at a time writes a run directory: `lock` takes an advisory lock (flock) on `RUN/.lock` for the life of
the process; the OS releases it when the process ends, killed or not. Ray's processes do not inherit it.
"""
from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import stat
from pathlib import Path

from study.inputs import UsageError

LOCK_FILE = ".lock"
SKIPPED = ("report",)  # written by reports.build, never read by a resume


def lock(run_dir: Path) -> int:
    """Hold the run directory's lock (creating the directory if needed); returns the descriptor that holds it.

    Raises UsageError (one line) when another process holds it.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise UsageError(f"{run_dir} is in use by another study.run (pid {holder}); one driver at a time "
                             "writes a run directory") from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return fd


def check_trusted(run_dir: Path, storage_dirs: list[Path] = ()) -> None:
    """Raise UsageError naming the first file under `run_dir` (or `storage_dirs`) that resuming must not trust."""
    for root in [run_dir, *storage_dirs]:
        for path in _walk(root, skip=SKIPPED if root == run_dir else ()):
            why = _untrusted(path)
            if why:
                raise UsageError(f"--resume {run_dir}: {path} {why}; resuming unpickles the study's saved state, "
                                 "so it trusts only files that are yours and that no other user can change")


def _walk(root: Path, skip: tuple[str, ...] = ()):
    yield root
    if not root.is_dir() or root.is_symlink():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        for name in dirnames + filenames:
            yield Path(dirpath) / name


def _untrusted(path: Path) -> str | None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if info.st_uid != os.getuid():
        return f"belongs to another user (uid {info.st_uid})"
    if info.st_mode & stat.S_IWOTH:
        return f"is writable by every user (mode {stat.S_IMODE(info.st_mode):04o})"
    if info.st_mode & stat.S_IWGRP and not _own_private_group(info.st_gid):
        return f"is writable by group {_group_name(info.st_gid)} (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def _own_private_group(gid: int) -> bool:
    """Whether `gid` is the user's own group, named after them with no other member (the umask 002 setup)."""
    try:
        group, user = grp.getgrgid(gid), pwd.getpwuid(os.getuid())
    except KeyError:
        return False
    return gid == user.pw_gid and group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
