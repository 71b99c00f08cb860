"""Writing the report's files: only its own, and only inside the output directory.

Run directories are zipped and sent around, so `RUN/report/` may come from anyone: a `report.md` that is a
symbolic link to the reader's `~/.bashrc` must not be written through. Every file is created new (`O_EXCL |
O_NOFOLLOW`) in a staging directory beside the output, which is then renamed into place; where the output
directory already exists (an earlier report, or a `--out` the user named), each file is renamed into it, and a
rename replaces a symbolic link itself, never what it points to. An output directory that is itself a symbolic
link, or not a directory, is refused.

importance.csv is opened in spreadsheets, which evaluate a cell that starts with `=`, `+`, `-` or `@` (and a tab or
carriage return before one) as a formula: such text cells get a leading apostrophe (`neutralize_csv`).
"""
from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class ReportWriteError(OSError):
    """The output directory cannot take the report without writing outside it (a symbolic link, a file)."""

    def __str__(self) -> str:
        return str(self.strerror)


def _modes() -> tuple[int, int]:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask, 0o777 & ~umask


def write_files(out_dir: str | Path, files: dict[str, bytes]) -> Path:
    """Write `files` (plain names -> contents) into `out_dir` (created if needed), touching nothing else.

    Returns `out_dir`. Raises ReportWriteError when `out_dir` is a symbolic link or not a directory, or when one
    of the names there is a directory; OSError when the disk refuses.
    """
    out_dir = Path(out_dir)
    for name in files:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a plain file name: {name!r}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    file_mode, dir_mode = _modes()
    parent = os.open(out_dir.parent, os.O_RDONLY | os.O_DIRECTORY)
    stage_name = f".{out_dir.name}.{secrets.token_hex(6)}.tmp"
    os.mkdir(stage_name, 0o700, dir_fd=parent)
    stage = os.open(stage_name, _DIR_FLAGS, dir_fd=parent)
    placed = False  # the staged directory became out_dir: nothing of it to clean up
    try:
        for name, data in files.items():
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, file_mode, dir_fd=stage)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        os.fchmod(stage, dir_mode)
        try:  # a new (or empty) output directory: the staged one takes its place whole
            os.rename(stage_name, out_dir.name, src_dir_fd=parent, dst_dir_fd=parent)
            placed = True
            return out_dir
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                raise ReportWriteError(errno.ENOTDIR, f"{out_dir} is a symbolic link or not a directory; the "
                                                      "report is written only into a directory of its own") from None
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        _rename_into(out_dir, parent, stage, files)
        return out_dir
    finally:
        if not placed:
            for name in files:
                try:
                    os.unlink(name, dir_fd=stage)
                except FileNotFoundError:
                    pass
            os.rmdir(stage_name, dir_fd=parent)
        os.close(stage)
        os.close(parent)


def _rename_into(out_dir: Path, parent: int, stage: int, files: dict[str, bytes]) -> None:
    """Rename each staged file over its name in the existing `out_dir`, which is opened without following a
    symbolic link (a link swapped in after the first rename failed is refused too)."""
    try:
        out = os.open(out_dir.name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ReportWriteError(exc.errno, f"{out_dir} is a symbolic link or not a directory; the report is "
                                              "written only into a directory of its own") from None
        raise
    try:
        for name in files:
            try:
                os.rename(name, name, src_dir_fd=stage, dst_dir_fd=out)
            except IsADirectoryError:
                raise ReportWriteError(errno.EISDIR, f"{out_dir / name} is a directory; the report does not "
                                                     "replace what is not its own file") from None
    finally:
        os.close(out)


def neutralize_csv(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every text cell that a spreadsheet would evaluate as a formula prefixed with an apostrophe.
    Numbers stay numbers (a negative number is not a formula)."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v)
    out.columns = [("'" + c if isinstance(c, str) and c.startswith(FORMULA_STARTS) else c) for c in out.columns]
    return out
