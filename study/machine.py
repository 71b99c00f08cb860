"""This machine's speed reading, remembered between studies, so that the same machine plans the same study while its
speed drifts.

A machine's training speed drifts: the same configurations trained 1.2-1.9x faster on one 2-core VM half an hour
later, its reading went from 7,295 to 8,688 chars/s, and the two studies got different plans (BENCHMARKS.md, "The
README's first command twice"). No rounding of a reading keeps two readings on either side of a grid point together,
so the first study on a machine records its reading's point on the plan's speed grid (a power of
`timeplan.SPEED_GRID`, as its exponent), under a key naming the machine and what the reading depends on; a later
study whose reading lies within one grid step of that point plans at the recorded point. A reading further away
(another machine under the same key, a much busier or quieter one) replaces it.

The file: $CHARRNN_STUDY_CACHE/speed.json, else $XDG_CACHE_HOME/charrnn-study/speed.json, else
~/.cache/charrnn-study/speed.json. It holds only readings; deleting it makes the next study measure afresh.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from charrnn.atomic import atomic_write

CACHE_ENV = "CHARRNN_STUDY_CACHE"
SPEED_FILE = "speed.json"


@dataclass(frozen=True)
class Reading:
    """The speed a plan uses: a point of the speed grid (`exponent`), and whether an earlier study's reading on this
    machine gave it (`remembered`) or this one's did."""

    exponent: int
    grid: float
    remembered: bool
    path: Path | None  # where it is remembered (None: it could not be)

    @property
    def chars_per_s(self) -> float:
        return self.grid ** self.exponent


def cache_dir() -> Path:
    """Where this user's study cache lives (see the module doc)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "charrnn-study"


def machine_key(**what: object) -> str:
    """A key for readings taken here: this machine (its CPU, its cores, the torch build) and `what` the reading
    depends on besides (threads, trials at once, device, the search space)."""
    import torch

    cpu = _cpu_model()
    fields = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, **what}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def settle(measured: float, key: str, grid: float, path: Path | None = None) -> Reading:
    """The grid point a plan uses for a `measured` reading: the one an earlier study remembered under `key` when
    `measured` rounds down to it or to a point next to it, else `measured` rounded down to the grid, which is then
    remembered. A cache that cannot be read or written is measured past (the plan then follows this reading)."""
    path = path or cache_dir() / SPEED_FILE
    k = math.floor(math.log(measured) / math.log(grid) + 1e-9)
    readings = _read(path)
    known = readings.get(key)
    if isinstance(known, dict) and isinstance(known.get("exponent"), int) and abs(known["exponent"] - k) <= 1:
        return Reading(known["exponent"], grid, True, path)
    readings[key] = {"exponent": k, "grid": grid, "measured": round(measured, 1)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(readings, indent=1, sort_keys=True)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    except OSError:
        return Reading(k, grid, False, None)
    return Reading(k, grid, False, path)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
