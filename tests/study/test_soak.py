"""Issue 11's resume soak: one study SIGKILLed at five moments chosen by progress, resumed after each.

The chain: start the study, kill it (driver, Ray's services and trial workers, all at once) at the first
moment, `--resume` it, kill that at the next moment, ... and let the last resume run to the end. After each
kill the tables must be readable with every finished row unchanged; at the end every invariant of the issue
must hold. Each kill point and what it found is printed (run with -s or -rA), so the kill points tried and
what was kept can be quoted.
"""
from __future__ import annotations

import io
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO
from tests.study.test_reliability import _env, _fifo_smoke

pytestmark = pytest.mark.slow

TRIALS = 4
LINK_TIMEOUT_S = 300  # per driver of the chain, generous for a loaded 2-core machine


def _trials(out: Path) -> pd.DataFrame | None:
    """trials.parquet, or None before the first write. The writer replaces the file atomically; it is read into
    memory first because pyarrow opens a path twice (footer, then pages) and could pair two versions."""
    path = out / "trials.parquet"
    return pd.read_parquet(io.BytesIO(path.read_bytes())) if path.exists() else None


def _finished(trials: pd.DataFrame | None) -> dict[str, tuple]:
    """trial_id -> (status, chars_seen, score) of the rows that are no longer running."""
    if trials is None:
        return {}
    done = trials[trials["status"] != "running"]
    return {str(r["trial_id"]): (str(r["status"]), int(r["chars_seen"]), float(r["best_val_bpc"]))
            for _, r in done.iterrows()}


def _optuna_trials(out: Path) -> list[tuple[int, str, str | None]]:
    """(number, state, tune_trial_id) of every Optuna trial, read from optuna.db as the dashboard would."""
    if not (out / "optuna.db").exists():
        return []
    with sqlite3.connect(out / "optuna.db") as db:
        if not db.execute("select 1 from sqlite_master where name = 'trial_user_attributes'").fetchall():
            return []  # Optuna is still creating its schema
        rows = db.execute(
            "select t.number, t.state, a.value_json from trials t left join trial_user_attributes a "
            "on a.trial_id = t.trial_id and a.key = 'tune_trial_id' order by t.number").fetchall()
    return [(n, state, tid.strip('"') if tid else None) for n, state, tid in rows]


def _describe(out: Path) -> str:
    trials = _trials(out)
    rows = "no trials.parquet" if trials is None else ", ".join(
        f"{role}: " + " ".join(f"{t}:{s}@{c}" for t, s, c in zip(g["trial_id"], g["status"], g["chars_seen"]))
        for role, g in trials.groupby("role", sort=False))
    optuna = " ".join(f"#{n}:{s}:{t}" for n, s, t in _optuna_trials(out)) or "none"
    return f"rows [{rows}]; optuna [{optuna}]"


# ---- the moments, each seen by progress ------------------------------------------------------------------
def _before_first_result(out: Path) -> str | None:
    if not (out / "trials.parquet").exists() and (asked := _optuna_trials(out)):
        return f"Optuna trial #{asked[0][0]} asked for Tune trial {asked[0][2]}, no trial row yet"
    return None


def _trial_just_started(known: set[str]) -> Callable[[Path], str | None]:
    def seen(out: Path) -> str | None:
        trials = _trials(out)
        if trials is None or (trials["status"] == "running").all():
            return None
        new = trials[(trials["status"] == "running") & (trials["chars_seen"] == 0) & ~trials["trial_id"].isin(known)]
        return f"trial {new['trial_id'].iloc[0]} just started (running, 0 chars)" if len(new) else None
    return seen


def _holding(hold_dir: Path) -> Callable[[Path], str | None]:
    def seen(out: Path) -> str | None:
        held = [p for p in hold_dir.glob("hold-*")]
        if not held:
            return None
        return f"trial {held[0].name[5:]} (pid {held[0].read_text()}) wrote its checkpoint files, not yet reported"
    return seen


def _role_row(role: str, marker: str | None = None) -> Callable[[Path], str | None]:
    def seen(out: Path) -> str | None:
        trials = _trials(out)
        if trials is not None and (trials["role"] == role).any():
            return f"a {role} row appeared"
        if marker and (out / marker).exists():
            return f"{marker}/ appeared"
        return None
    return seen


