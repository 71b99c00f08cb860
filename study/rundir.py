"""The run directory: every write into it, and the trial table's logic.

Its layout and the results contract's names (files, columns, statuses, roles, schema version) are `runcontract`'s,
shared with the reader (reports/_load.py). One name, one meaning, in every table and in Tune's results: `val_bpc` is
the bits/char of ONE evaluation on the validation text; `best_val_bpc` is the best evaluation of a trial so far.
Schema 1 had `val_bpc` for both; reports/_load.py still reads it.

This module imports nothing of Ray: `TrialTable` turns trial events (start, result, retry, completion, error) into
rows, and is tested in milliseconds without a cluster. study.results adapts Tune's callbacks to it.
"""
from __future__ import annotations

import errno
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from charrnn import atomic
from charrnn.checkpoint import FINAL_MODEL_FILE
from charrnn.config import TrainConfig
from charrnn.metrics import copied_frac, known_word_frac
from runcontract import (BASELINE_COLUMNS, BASELINES_FILE, CURVE_COLUMNS, CURVES_FILE, FINISHED, LABELS, OPTUNA_FILE,
                         PARAM_PREFIX, SAMPLE_COLUMNS, SAMPLES_FILE, SCHEMA_VERSION, SPEC_FILE, STUDY_FILE,
                         TRIAL_FLOAT_COLUMNS, TRIAL_INT_COLUMNS, TRIAL_STRING_COLUMNS, TRIALS_FILE)
from runcontract import FINAL, LOCAL, RACE, SEARCH
from study.outcomes import ended
from study.progress import Tally


class RunDirWriteError(OSError):
    """The run directory could not be written (a full disk, a lost mount): the study stops, the tables as of
    the last successful write are intact, and --resume continues once the cause is fixed. Where it cannot be
    raised, it is noted in the study's `study.stopping.StudyStop`."""

    def __str__(self) -> str:
        return str(self.strerror)


def _file_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


# Files are created as the user's umask says (tempfile.mkstemp would leave them readable by the owner only).
FILE_MODE = _file_mode()


# ---- the directory --------------------------------------------------------------------------------------------

