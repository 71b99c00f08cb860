"""The results contract: study.json and the trials/curves/samples Parquet tables of a run directory.

`ResultsWriter` is a Tune callback that runs in the driver: workers report through Tune, the driver
writes the tables, so a cluster needs no shared file system. Every write is atomic (temporary file
in the same directory, then rename), so a study stopped at any moment leaves readable tables.
"""
from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from ray.tune import Callback

from charrnn.metrics import copied_frac, known_word_frac
from study.progress import Progress, Tally

SCHEMA_VERSION = 1
STUDY_FILE = "study.json"
TRIALS_FILE = "trials.parquet"
CURVES_FILE = "curves.parquet"
SAMPLES_FILE = "samples.parquet"
BASELINES_FILE = "baselines.parquet"
STATUSES = ("completed", "stopped", "diverged", "failed", "running")
FINAL_STATUSES = ("completed", "stopped", "diverged", "failed")

CURVE_COLUMNS = ["trial_id", "chars_seen", "wall_s", "train_bpc", "val_bpc", "eval_val_bpc", "lr"]
SAMPLE_COLUMNS = ["trial_id", "chars_seen", "temperature", "text", "kind", "prime", "known_word_frac",
                  "copy20_frac"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_copy(src: Path, dst: Path) -> None:
    atomic_write_bytes(dst, Path(src).read_bytes())


def write_baselines(run_dir: Path, rows: list[dict]) -> None:
    """baselines.parquet: `method, split, bpc, detail`, one row per baseline and split (val, test)."""
    df = pd.DataFrame(rows, columns=["method", "split", "bpc", "detail"])
    for col in ("method", "split", "detail"):
        df[col] = df[col].astype("string")
    df["bpc"] = df["bpc"].astype("float64")
    atomic_write_parquet(Path(run_dir) / BASELINES_FILE, df)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False, engine="pyarrow")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class TextIndex:
    """What the sample metrics compare generated text against: the corpus words and 20-gram hashes."""

    words: set[str]
    ngrams: np.ndarray
    encode: Callable[[str], np.ndarray]

    def metrics(self, text: str) -> tuple[float, float]:
        try:
            ids = self.encode(text)
        except KeyError:
            return known_word_frac(text, self.words), math.nan
        return known_word_frac(text, self.words), copied_frac(ids, self.ngrams)


def error_summary(trial) -> str:
    """One line naming why a trial failed, from Tune's error file."""
    text = ""
    try:
        if trial.error_file and Path(trial.error_file).exists():
            text = Path(trial.error_file).read_text(errors="replace")
    except OSError:
        pass
    return summarize_error(text)


