"""Do a study's effects hold? Its local design retrained with new seeds, compared move by move with its intervals.

A study's answer is the local design's effects (study/local.py, reports/_effects.py): for each move of one
hyperparameter from the center, the mean over seeds of the paired difference y(move, s) - y(center, s) in
validation bits/char, with a 95% interval. This script measures a reference for each effect on the same corpus,
split and budget (or `--budget-factor` times it). It retrains the center and every move with `--seeds` seeds the
study never used (2000, 2001, ...), paired as the study pairs them. Each trial's flat config is built exactly as
study/stages/local.py builds it, and trained by `charrnn.train.train` directly (no Ray), one torch thread per
worker. It then counts the moves whose reference effect lies inside the study's 95% interval. Issue 25 asks for at
least 90%; the share comes with a Clopper-Pearson interval. A diverged or failed trial scores the uniform guess,
log2(vocabulary size), as in the report.

Run from the repository, once the study has finished its local design (study.json `local.chosen`):

    python -m benchmarks.reference_effects RUN [--seeds 4] [--budget-factor 1] [--jobs 2] [--params a,b]
                                               [--out FILE.json]

Every finished trial is appended to FILE.jsonl (beside --out, default RUN-reference.json beside the run directory)
as it ends, so a killed run resumes where it stopped. Issue 25's reference asks for twice the budget:
`--budget-factor 2`. The figures go in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from charrnn.corpus import Corpus
from runcontract import LABELS, SPEC_FILE, TRAINED
from study.local import Move, design
from study.spec import MIN_EVALS, StudySpec, fit_to_corpus, load_spec

FIRST_SEED = 2000  # the study's own: 1000 + seed x seeds + k (local design), seed + 1 ... (repeats)
LEVEL = 0.95
TARGET = 0.90  # issue 25: the share of effects whose reference must lie inside the study's intervals


class SetupError(ValueError):
    """The run directory cannot give a reference (no finished local design, corpus changed): one line."""


@dataclass(frozen=True)
class Study:
    """What the study's local design ran: its spec as the study ran it, corpus, center, moves and budget."""

    run_dir: Path
    spec: StudySpec
    corpus: Corpus
    center: dict
    moves: tuple[Move, ...]
    budget_chars: int
    steps: int
    seeds: tuple[int, ...]
    uniform: float  # log2(vocabulary size): the score of a trial that learned nothing


@dataclass(frozen=True)
class Point:
    """One reference trial: move 0 is the center, move k the k-th of study.json's `local.moves`."""

    move: int
    param: str  # "" for the center
    label: str
    seed: int
    config: dict  # the flat TrainConfig

    def key(self) -> tuple:
        return (self.move, self.param, self.label, self.seed, int(self.config["budget_chars"]))


@dataclass(frozen=True)
class Comparison:
    """The reference against the study: `table` has one row per move compared (param, label, study_effect,
    ci_low, ci_high, study_se, reference, reference_se, n_seeds, inside, z); `inside` of `compared` moves lie
    inside, the issue's criterion; `consistent` of `with_z` differ by less than their joint noise, a second view."""

    table: pd.DataFrame
    inside: int
    compared: int
    share: float
    share_low: float
    share_high: float
    level: float = LEVEL
    consistent: int = 0  # moves whose gap is within the level's normal quantile of both standard errors (|z|)
    with_z: int = 0  # ... of the moves where both have a standard error

    @property
    def meets_target(self) -> bool:
        return self.compared > 0 and self.share >= TARGET


# ---- what the study ran -----------------------------------------------------------------------------------------