class RunDir:
    """Where a study's results live, and the only code that writes there."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.path.resolve() / OPTUNA_FILE}"

    def read_study(self) -> dict | None:
        """study.json, or None where there is none (or it is not a study's)."""
        try:
            meta = json.loads((self / STUDY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and "schema_version" in meta else None

    def create(self, spec_path: str | Path, study: dict) -> None:
        """Start a new run directory: the spec as given and study.json (stamped with this schema version)."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self / SPEC_FILE, Path(spec_path).read_bytes())
        atomic_write_json(self / STUDY_FILE, {"schema_version": SCHEMA_VERSION, **study})

    def update_study(self, changes: dict) -> None:
        """Record decisions the study made after it started (its time plan, the rungs' counts, the selection) in
        study.json: top-level keys are replaced, nested tables merged one level deep."""
        meta = self.read_study() or {}
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(meta.get(key), dict):
                meta[key] = {**meta[key], **value}
            else:
                meta[key] = value
        atomic_write_json(self / STUDY_FILE, meta)

    def write_tables(self, table: TrialTable) -> None:
        """Rewrite trials, curves and samples as one set: all three are written in full before any replaces its
        old version, so a write that fails (a full disk) changes none, and trials.parquet is replaced last, so
        it never names an evaluation the curves do not hold."""
        trials, curves, samples = table.frames()
        staged = []
        try:
            for name, df in ((CURVES_FILE, curves), (SAMPLES_FILE, samples), (TRIALS_FILE, trials)):
                staged.append((_stage(self / name, lambda tmp, df=df: df.to_parquet(tmp, index=False)), name))
            for tmp, name in staged:
                _replace(tmp, self / name)
        finally:
            for tmp, _ in staged:
                Path(tmp).unlink(missing_ok=True)

    def read_tables(self) -> tuple[list[dict], list[dict], list[dict]]:
        """The rows an earlier (interrupted) driver wrote: (trials, curves, samples), empty where none."""
        def rows(name: str) -> list[dict]:
            path = self / name
            if not path.exists():
                return []
            return [{k: _plain(v) for k, v in r.items()} for r in pd.read_parquet(path).to_dict("records")]

        return rows(TRIALS_FILE), rows(CURVES_FILE), rows(SAMPLES_FILE)

    def has_baselines(self) -> bool:
        return (self / BASELINES_FILE).exists()

    def write_baselines(self, rows: list[dict]) -> None:
        """baselines.parquet: `method, split, bpc, detail`, one row per baseline and split (val, test)."""
        df = pd.DataFrame(rows, columns=list(BASELINE_COLUMNS))
        for col in ("method", "split", "detail"):
            df[col] = df[col].astype("string")
        df["bpc"] = df["bpc"].astype("float64")
        atomic_write_parquet(self / BASELINES_FILE, df)

    def install_final_model(self, model_file: str | Path) -> None:
        atomic_write_bytes(self / FINAL_MODEL_FILE, Path(model_file).read_bytes())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    _atomic(path, lambda tmp: df.to_parquet(tmp, index=False, engine="pyarrow"))


def _atomic(path: Path, write: Callable[[str], Any]) -> None:
    """Write through a temporary file in the same directory, flushed to disk, then renamed over `path`: a reader
    (or a driver killed at any moment) sees the old file or the new one, never a part. A failed write leaves the
    old file as it was and raises RunDirWriteError."""
    tmp = _stage(path, write)
    try:
        _replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _stage(path: Path, write: Callable[[str], Any]) -> str:
    """`write` into a new temporary file beside `path`, flushed to disk (charrnn.atomic); its name. Raises
    RunDirWriteError."""
    try:
        return atomic.stage(path, write, FILE_MODE)
    except OSError as exc:
        raise _write_error(path, exc) from exc


def _replace(tmp: str, path: Path) -> None:
    try:
        atomic.commit(tmp, path)
    except OSError as exc:
        raise _write_error(path, exc) from exc


def _write_error(path: Path, exc: OSError) -> RunDirWriteError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return RunDirWriteError(exc.errno or errno.EIO, f"cannot write {path}: {reason}")


# ---- the trial table ----------------------------------------------------------------------------------------

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


def classify(last_result: dict | None) -> tuple[str, str | None]:
    """(status, error) of a trial that ended normally, from its last result (study.outcomes holds the table)."""
    return ended(last_result)


class TrialTable:
    """The rows of trials/curves/samples, kept up to date from trial events.

    Events name a trial by id and carry plain data (its config, a result dict as the trainable reported it).
    A trial that was finished when the table was loaded (an interrupted driver saw it end) is never changed
    again: a resumed Tune may rerun it from a checkpoint, and what it reports then is ignored.

    `role` and `extra` say what the trials being run now are (search, repeat, final) and what to stamp on
    their new rows (e.g. `repeat_of`); the driver sets them per stage with `stage`.
    """

    def __init__(self, search_params: list[str], text_index: TextIndex | None = None,
                 rows: tuple[list[dict], list[dict], list[dict]] = ([], [], [])):
        self.search_params = list(search_params)
        self.text_index = text_index
        self.role, self.total, self.extra = "search", 0, {}
        trials, curves, samples = rows
        self.trials: dict[str, dict] = {r["trial_id"]: dict(r) for r in trials}
        self.curves: list[dict] = [dict(c) for c in curves]
        self.samples: list[dict] = [dict(s) for s in samples]
        self.finished: set[str] = {tid for tid, r in self.trials.items() if r["status"] in FINISHED}

    def stage(self, role: str, total: int, **extra: Any) -> None:
        self.role, self.total, self.extra = role, total, extra

    # ---- events ----------------------------------------------------------------------------------------------
    def start(self, tid: str, config: dict) -> None:
        if tid not in self.finished:
            self.row(tid, config)["status"] = "running"

    def retry(self, tid: str, config: dict, error: str) -> None:
        if tid not in self.finished:
            row = self.row(tid, config)
            row["retries"] = int(row.get("retries") or 0) + 1
            row["retry_error"] = error

    def result(self, tid: str, config: dict, result: dict, checkpoint: str | None = None) -> bool:
        """Record one evaluation; True when it is a new best among the search trials."""
        if tid in self.finished:
            return False
        row = self.row(tid, config)
        chars = int(result["chars_seen"])
        # A retried trial re-reports from its checkpoint: drop what lies past the point it resumed from.
        self.curves[:] = [c for c in self.curves if not (c["trial_id"] == tid and c["chars_seen"] >= chars)]
        self.samples[:] = [s for s in self.samples if not (s["trial_id"] == tid and s["chars_seen"] >= chars)]
        prime = config.get("prime", "\n")
        if not result.get("diverged"):
            self.curves.append({
                "trial_id": tid, "chars_seen": chars, "steps": int(result.get("steps") or 0),
                "wall_s": float(result["wall_s"]),
                "train_bpc": float(result["train_bpc"]), "val_bpc": float(result["val_bpc"]),
                "best_val_bpc": float(result["best_val_bpc"]), "lr": float(result["lr"]),
            })
            self._add_sample(tid, chars, float(result["sample_temperature"]), result["sample"], "eval", prime)
        for temp, text in json.loads(result.get("final_samples_json") or "{}").items():
            self._add_sample(tid, chars, float(temp), text, "final", prime)
        prev_best = self.best_val_bpc()
        row.update(
            chars_seen=chars, wall_s=float(result["wall_s"]), eval_s=float(result.get("eval_s", 0.0)),
            train_bpc=float(result["train_bpc"]), node_id=str(result.get("node_id", "")),
            device=str(result.get("device", "")), seed=int(result.get("seed", config.get("seed", 0))),
            threads=int(result.get("threads", 1)), precision=str(result.get("precision", "")), checkpoint=checkpoint,
        )
        if "peak_gpu_mem_bytes" in result:
            row["peak_gpu_mem_bytes"] = int(result["peak_gpu_mem_bytes"])
        if not result.get("diverged"):
            row["best_val_bpc"] = float(result["best_val_bpc"])
            row["best_chars_seen"] = self._best_chars(tid)
        if "budget_chars" in result:
            row["budget_chars"] = int(result["budget_chars"])
        if _finite(result.get("test_bpc")):
            row["test_bpc"] = float(result["test_bpc"])
        if result.get("stopped_early"):
            row["stopped_early"] = True
        row["chars_per_s"] = chars / max(row["wall_s"] - row["eval_s"], 1e-9)
        return self.role == "search" and self.best_val_bpc() < prev_best

    def complete(self, tid: str, config: dict, last_result: dict | None, checkpoint: str | None = None) -> None:
        if tid in self.finished:
            # A resume can run a trial that had ended again from its last checkpoint (Tune saved its state before
            # the end): the row keeps its scores, and names the checkpoint that now holds the same weights (Tune
            # keeps one per trial, so the one named before is gone).
            if checkpoint:
                self.trials[tid]["checkpoint"] = checkpoint
            return
        row = self.row(tid, config)
        status, error = classify(last_result)
        row["status"] = status
        if error:
            row["error"] = row.get("error") or error
        row["checkpoint"] = checkpoint
        self.finished.add(tid)

    def fail(self, tid: str, config: dict, error: str) -> None:
        if tid in self.finished:
            return
        row = self.row(tid, config)
        row.update(status="failed", error=error)
        self.finished.add(tid)

    def catch_up(self, tid: str, config: dict, last_result: dict | None, ended: str | None = None,
                 error: str | None = None) -> bool:
        """Bring a row up to what the trial runner saved of its trial; True if the row changed.

        Tune saves its state after the callbacks of a step have run, so a driver stopped in between (killed, or
        stopped by a write the disk refused) leaves a row behind Tune: a result it never wrote, or a trial that
        ended while the row still says running. `ended` is None (in flight), "completed" or "failed" (`error`).
        """
        row = self.trials.get(tid)
        if row is None or tid in self.finished or row.get("role") != self.role:
            return False
        reported = last_result if last_result and "chars_seen" in last_result else None  # else Tune's fields only
        behind = reported is not None and int(reported["chars_seen"]) > int(row.get("chars_seen") or 0)
        if behind:
            self.result(tid, config, reported)
        if ended == "failed":
            self.fail(tid, config, error or "unknown error")
        elif ended is not None:
            self.complete(tid, config, reported)
        return behind or ended is not None

    def forget_checkpoints(self) -> None:
        """The trials' checkpoints were deleted (retention, study.results): no row names one any more."""
        for row in self.trials.values():
            row["checkpoint"] = None

    def drop_unknown_running(self, known: set[str]) -> list[str]:
        """Forget the running trials of this stage that the trial runner does not know.

        A driver killed right after a trial started, before Tune saved its own state, leaves a row that nothing
        will ever resume: the resumed Tune runs that trial's place again under a new id (and Optuna's trial is
        handed to it, see study.search). Returns the ids dropped.
        """
        ghosts = [tid for tid, r in self.trials.items()
                  if r["status"] == "running" and r.get("role") == self.role and tid not in known]
        for tid in ghosts:
            del self.trials[tid]
        gone = set(ghosts)
        self.curves[:] = [c for c in self.curves if c["trial_id"] not in gone]
        self.samples[:] = [s for s in self.samples if s["trial_id"] not in gone]
        for k, row in enumerate(sorted(self.trials.values(), key=lambda r: r["trial_index"])):
            row["trial_index"] = k
        return ghosts

    def order(self, ids: list[str]) -> None:
        """Number the rows of one experiment's trials in `ids`' order (Tune's trials, in order of creation), within
        the places they hold: so `trial_index` is the order of creation, whichever trial Tune started first."""
        pos = {tid: k for k, tid in enumerate(ids)}
        current = [r for tid, r in self.trials.items() if tid in pos]
        slots = sorted(r["trial_index"] for r in current)
        for slot, row in zip(slots, sorted(current, key=lambda r: pos[r["trial_id"]])):
            row["trial_index"] = slot

    # ---- reading -----------------------------------------------------------------------------------------------
    def row(self, tid: str, config: dict) -> dict:
        """The row of trial `tid`, created (running, this stage's role) on first sight."""
        if tid not in self.trials:
            row = {"trial_id": tid, "trial_index": len(self.trials), "role": self.role, "status": "running"}
            for name in self.search_params:
                row[PARAM_PREFIX + name] = _plain(config.get(name))
            row.update(best_val_bpc=math.nan, chars_seen=0, step_chars=_step_chars(config), wall_s=0.0, node_id="",
                       device="", error=None,
                       seed=int(config.get("seed", 0)), retries=0, **self.extra)
            for label in LABELS:  # a local-design trial's move ("" for the center), a race trial's candidate
                if label in config:
                    row[label] = str(config[label])
            self.trials[tid] = row
        return self.trials[tid]

    def best_val_bpc(self, role: str = SEARCH) -> float:
        """The best evaluation of any trial of `role` so far (inf before the first)."""
        vals = [r["best_val_bpc"] for r in self.trials.values()
                if r.get("role") == role and _finite(r.get("best_val_bpc"))]
        return min(vals) if vals else math.inf

    def tally(self) -> Tally:
        rows = [r for r in self.trials.values() if r.get("role") == self.role]
        done = sum(r["status"] != "running" for r in rows)
        failed = sum(r["status"] in ("failed", "diverged") for r in rows)
        # The repeats train at the search's budget and are shown against its best; the local design, the final race
        # and the final model train longer, and show their own.
        best = self.best_val_bpc(self.role if self.role in (LOCAL, RACE, FINAL) else SEARCH)
        return Tally(self.role, self.total or len(rows), done, len(rows) - done, failed, best)

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        return self.trials_frame(), _frame(self.curves, CURVE_COLUMNS), _frame(self.samples, SAMPLE_COLUMNS)

    def trials_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(list(self.trials.values()))
        if df.empty:
            cols = ["trial_id", "trial_index", "role", "status"] + [PARAM_PREFIX + n for n in self.search_params] + [
                "best_val_bpc", "chars_seen", "wall_s", "node_id", "device", "error", "seed", "retries"]
            df = pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
        for col in TRIAL_STRING_COLUMNS:
            if col in df:
                df[col] = df[col].astype("string")
        for col in TRIAL_FLOAT_COLUMNS:
            if col in df:
                df[col] = df[col].astype("float64")
        if "stopped_early" in df:
            df["stopped_early"] = df["stopped_early"].astype("boolean").fillna(False).astype(bool)
        for col in TRIAL_INT_COLUMNS:
            if col in df:
                df[col] = df[col].fillna(0).astype("int64")
        return df

    def _add_sample(self, tid: str, chars: int, temperature: float, text: str, kind: str, prime: str) -> None:
        if not text:
            return
        known, copied = self.text_index.metrics(text) if self.text_index else (math.nan, math.nan)
        self.samples.append({"trial_id": tid, "chars_seen": chars, "temperature": temperature, "text": text,
                             "kind": kind, "prime": prime, "known_word_frac": known, "copy20_frac": copied})

    def _best_chars(self, tid: str) -> int:
        rows = [c for c in self.curves if c["trial_id"] == tid and _finite(c["val_bpc"])]
        return int(min(rows, key=lambda c: c["val_bpc"])["chars_seen"]) if rows else 0


def _step_chars(config: dict) -> int:
    """Characters per optimizer step of a trial with this (flat, Tune) config: batch_size x seq_len."""
    known = {k: v for k, v in config.items() if k in ("batch_size", "seq_len", "step_chars")}
    try:
        c = TrainConfig.from_flat(known)
    except (TypeError, ValueError):
        return 0
    return c.batch_size * c.seq_len


def _frame(rows: list[dict], columns: tuple[str, ...]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(columns))
    for col in columns:
        if col in ("chars_seen", "steps"):
            df[col] = df[col].fillna(0).astype("int64")
        elif col in ("trial_id", "text", "kind", "prime"):
            df[col] = df[col].astype("string")
        else:
            df[col] = df[col].astype("float64")
    return df


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _plain(v):
    """numpy/pandas scalars -> Python scalars, so rows round-trip through Parquet unchanged."""
    if isinstance(v, np.generic):
        return v.item()
    if v is pd.NA:
        return None
    return v