# ---- the chain -------------------------------------------------------------------------------------------
def _session(sid: int) -> list[int]:
    """Processes of session `sid`: the driver, Ray's services and Ray's workers (in process groups of their own)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


def _kill_all(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in _session(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(30)


@dataclass
class Link:
    """One driver of the chain, killed when `moment` says what it saw (None: not yet)."""

    name: str
    moment: Callable[[Path], str | None] | None
    env: dict


def _run_link(cmd: list[str], link: Link, out: Path, logs: Path) -> tuple[str | None, int | str, float]:
    """Start `cmd`; kill it at the link's moment. Returns (what the moment saw or None, the exit status, or
    "killed" or "timed out", seconds)."""
    start = time.monotonic()
    with open(logs / f"{link.name}.out", "w") as so, open(logs / f"{link.name}.err", "w") as se:
        proc = subprocess.Popen(cmd, cwd=REPO, env=link.env, stdout=so, stderr=se, start_new_session=True)
        try:
            while time.monotonic() - start < LINK_TIMEOUT_S:
                if link.moment is not None and (seen := link.moment(out)):
                    _kill_all(proc)
                    return seen, "killed", time.monotonic() - start
                if proc.poll() is not None:
                    return None, proc.returncode, time.monotonic() - start
                time.sleep(0.1)  # polling interval only: the moment is decided by what is on disk
            return None, "timed out", time.monotonic() - start
        finally:
            if proc.poll() is None:
                _kill_all(proc)


def _check_snapshot(point: str, trials: pd.DataFrame, kept: dict[str, tuple]) -> list[str]:
    """What must hold at any moment: unique rows, and every row seen finished before is unchanged."""
    problems = []
    if not trials["trial_id"].is_unique:
        dup = trials["trial_id"][trials["trial_id"].duplicated()]
        problems.append(f"{point}: duplicate trial_id rows {sorted(dup)}")
    now = _finished(trials)
    for tid, before in kept.items():
        after = now.get(tid)
        same = after is not None and after[:2] == before[:2] and (
            after[2] == pytest.approx(before[2]) or (math.isnan(after[2]) and math.isnan(before[2])))
        if not same:
            problems.append(f"{point}: finished row {tid} changed: {before} -> {after}")
    return problems


def _outcome(trials: pd.DataFrame) -> pd.DataFrame:
    """What a study decided, in order of creation, without its ids and times: parameters, statuses, characters and
    scores (to the printed precision) of every trial, the final model's included."""
    t = trials.sort_values(["role", "trial_index"], kind="stable")
    cols = ["role", "status", "seed", "chars_seen"] + [c for c in t if c.startswith("param.")]
    return t[cols].assign(best=t["best_val_bpc"].round(4), test=t["test_bpc"].round(4)).reset_index(drop=True)