def load_study(run_dir: str | Path) -> Study:
    """The study's local design, with the spec and corpus as the study had them (as `study.run --resume` rebuilds
    them: spec.toml fitted to the corpus, then the recorded time plan). Raises SetupError."""
    from study.inputs import UsageError, load_checked_corpus
    from study.rundir import RunDir
    from study.timeplan import TimePlan, apply_plan

    run_dir = Path(run_dir)
    saved = RunDir(run_dir).read_study()
    if saved is None:
        raise SetupError(f"{run_dir} is not a run directory (no study.json)")
    local = saved.get("local")
    if not isinstance(local, dict) or "chosen" not in local:
        raise SetupError(f"{run_dir} has no finished local design (study.json has no local.chosen yet)")
    spec = load_spec(run_dir / SPEC_FILE)
    inv, recorded = saved.get("invocation") or {}, saved.get("corpus") or {}
    paths = [p for p in (inv.get("corpus_path"), recorded.get("path"), recorded.get("name")) if p]
    corpus, tried = None, []
    for path in paths:
        try:
            candidate = load_checked_corpus(spec, path, inv.get("encoding", "utf-8"))
        except UsageError as exc:
            tried.append(str(exc))
            continue
        if candidate.sha256 == recorded.get("sha256"):
            corpus = candidate
            break
        tried.append(f"{path}: sha256 differs from the study's")
    if corpus is None:
        raise SetupError(f"the study's corpus cannot be found unchanged ({'; '.join(tried) or 'no path recorded'})")
    split = {k: v for k, v in corpus.describe().items() if k.endswith("_chars")}
    if split != {k: recorded.get(k) for k in split}:
        raise SetupError(f"the corpus splits as {split}, the study's as {recorded}: not the same text to train on")
    spec, _ = fit_to_corpus(spec, len(corpus.train), len(corpus.val))
    if saved.get("plan"):
        spec = apply_plan(spec, TimePlan.from_dict(saved["plan"]))
    moves = tuple(Move(**m) for m in local["moves"])
    if list(moves) != design(spec, local["center"]):  # the recorded moves are the study's decision: they are used
        print("warning: this version's study.local.design of the spec differs from the moves study.json records",
              file=sys.stderr)
    return Study(run_dir=run_dir, spec=spec, corpus=corpus, center=dict(local["center"]),
                 moves=moves, budget_chars=int(local["budget_chars"]),
                 steps=int(local.get("steps") or 0), seeds=tuple(int(s) for s in local["seeds"]),
                 uniform=math.log2(max(len(corpus.vocab), 2)))


def param_space(spec: StudySpec, center: dict, budget_chars: int) -> dict:
    """The local stage's Tune param space (study/stages/local.py), at `budget_chars`."""
    return {**spec.fixed, **spec.run_settings(), **center, "budget_chars": budget_chars, "eval_at": [],
            "evals_per_trial": MIN_EVALS}


def trial_config(space: dict, point: dict) -> dict:
    """The flat TrainConfig that study.trainable.run_trial builds from Tune's config on a CPU, one thread."""
    return {**{k: v for k, v in {**space, **point}.items() if k not in LABELS}, "device": "cpu", "threads": 1}


def reference_points(study: Study, seeds: list[int], budget_chars: int,
                     params: list[str] | None = None) -> list[Point]:
    """Every reference trial, in the order study.local.points runs them: seed by seed, the center first, then each
    move (only those of `params`, if given)."""
    space = param_space(study.spec, study.center, budget_chars)
    moves = [(k, m) for k, m in enumerate(study.moves, start=1) if params is None or m.param in params]
    configs = [(0, "", "center", dict(study.center))] + [(k, m.param, m.label, {**study.center, m.param: m.value})
                                                         for k, m in moves]
    return [Point(move=k, param=param, label=label, seed=s,
                  config=trial_config(space, {**values, "seed": s, "moved": param}))
            for s in seeds for k, param, label, values in configs]


# ---- training ---------------------------------------------------------------------------------------------------

_WORKER: dict = {}  # one process's corpus arrays, set once by `_init_worker` (sent once, not once per trial)


def _init_worker(train_ids: np.ndarray, val_ids: np.ndarray, vocab_chars: str) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER.update(train=train_ids, val=val_ids, vocab=vocab_chars)


def _start_worker(*data) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop; running trials finish
    _init_worker(*data)


def _train(config: dict) -> dict:
    from charrnn.config import TrainConfig
    from charrnn.corpus import Vocab
    from charrnn.train import train

    # An exception is a bug here, not a failed trial: it stops the run (which resumes), never a silent uniform guess.
    result = train(TrainConfig.from_flat(config), _WORKER["train"], _WORKER["val"], Vocab(_WORKER["vocab"]))
    return {"status": result.status, "best_val_bpc": _finite(result.best_val_bpc), "chars_seen": result.chars_seen,
            "wall_s": result.wall_s}


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _record(point: Point, outcome: dict) -> dict:
    return {"move": point.move, "param": point.param, "label": point.label, "seed": point.seed,
            "budget_chars": int(point.config["budget_chars"]), **outcome}


