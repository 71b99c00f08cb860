"""How long the report takes as studies grow: `python -m benchmarks.report_scale --trials 60 200 500 2000`.

Writes a known-answer run directory of n trials (the calibration harness's 11-hyperparameter "sherlock-11" shape,
with ASHA's early stopping, diverged trials, three seed repeats and sample metrics) through the results contract,
times `python -m reports.build` on it in this process (load, analysis, figures, HTML/Markdown), and prints one line
per size with the wall time, the CPU time of this process (the figure that does not depend on what else runs on
a shared machine; the analysis is single-threaded) and the leader it found.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from benchmarks.calibrate import SHAPES, synthetic_run
from reports._load import running_best
from runcontract import CURVES_FILE, SAMPLES_FILE, SCHEMA_VERSION, STUDY_FILE, TRIALS_FILE


def write_synthetic_run(path: pathlib.Path, n_trials: int, *, seed: int = 0, shape: str = "sherlock-11",
                        repeats: int = 3) -> pathlib.Path:
    """A run directory (study.json + the three Parquet tables) of `n_trials` search trials of a calibration shape,
    plus `repeats` seed repeats of the best one and two sample metrics per evaluation."""
    sh = SHAPES[shape]
    run = synthetic_run(sh, seed=seed, n_trials=n_trials)
    rng = np.random.default_rng(seed + 1)
    trials, curves = run.trials.copy(), run.curves.copy()
    best = trials.loc[trials["best_val_bpc"].idxmin()]
    rep_rows, rep_curves = [], []
    for r in range(repeats):
        tid = f"r{r}"
        c = curves[curves["trial_id"] == best["trial_id"]].assign(trial_id=tid)
        c = c.assign(val_bpc=c["val_bpc"] * np.exp(rng.normal(0, 0.012)))
        c = c.assign(best_val_bpc=running_best(c))
        rep_curves.append(c)
        rep_rows.append({**best.to_dict(), "trial_id": tid, "role": "repeat", "repeat_of": best["trial_id"],
                         "best_val_bpc": float(c["val_bpc"].min())})
    trials = pd.concat([trials, pd.DataFrame(rep_rows)], ignore_index=True)
    curves = pd.concat([curves, *rep_curves], ignore_index=True)
    samples = curves[["trial_id", "chars_seen"]].assign(
        temperature=0.8, text="Holmes said the door was open.", kind="eval",
        known_word_frac=np.clip(1.2 - 0.2 * curves["val_bpc"] + rng.normal(0, 0.02, len(curves)), 0, 1),
        copy20_frac=np.clip(rng.normal(0.05, 0.01, len(curves)), 0, 1))
    path.mkdir(parents=True, exist_ok=True)
    for df in (trials, curves, samples):
        df["chars_seen"] = df["chars_seen"].astype("int64")
    trials.to_parquet(path / TRIALS_FILE, index=False)
    curves.to_parquet(path / CURVES_FILE, index=False)
    samples.to_parquet(path / SAMPLES_FILE, index=False)
    space = {}
    for s in sh.specs:
        space[s.name] = ({"type": "categorical", "choices": list(s.choices)} if s.is_categorical else
                         {"type": s.kind, "low": int(s.low) if s.kind == "int" else s.low,
                          "high": int(s.high) if s.kind == "int" else s.high, "log": s.log})
    study = {**run.study, "schema_version": SCHEMA_VERSION, "name": f"bench-{shape}-{n_trials}", "mode": "min",
             "search_space": space, "num_trials": n_trials, "repeats": repeats, "seed": seed,
             "sampler": {"name": "RandomSampler", "seed": seed}}
    (path / STUDY_FILE).write_text(json.dumps(study), encoding="utf-8")
    return path


def bench(n_trials: list[int], *, seed: int = 0, n_bootstrap: int = 100) -> pd.DataFrame:
    """Build the report of a synthetic run of each size; one row per size: trials, seconds, leader."""
    from reports.build import build_report

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in n_trials:
            run_dir = write_synthetic_run(pathlib.Path(tmp) / f"run{n}", n, seed=seed)
            load0, t0, c0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
            out = build_report(run_dir, n_bootstrap=n_bootstrap, seed=seed)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            t = pd.read_csv(out / "importance.csv")
            rows.append({"trials": n, "seconds": round(secs, 1), "cpu_seconds": round(cpu, 1),
                         "load": round((load0 + os.getloadavg()[0]) / 2, 1),
                         "leader": t.sort_values("rank")["param"].iloc[0]})
            print(f"{n:5d} trials: {secs:6.1f} s wall, {cpu:6.1f} s CPU (load average ~{rows[-1]['load']}), "
                  f"leader {rows[-1]['leader']}", flush=True)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[60, 200, 500])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=100)
    args = parser.parse_args(argv)
    if min(args.trials) < 1 or args.bootstrap < 0:
        parser.error("--trials must be >= 1 and --bootstrap >= 0")
    bench(args.trials, seed=args.seed, n_bootstrap=args.bootstrap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
