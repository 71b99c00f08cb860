"""Atomic file writes, the one helper every writer of this project uses (checkpoints, the run directory's tables).

A file is written to a temporary file beside its destination, flushed to disk (fsync), then renamed over it: a
reader, or a process killed at any moment, sees the old file or the new one, never a part of either.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def stage(path: str | Path, write: Callable[[str], Any], mode: int | None = None) -> str:
    """`write(tmp)` into a new temporary file beside `path`, flushed to disk; returns its name (the caller renames
    it with `commit`). On any failure the temporary file is removed and the error raised."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if mode is not None:
            os.chmod(tmp, mode)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        return tmp
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def commit(tmp: str, path: str | Path) -> None:
    """Rename a staged file over `path` (atomic on POSIX within one file system)."""
    os.replace(tmp, path)


def atomic_write(path: str | Path, write: Callable[[str], Any], mode: int | None = None) -> None:
    """Stage then commit: `path` holds either its old content or all of `write`'s."""
    tmp = stage(path, write, mode)
    try:
        commit(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