def read_results(path: Path) -> list[dict]:
    """The records of a results file (a line cut short by a kill is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def run_points(points: list[Point], corpus, val_chars: int, results: Path, jobs: int) -> list[dict]:
    """Train the points not yet in `results` (appending each as it ends) and return every point's record."""
    done = {(r["move"], r["param"], r["label"], r["seed"], r["budget_chars"]): r for r in read_results(results)}
    todo = [p for p in points if p.key() not in done]
    total, start, finished = len(points), time.monotonic(), 0
    print(f"{total} trials, {total - len(todo)} already in {results}; {len(todo)} to train with {jobs} at once",
          flush=True)
    data = (corpus.train, corpus.val[:val_chars], corpus.vocab.chars)
    results.parent.mkdir(parents=True, exist_ok=True)
    if results.exists() and not results.read_bytes().endswith(b"\n") and results.stat().st_size:
        with results.open("a", encoding="utf-8") as f:  # a line cut short by a kill ends here, not in the next
            f.write("\n")

    def note(point: Point, outcome: dict) -> None:
        nonlocal finished
        record = _record(point, outcome)
        with results.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        done[point.key()] = record
        finished += 1
        elapsed = time.monotonic() - start
        left = elapsed / finished * (len(todo) - finished)
        score = f"{record['best_val_bpc']:.4f}" if record["best_val_bpc"] is not None else record["status"]
        name = f"{point.param} {point.label}" if point.param else "center"
        print(f"[{total - len(todo) + finished}/{total} | {_clock(elapsed)} elapsed, about {_clock(left)} left] "
              f"{name} seed {point.seed}: {score}", flush=True)

    if jobs == 1:
        _init_worker(*data)
        for p in todo:
            note(p, _train(p.config))
    elif todo:
        pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                                   initargs=data)
        futures, noted = {pool.submit(_train, p.config): p for p in todo}, set()
        try:
            for future in as_completed(futures):
                note(futures[future], future.result())
                noted.add(future)
        finally:  # stopped: the trials already running finish and are kept, the others never start
            pool.shutdown(wait=True, cancel_futures=True)
            for future, p in futures.items():
                if future not in noted and future.done() and not future.cancelled() and not future.exception():
                    note(p, future.result())
    return [done[p.key()] for p in points if p.key() in done]


# ---- the comparison ---------------------------------------------------------------------------------------------

