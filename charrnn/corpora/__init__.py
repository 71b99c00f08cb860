"""The corpora that ship with the package, and how a corpus name becomes a file.

A name such as `sherlock` is looked up as NAME.txt in `$CHARRNN_DATA` (when set), then in `./data`, then
among the bundled corpora in this directory: a user's own copy wins, and a fresh install works offline.
A bundled file is checked against the sha256 that SOURCES.md records for it every time it is loaded
(`charrnn.corpus.load_corpus` calls `check_bundled`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from charrnn.corpus import CorpusError

BUNDLED_DIR = Path(__file__).resolve().parent
SOURCES = BUNDLED_DIR / "SOURCES.md"

__all__ = ["BUNDLED_DIR", "SOURCES", "bundled_names", "check_bundled", "find", "pinned_sha256", "search_dirs"]


def pinned_sha256() -> dict[str, str]:
    """NAME -> the sha256 SOURCES.md records for the bundled NAME.txt (one `- sha256:` line per section)."""
    pins = {}
    for section in re.split(r"^## ", SOURCES.read_text(encoding="utf-8"), flags=re.M)[1:]:
        title = section.split("\n", 1)[0].strip()
        match = re.search(r"^- sha256: `([0-9a-f]{64})`", section, flags=re.M)
        if title.endswith(".txt") and match:
            pins[title.removesuffix(".txt")] = match.group(1)
    return pins


def bundled_names() -> list[str]:
    """The names of the corpora that ship with the package."""
    return sorted(pinned_sha256())


def search_dirs() -> list[Path]:
    """The folders searched for NAME.txt before the bundled copy, in order."""
    dirs = [Path(os.environ["CHARRNN_DATA"]).expanduser()] if os.environ.get("CHARRNN_DATA") else []
    return dirs + [Path.cwd() / "data"]


def find(name: str) -> Path:
    """A corpus name -> its file: `$CHARRNN_DATA/NAME.txt`, `./data/NAME.txt`, then the bundled copy.

    Raises CorpusError (one line, naming every place looked in) when none exists.
    """
    for folder in search_dirs():
        candidate = folder / f"{name}.txt"
        if candidate.is_file():
            return candidate
    if name in pinned_sha256():
        return BUNDLED_DIR / f"{name}.txt"
    where = ", ".join(str(d) for d in search_dirs())
    raise CorpusError(f"corpus {name!r} not found as {name}.txt in {where}, and no bundled corpus has that name "
                      f"(bundled: {', '.join(bundled_names())}); set $CHARRNN_DATA or pass a path")


def check_bundled(path: str | Path, sha256: str) -> None:
    """Raise CorpusError when `path` is a bundled corpus whose bytes hash to other than its pinned sha256."""
    path = Path(path).resolve()
    pinned = pinned_sha256().get(path.stem) if path.parent == BUNDLED_DIR and path.suffix == ".txt" else None
    if pinned is not None and sha256 != pinned:
        raise CorpusError(f"bundled corpus {path} is damaged: sha256 {sha256[:12]}... but {SOURCES.name} pins "
                          f"{pinned[:12]}...; reinstall charrnn-study, or put a good copy in $CHARRNN_DATA")