def summarize_error(text: str) -> str:
    """The innermost "SomeError: message" line of a traceback; a CUDA out-of-memory is named as such."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    candidates = [ln for ln in lines if ":" in ln and ln.split(":")[0].replace(".", "").isidentifier()]
    line = (candidates or lines or ["unknown error"])[-1]
    if "CUDA out of memory" in text or "OutOfMemoryError" in text:
        return f"CUDA out of memory: {line}"[:1000]
    return line[:1000]


def _unless_final(hook):
    """A ResultsWriter hook that leaves alone the trials an interrupted driver saw finish (`_final`)."""
    @functools.wraps(hook)
    def wrapper(self, iteration, trials, trial, *args, **info):
        if trial.trial_id not in self._final:
            hook(self, iteration, trials, trial, *args, **info)
    return wrapper


class ResultsWriter(Callback):
    """Collects every trial's results from Tune and keeps the run directory's tables up to date.

    Rows already in the run directory (from an interrupted driver) are read back first, so a resumed
    study appends to them instead of starting over.
    """

    def __init__(self, run_dir: Path, search_params: list[str], text_index: TextIndex | None = None,
                 role: str = "search", total_trials: int = 0, echo: Callable[[str], None] | None = None,
                 progress: Progress | None = None):
        self.run_dir = Path(run_dir)
        self.search_params = list(search_params)
        self.text_index = text_index
        self.role = role
        self.total_trials = total_trials
        self.progress = progress or Progress(write=echo)
        self.echo = self.progress.log
        self.trials: dict[str, dict] = {}
        self.curves: list[dict] = []
        self.samples: list[dict] = []
        self.extra: dict[str, Any] = {}  # columns stamped on every new row (e.g. repeat_of)
        self._last_write = 0.0
        # Trials an interrupted driver saw finish. Tune's own state is saved every few seconds, so after a
        # SIGKILL it may resume one of them (from a checkpoint that may be gone): what it reports then is
        # ignored, and the finished row stays as it was.
        self._final: set[str] = set()
        self._load_existing()

    # ---- reading back what an earlier (interrupted) driver wrote -----------------------------------
    def _load_existing(self) -> None:
        path = self.run_dir / TRIALS_FILE
        if path.exists():
            for row in pd.read_parquet(path).to_dict("records"):
                self.trials[row["trial_id"]] = {k: _plain(v) for k, v in row.items()}
                if row["status"] in FINAL_STATUSES:
                    self._final.add(row["trial_id"])
        for name, rows in ((CURVES_FILE, self.curves), (SAMPLES_FILE, self.samples)):
            if (self.run_dir / name).exists():
                rows.extend({k: _plain(v) for k, v in r.items()}
                            for r in pd.read_parquet(self.run_dir / name).to_dict("records"))

    # ---- Tune callback hooks ------------------------------------------------------------------------
    @_unless_final
    def on_trial_start(self, iteration, trials, trial, **info):
        row = self._row(trial)
        row["status"] = "running"
        self.write()
        self.progress.update(self._tally())

    @_unless_final
    def on_trial_recover(self, iteration, trials, trial, **info):
        row = self._row(trial)
        row["retries"] = int(row.get("retries") or 0) + 1
        row["retry_error"] = error_summary(trial)
        self.echo(f"trial {trial.trial_id} crashed ({row['retry_error']}); retrying from its last checkpoint")

    @_unless_final
    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = self._row(trial)
        tid = trial.trial_id
        chars = int(result["chars_seen"])
        # A retried trial re-reports from its checkpoint: drop anything past the point it resumed from.
        self.curves[:] = [c for c in self.curves if not (c["trial_id"] == tid and c["chars_seen"] >= chars)]
        self.samples[:] = [s for s in self.samples if not (s["trial_id"] == tid and s["chars_seen"] >= chars)]
        if not result.get("diverged"):
            self.curves.append({
                "trial_id": tid, "chars_seen": chars, "wall_s": float(result["wall_s"]),
                "train_bpc": float(result["train_bpc"]), "val_bpc": float(result["eval_val_bpc"]),
                "eval_val_bpc": float(result["eval_val_bpc"]), "lr": float(result["lr"]),
            })
            self._add_sample(tid, chars, float(result["sample_temperature"]), result["sample"], "eval",
                             trial.config.get("prime", "\n"))
        for temp, text in json.loads(result.get("final_samples_json") or "{}").items():
            self._add_sample(tid, chars, float(temp), text, "final", trial.config.get("prime", "\n"))
        prev_best = self.best_val_bpc()
        row.update(
            chars_seen=chars,
            wall_s=float(result["wall_s"]),
            eval_s=float(result.get("eval_s", 0.0)),
            train_bpc=float(result["train_bpc"]),
            node_id=str(result.get("node_id", "")),
            device=str(result.get("device", "")),
            seed=int(result.get("seed", trial.config.get("seed", 0))),
            threads=int(result.get("threads", 1)),
            precision=str(result.get("precision", "")),
            checkpoint=_checkpoint_path(trial),
        )
        if "peak_gpu_mem_bytes" in result:
            row["peak_gpu_mem_bytes"] = int(result["peak_gpu_mem_bytes"])
        if not result.get("diverged"):
            row["val_bpc"] = float(result["val_bpc"])
            row["best_chars_seen"] = int(self._best_chars(tid))
        if "budget_chars" in result:
            row["budget_chars"] = int(result["budget_chars"])
        if _finite(result.get("test_bpc")):
            row["test_bpc"] = float(result["test_bpc"])
        if result.get("stopped_early"):
            row["stopped_early"] = True
        train_s = max(row["wall_s"] - row["eval_s"], 1e-9)
        row["chars_per_s"] = chars / train_s
        best = self.best_val_bpc()
        new_best = self.role == "search" and best < prev_best
        self.progress.update(self._tally(), note=f"new best val_bpc {best:.4f} (trial {tid}, {chars:,} chars)"
                             if new_best else None)
        self.write(throttle=2.0)

    @_unless_final
    def on_trial_complete(self, iteration, trials, trial, **info):
        row = self._row(trial)
        last = trial.last_result or {}
        if last.get("diverged"):
            row["status"] = "diverged"
            row["error"] = f"loss diverged (NaN/inf or exploding) at {int(last['chars_seen']):,} chars"
        elif last.get("finished"):
            row["status"] = "completed"
        elif last:
            row["status"] = "stopped"
        else:
            row["status"] = "failed"
            row["error"] = row.get("error") or "trial ended without reporting a result"
        row["checkpoint"] = _checkpoint_path(trial)
        self.write()
        self.progress.log(f"trial {trial.trial_id} {row['status']}"
                          + (f", val_bpc {row['val_bpc']:.4f}" if _finite(row.get("val_bpc")) else ""),
                          self._tally())

    @_unless_final
    def on_trial_error(self, iteration, trials, trial, **info):
        row = self._row(trial)
        row["status"] = "failed"
        row["error"] = error_summary(trial)
        self.write()
        self.progress.log(f"trial {trial.trial_id} failed: {row['error']}", self._tally())

    def on_step_end(self, iteration, trials, **info):
        self.progress.tick()

    def on_experiment_end(self, trials, **info):
        self.write()
        self.progress.close()

    # ---- tables -------------------------------------------------------------------------------------
    def _row(self, trial) -> dict:
        tid = trial.trial_id
        if tid not in self.trials:
            row = {"trial_id": tid, "trial_index": len(self.trials), "role": self.role, "status": "running"}
            for name in self.search_params:
                row[f"param.{name}"] = _plain(trial.config.get(name))
            row.update(val_bpc=math.nan, chars_seen=0, wall_s=0.0, node_id="", device="", error=None,
                       seed=int(trial.config.get("seed", 0)), retries=0, **self.extra)
            self.trials[tid] = row
        return self.trials[tid]

    def _add_sample(self, tid: str, chars: int, temperature: float, text: str, kind: str, prime: str) -> None:
        if not text:
            return
        known, copied = self.text_index.metrics(text) if self.text_index else (math.nan, math.nan)
        self.samples.append({"trial_id": tid, "chars_seen": chars, "temperature": temperature, "text": text,
                             "kind": kind, "prime": prime, "known_word_frac": known, "copy20_frac": copied})

    def _best_chars(self, tid: str) -> int:
        rows = [c for c in self.curves if c["trial_id"] == tid and _finite(c["val_bpc"])]
        return min(rows, key=lambda c: c["val_bpc"])["chars_seen"] if rows else 0

    def best_val_bpc(self) -> float:
        vals = [r["val_bpc"] for r in self.trials.values() if r.get("role") == "search" and _finite(r.get("val_bpc"))]
        return min(vals) if vals else math.inf

    def _tally(self) -> Tally:
        rows = [r for r in self.trials.values() if r.get("role") == self.role]
        done = sum(r["status"] != "running" for r in rows)
        failed = sum(r["status"] in ("failed", "diverged") for r in rows)
        return Tally(self.role, self.total_trials or len(rows), done, len(rows) - done, failed, self.best_val_bpc())

    def trials_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(list(self.trials.values()))
        if df.empty:
            cols = ["trial_id", "trial_index", "role", "status"] + [f"param.{n}" for n in self.search_params] + [
                "val_bpc", "chars_seen", "wall_s", "node_id", "device", "error", "seed", "retries"]
            df = pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
        for col in ("trial_id", "status", "role", "node_id", "device", "precision", "error", "retry_error",
                    "checkpoint", "repeat_of"):
            if col in df:
                df[col] = df[col].astype("string")
        for col in ("val_bpc", "wall_s", "train_bpc", "eval_s", "chars_per_s", "test_bpc"):
            if col in df:
                df[col] = df[col].astype("float64")
        if "stopped_early" in df:
            df["stopped_early"] = df["stopped_early"].astype("boolean").fillna(False).astype(bool)
        for col in ("chars_seen", "best_chars_seen", "trial_index", "seed", "retries", "threads",
                    "peak_gpu_mem_bytes", "budget_chars"):
            if col in df:
                df[col] = df[col].fillna(0).astype("int64")
        return df

    def write(self, throttle: float = 0.0) -> None:
        """Rewrite all three tables atomically (at most every `throttle` seconds)."""
        now = time.monotonic()
        if throttle and now - self._last_write < throttle:
            return
        self._last_write = now
        atomic_write_parquet(self.run_dir / TRIALS_FILE, self.trials_frame())
        atomic_write_parquet(self.run_dir / CURVES_FILE, _frame(self.curves, CURVE_COLUMNS))
        atomic_write_parquet(self.run_dir / SAMPLES_FILE, _frame(self.samples, SAMPLE_COLUMNS))


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    df["trial_id"] = df["trial_id"].astype("string")
    df["chars_seen"] = df["chars_seen"].astype("int64")
    for col in columns:
        if col not in ("trial_id", "chars_seen", "text", "kind", "prime"):
            df[col] = df[col].astype("float64")
        elif col in ("text", "kind", "prime"):
            df[col] = df[col].astype("string")
    return df


def _checkpoint_path(trial) -> str | None:
    ckpt = getattr(trial, "checkpoint", None)
    return getattr(ckpt, "path", None) if ckpt is not None else None


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _plain(v):
    """numpy/pandas scalars -> Python scalars, so rows round-trip through Parquet unchanged."""
    if isinstance(v, np.generic):
        return v.item()
    if v is pd.NA:
        return None
    return v