def reference_effects(records: pd.DataFrame, moves: pd.DataFrame, uniform: float) -> pd.DataFrame:
    """Each move's reference effect: the mean over seeds of y(move, s) - y(center, s) and its standard error.

    Args:
        records: one row per trial (move: 0 the center, k the k-th move; seed; status; best_val_bpc).
        moves: one row per move (move, param, label), in the study's order.
        uniform: the score of a diverged or failed trial.

    Returns:
        `moves` with effect, se, n_seeds and n_failed (NaN effect where no seed pairs with the center).
    """
    score = pd.to_numeric(records["best_val_bpc"]).astype(float)
    trained = records["status"].isin(TRAINED) & np.isfinite(score)
    cells = records.assign(y=score.where(trained, uniform), failed=(~trained).astype(float))
    cells = cells.drop_duplicates(["move", "seed"])
    rows = [0, *moves["move"]]
    y = cells.pivot(index="move", columns="seed", values="y").reindex(rows)
    failed = cells.pivot(index="move", columns="seed", values="failed").reindex(rows).fillna(0.0) > 0
    out = []
    for m in moves.itertuples(index=False):
        d = (y.loc[m.move] - y.loc[0]).dropna().to_numpy(float)
        paired = (y.loc[m.move] - y.loc[0]).notna()
        n = len(d)
        out.append({"move": m.move, "param": m.param, "label": m.label,
                    "effect": float(d.mean()) if n else math.nan,
                    "se": float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan, "n_seeds": n,
                    "n_failed": int((failed.loc[m.move] & paired).sum() + (failed.loc[0] & paired).sum())})
    return pd.DataFrame(out, columns=["move", "param", "label", "effect", "se", "n_seeds", "n_failed"])


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact binomial interval for a share of `k` in `n`."""
    if n == 0:
        return math.nan, math.nan
    a = 1 - level
    low = float(stats.beta.ppf(a / 2, k, n - k + 1)) if k > 0 else 0.0
    high = float(stats.beta.ppf(1 - a / 2, k + 1, n - k)) if k < n else 1.0
    return low, high


def compare(study: pd.DataFrame, reference: pd.DataFrame, level: float = LEVEL) -> Comparison:
    """Which moves' reference effects lie inside the study's intervals.

    Args:
        study: one row per move (param, label, effect, ci_low, ci_high): the study's effects.
        reference: one row per move (param, label, effect, se, n_seeds): the reference's.
        level: the level of the interval on the share.

    Returns:
        A `Comparison` over the moves that have both a study interval and a reference effect, in the study's order.
    """
    keys = ["param", "label"]
    for name, frame in (("study", study), ("reference", reference)):
        if frame.duplicated(keys).any():
            raise ValueError(f"the {name} names a move twice: {frame[frame.duplicated(keys)][keys].values.tolist()}")
    study = study if "se" in study else study.assign(se=math.nan)
    s = study[keys + ["effect", "ci_low", "ci_high", "se"]].rename(columns={"effect": "study_effect",
                                                                           "se": "study_se"})
    r = reference[keys + ["effect", "se", "n_seeds"]].rename(columns={"effect": "reference", "se": "reference_se"})
    t = s.merge(r, on=keys, how="inner", sort=False)
    t = t[np.isfinite(t[["study_effect", "ci_low", "ci_high", "reference"]].astype(float)).all(axis=1)]
    t = t.assign(inside=(t["ci_low"] <= t["reference"]) & (t["reference"] <= t["ci_high"])).reset_index(drop=True)
    # The reference has noise of its own, which the study's interval does not allow for: `z` is the gap in units
    # of both standard errors, NaN where either has none.
    t["z"] = (t["reference"] - t["study_effect"]) / np.hypot(t["study_se"].astype(float),
                                                             t["reference_se"].astype(float))
    k, n = int(t["inside"].sum()), len(t)
    low, high = clopper_pearson(k, n, level)
    z = t["z"].to_numpy(float)
    return Comparison(table=t, inside=k, compared=n, share=k / n if n else math.nan, share_low=low,
                      share_high=high, level=level,
                      consistent=int((np.abs(z[np.isfinite(z)]) <= stats.norm.ppf(0.5 + level / 2)).sum()),
                      with_z=int(np.isfinite(z).sum()))


def study_effects(run_dir: Path) -> pd.DataFrame:
    """The study's effects as its report states them (reports._effects.local_effects: param, label, effect,
    ci_low, ci_high, ...), one row per move in study.json's order."""
    from reports import load_run
    from reports._effects import local_effects

    effects = local_effects(load_run(run_dir))
    if effects is None:
        raise SetupError(f"{run_dir}: the report finds no local design")
    return effects.moves


def format_table(c: Comparison) -> str:
    lines = [f"{'move':<24} {'study effect [95% CI]':>28} {'reference ± se (seeds)':>26}  inside      z"]
    for r in c.table.itertuples(index=False):
        study = f"{r.study_effect:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
        ref = f"{r.reference:+.3f} ± {r.reference_se:.3f} ({r.n_seeds})"
        lines.append(f"{(r.param + ' ' + r.label):<24} {study:>28} {ref:>26}  {'yes' if r.inside else 'NO':<6} "
                     f"{r.z:+6.2f}")
    lines.append(f"inside: {c.inside} of {c.compared} = {c.share:.0%} (95% Clopper-Pearson {c.share_low:.0%}-"
                 f"{c.share_high:.0%}); target {TARGET:.0%}: {'met' if c.meets_target else 'not met'}")
    lines.append(f"within the noise of both (|z| <= {stats.norm.ppf(0.5 + c.level / 2):.2f}): {c.consistent} of "
                 f"{c.with_z}")
    return "\n".join(lines)


def _plain(x):
    if isinstance(x, (np.generic,)):
        x = x.item()
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _summary(c: Comparison) -> dict:
    return {"inside": c.inside, "compared": c.compared, "share": _plain(c.share),
            "share_ci": [_plain(c.share_low), _plain(c.share_high)], "meets_target": c.meets_target,
            "consistent": c.consistent, "with_z": c.with_z,
            "moves": [{k: _plain(v) for k, v in row.items()} for row in c.table.to_dict("records")]}


