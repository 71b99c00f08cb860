"""This machine's speed reading, remembered between studies, so that the same machine plans the same study while its
speed drifts.

A machine's training speed drifts: the same configurations trained 1.2-1.9x faster on one 2-core VM half an hour
later, its reading went from 7,295 to 8,688 chars/s, and the two studies got different plans (BENCHMARKS.md, "The
README's first command twice"). No rounding of a reading keeps two readings on either side of a grid point together,
so the first study on a machine records its reading's point on the plan's speed grid (a power of
`timeplan.SPEED_GRID`, as its exponent), under a key naming the machine and what the reading depends on; a later
study whose reading lies within one grid step of that point plans at the recorded point. A reading further away
(another machine under the same key, a much busier or quieter one) replaces it.

The final stage's budgets are remembered the same way (`recall_budget`, `remember_budget`): a candidate's budget is
decided by its pacer from a warm-up of its own training (charrnn.pacer), and two warm-ups of one configuration on
this machine read speeds up to 1.4x apart (BENCHMARKS.md, runs D and E), so the same study decided 15.6M characters
once and 9.3M the next time. The first decision is recorded under a key naming the machine, the study's plan and
the candidate's whole configuration; a later study with the same key and about the same time trains that budget.

The compressor baselines of a corpus (`recall_baselines`) are kept too: they are a pure function of its text and
the compressors' settings, and take 10 s of a core for the canon (xz -9e 7.5 s, PPMd 2 s) in every study.

The files: speed.json, budgets.json and baselines.json in $CHARRNN_STUDY_CACHE, else $XDG_CACHE_HOME/charrnn-study, else
~/.cache/charrnn-study. They hold only readings, budgets and scores; deleting them makes the next study measure afresh.
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
SPEED_FILE, BUDGETS_FILE, BASELINES_FILE = "speed.json", "budgets.json", "baselines.json"
# A remembered budget is trained where this study's time for it is this share of the time it was decided for, or
# more, up to BUDGET_TIME_MAX: a little less time costs the last steps of a schedule that has all but decayed (the
# pacer's hard stop); much more time is worth deciding afresh for.
BUDGET_TIME_MIN, BUDGET_TIME_MAX = 0.9, 1.25


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
    known = _read(path).get(key)
    if isinstance(known, dict) and isinstance(known.get("exponent"), int) and abs(known["exponent"] - k) <= 1:
        return Reading(known["exponent"], grid, True, path)
    written = _write(path, key, {"exponent": k, "grid": grid, "measured": round(measured, 1)})
    return Reading(k, grid, False, written)


@dataclass(frozen=True)
class Budget:
    """A budget decided on this machine: `chars` characters, decided at `chars_per_s` for a run of `limit_s`."""

    chars: int
    chars_per_s: float
    limit_s: float


def recall_budget(key: str, limit_s: float, path: Path | None = None) -> Budget | None:
    """The budget remembered under `key`, where a run of `limit_s` seconds may train it (BUDGET_TIME_MIN to
    BUDGET_TIME_MAX of the time it was decided for); else None, and the run decides its own."""
    known = _read(path or cache_dir() / BUDGETS_FILE).get(key)
    try:
        budget = Budget(int(known["chars"]), float(known["chars_per_s"]), float(known["limit_s"]))
    except (TypeError, KeyError, ValueError):
        return None
    if not (budget.chars > 0 and budget.chars_per_s > 0 and budget.limit_s > 0 and limit_s > 0):
        return None
    return budget if BUDGET_TIME_MIN <= limit_s / budget.limit_s <= BUDGET_TIME_MAX else None


def remember_budget(key: str, budget: Budget, path: Path | None = None) -> Path | None:
    """Record `budget` under `key` (replacing what was there); returns the file, or None where it cannot be written."""
    return _write(path or cache_dir() / BUDGETS_FILE, key,
                  {"chars": budget.chars, "chars_per_s": round(budget.chars_per_s, 1),
                   "limit_s": round(budget.limit_s, 1)})


def recall_baselines(key: str, path: Path | None = None) -> list[dict] | None:
    """The baseline rows remembered under `key` (see `baselines_key`), or None."""
    rows = _read(path or cache_dir() / BASELINES_FILE).get(key)
    ok = isinstance(rows, list) and rows and all(isinstance(r, dict) and {"method", "split", "bpc"} <= set(r)
                                                 for r in rows)
    return rows if ok else None


def remember_baselines(key: str, rows: list[dict], path: Path | None = None) -> Path | None:
    """Record a corpus's baseline rows under `key`; returns the file, or None where it cannot be written."""
    return _write(path or cache_dir() / BASELINES_FILE, key, rows)


def _write(path: Path, key: str, value) -> Path | None:
    data = _read(path)
    data[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=1, sort_keys=True)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    except OSError:
        return None
    return path


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