def test_study_killed_at_five_moments_resumes_with_every_invariant(tmp_path):
    out, hold, logs = tmp_path / "run", tmp_path / "hold", tmp_path / "logs"
    hold.mkdir()
    logs.mkdir()
    # The smoke spec with the default study's scheduler (fifo): a seed then fixes the study, so the chain must end as
    # the uninterrupted study does.
    first = [sys.executable, "-m", "study.run", "--spec", str(_fifo_smoke(tmp_path)), "--out", str(out), "--no-report",
             "--trials", str(TRIALS), "--repeats", "1", "--final-chars", "24000", "--max-concurrent", "1"]
    resume = [sys.executable, "-m", "study.run", "--resume", str(out), "--no-report"]
    known: set[str] = set()  # trial ids in the tables before the current link (for "a NEW row")
    chain = [
        Link("a-before-first-result", _before_first_result, _env()),
        Link("b-right-after-a-trial-starts", _trial_just_started(known), _env()),
        Link("c-during-a-checkpoint-write", _holding(hold), _env(CHARRNN_TEST_HOLD=f"{hold}:1")),
        Link("d-during-the-repeats", _role_row("repeat"), _env()),
        Link("e-during-the-final-stage", _role_row("final", "tune-final"), _env()),
        Link("f-to-the-end", None, _env()),
    ]
    kept: dict[str, tuple] = {}  # every row seen finished after any kill: it must never change
    problems: list[str] = []
    report: list[str] = []
    t0 = time.monotonic()
    for k, link in enumerate(chain):
        seen, rc, secs = _run_link(first if k == 0 else resume, link, out, logs)
        if link.moment is None:
            report.append(f"{link.name}: ended ({rc}) after {secs:.0f}s; {_describe(out)}")
            break
        if seen is None:
            err = (logs / f"{link.name}.err").read_text()[-1500:]
            problems.append(f"{link.name}: moment never seen, the driver ended ({rc}) after {secs:.0f}s")
            report.append(f"{link.name}: MISSED (the driver ended ({rc}) after {secs:.0f}s); stderr tail:\n{err}")
            continue
        trials = _trials(out)
        if trials is None:
            report.append(f"{link.name}: killed after {secs:.0f}s at '{seen}'; no tables yet; {_describe(out)}")
            continue
        problems += _check_snapshot(link.name, trials, kept)
        finished = _finished(trials)
        report.append(f"{link.name}: killed after {secs:.0f}s at '{seen}'; kept {len(finished)} finished rows; "
                      f"{_describe(out)}")
        kept.update({tid: row for tid, row in finished.items() if tid not in kept})
        known.update(trials["trial_id"])

    # ---- every invariant of issue 11, at the end ---------------------------------------------------------
    stdout = (logs / "f-to-the-end.out").read_text()
    if rc != 0 or "final model: test" not in stdout:
        with_score = "with" if "final model: test" in stdout else "without"
        problems.append(f"end: driver ended ({rc}), summary {with_score} the final test score; stderr tail: "
                        f"{(logs / 'f-to-the-end.err').read_text()[-1500:]}")
    trials = _trials(out)
    assert trials is not None, "no trials.parquet at the end:\n" + "\n".join(report + problems)
    search = trials[trials["role"] == "search"]
    if len(search) != TRIALS:
        problems.append(f"end: {len(search)} search rows for {TRIALS} asked: "
                        + ", ".join(f"{t} {s} {c}" for t, s, c in zip(search["trial_id"], search["status"],
                                                                        search["chars_seen"])))
    running = trials[trials["status"] == "running"]
    if len(running):
        problems.append("end: rows still running: "
                        f"{list(zip(running['trial_id'], running['role'], running['chars_seen']))}")
    problems += _check_snapshot("end", trials, kept)
    optuna = _optuna_trials(out)
    if len(optuna) != len(search):
        problems.append(f"end: {len(optuna)} Optuna trials for {len(search)} search rows: {optuna}")
    tune_ids = [t for _, _, t in optuna]
    for tid in search["trial_id"]:
        if tune_ids.count(tid) != 1:
            problems.append(f"end: search row {tid} is the tune_trial_id of {tune_ids.count(tid)} Optuna trials")
    strays = [o for o in optuna if o[2] not in set(search["trial_id"])]
    if strays:
        problems.append(f"end: Optuna trials with no search row: {strays}")
    if any(state == "RUNNING" for _, state, _ in optuna):
        problems.append(f"end: Optuna trials left RUNNING: {[o for o in optuna if o[1] == 'RUNNING']}")
    final = trials[trials["role"] == "final"]
    test_bpc = final["test_bpc"] if "test_bpc" in final else pd.Series([math.nan] * len(final))
    if len(final) != 1 or test_bpc.isna().any():
        problems.append(f"end: {len(final)} final rows, test_bpc {list(test_bpc)}")

    for params in sorted(out.glob("tune*/trial_*/params.json")):  # a resumed stage runs with the study's settings
        config = json.loads(params.read_text())
        if "budget_chars" not in config:
            problems.append(f"end: Tune ran {params.parent.relative_to(out)} without the study's settings "
                            f"(params.json {config})")
    tune_dirs = sorted(p.name for p in (out / "tune").glob("trial_*")) if (out / "tune").exists() else []
    report.append(f"Tune's search trial directories: {tune_dirs}")

    # ---- and it ends as the uninterrupted study does (issue 26): the same trials and final model, bit for bit ----
    for log in sorted(logs.glob("*.out")):  # a trial rerun by a resume keeps its weights for the final model
        problems += [f"{log.stem}: {line}" for line in log.read_text().splitlines() if "cannot read trial" in line]
    whole = tmp_path / "whole"
    proc = subprocess.run([*first[:first.index("--out") + 1], str(whole), *first[first.index("--out") + 2:]],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=LINK_TIMEOUT_S)
    if proc.returncode != 0:
        problems.append(f"uninterrupted: ended ({proc.returncode}): {proc.stderr[-1500:]}")
    else:
        killed, straight = _outcome(trials), _outcome(_trials(whole))
        if not killed.equals(straight):
            problems.append("end: the resumed study differs from the uninterrupted one:\n"
                            + killed.compare(straight).to_string() if killed.shape == straight.shape else
                            f"end: {len(killed)} rows resumed, {len(straight)} uninterrupted")
    report.append(f"whole chain: {time.monotonic() - t0:.0f}s")
    print("\n".join(["", "resume soak, kill points:", *report, "invariants broken:" if problems else
                     "every invariant holds", *problems]))
    assert not problems, "\n".join(problems)