# ---- the command ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reference_effects", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a study's run directory with a finished local design")
    p.add_argument("--seeds", type=int, default=4, help="new seeds per configuration (default 4)")
    p.add_argument("--budget-factor", type=float, default=1.0,
                   help="the local budget times this (default 1; issue 25's reference: 2)")
    p.add_argument("--jobs", type=int, default=2, help="trials at once, one process and one thread each (default 2)")
    p.add_argument("--params", default="", help="only the moves of these hyperparameters (comma-separated)")
    p.add_argument("--first-seed", type=int, default=FIRST_SEED, help=f"the first new seed (default {FIRST_SEED})")
    p.add_argument("--out", type=Path, default=None, help="summary JSON (default RUN-reference.json beside RUN); "
                                                          "the trials go to the same name with .jsonl")
    a = p.parse_args(argv)
    try:
        if a.seeds < 1 or a.jobs < 1 or not a.budget_factor > 0:
            raise SetupError("--seeds and --jobs must be >= 1 and --budget-factor > 0")
        return _main(a, argv)
    except SetupError as exc:
        print(f"reference_effects: {exc}", file=sys.stderr)
        return 2


def _main(a: argparse.Namespace, argv: list[str] | None) -> int:
    started, load_start = time.monotonic(), os.getloadavg()
    study = load_study(a.run_dir)
    seeds = [a.first_seed + k for k in range(a.seeds)]
    if set(seeds) & set(study.seeds):
        raise SetupError(f"seeds {seeds} overlap the study's {list(study.seeds)}: choose another --first-seed")
    params = [s for s in a.params.split(",") if s] or None
    unknown = sorted(set(params or []) - {m.param for m in study.moves})
    if unknown:
        raise SetupError(f"--params {','.join(unknown)}: not moved by the local design "
                         f"({', '.join(dict.fromkeys(m.param for m in study.moves))})")
    budget = int(round(study.budget_chars * a.budget_factor))
    out = a.out or study.run_dir.parent / f"{study.run_dir.name}-reference.json"
    results = out.with_suffix(".jsonl")
    points = reference_points(study, seeds, budget, params)
    print(f"reference for {study.run_dir}: center and {len(points) // len(seeds) - 1} moves, seeds {seeds}, "
          f"{budget:,} characters a trial (the study: {study.budget_chars:,}, seeds {list(study.seeds)}); "
          f"{os.cpu_count()} CPUs, load {load_start[0]:.2f}", flush=True)
    # Stopped by either signal (a background job starts with SIGINT ignored): the trials done so far still compare.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    interrupted = False
    try:
        records = run_points(points, study.corpus, study.spec.val_chars, results, a.jobs)
    except KeyboardInterrupt:
        interrupted = True
        wanted = {p.key() for p in points}
        records = [r for r in read_results(results)
                   if (r["move"], r["param"], r["label"], r["seed"], r["budget_chars"]) in wanted]
        print(f"stopped: {len(records)} of {len(points)} trials done; run the same command to resume", flush=True)
    frame = pd.DataFrame(records, columns=["move", "param", "label", "seed", "status", "best_val_bpc"])
    moves = pd.DataFrame([{"move": k, "param": m.param, "label": m.label} for k, m in enumerate(study.moves, 1)
                          if params is None or m.param in params])
    reference = reference_effects(frame, moves, study.uniform)
    effects = study_effects(study.run_dir)
    comparison = compare(effects, reference)
    print(format_table(comparison))
    # A center that diverged in a seed moves every effect of that seed by the same uniform guess. The second view
    # leaves those seeds out: it tells effects that do not hold from a center that does not train reliably.
    unstable = sorted(int(s) for s in frame[(frame["move"] == 0) & ~frame["status"].isin(TRAINED)]["seed"])
    trained_only = None
    if unstable:
        trained_only = compare(effects, reference_effects(frame[~frame["seed"].isin(unstable)], moves, study.uniform))
        print(f"\nthe center diverged or failed with seeds {unstable}; on the other seeds only:")
        print(format_table(trained_only))
    wall = time.monotonic() - started
    summary = {
        "run": str(study.run_dir), "command": "python -m benchmarks.reference_effects " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "study_budget_chars": study.budget_chars, "budget_factor": a.budget_factor, "budget_chars": budget,
        "study_steps": study.steps, "study_seeds": list(study.seeds), "seeds": seeds, "params": params,
        "center": study.center, "uniform_bpc": study.uniform, "trials": len(points), "trials_done": len(records),
        "complete": len(records) == len(points) and not interrupted, "wall_s": round(wall, 1),
        "cpus": os.cpu_count(), "load_start": list(load_start), "load_end": list(os.getloadavg()),
        "target": TARGET, **_summary(comparison), "results": str(results), "center_failed_seeds": unstable,
        "center_trained_only": None if trained_only is None else _summary(trained_only),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    print(f"wall {_clock(wall)}; summary in {out}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
