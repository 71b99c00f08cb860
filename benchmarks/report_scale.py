"""How long the report takes as studies grow: `python -m benchmarks.report_scale --trials 60 200 500 2000`.

Writes a known-answer run directory of n trials (the calibration harness's 11-hyperparameter "sherlock-11" shape,
with ASHA's early stopping, diverged trials, three seed repeats and sample metrics) through the results contract,
times `python -m reports.build` on it in this process (load, analysis, figures, HTML/Markdown), and prints one line
per size with the wall time, the CPU time of this process (the figure that does not depend on what else runs on
a shared machine; the analysis is single-threaded) and the leader it found.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import pandas as pd

from benchmarks.synthetic import write_shape_run


def bench(n_trials: list[int], *, seed: int = 0, n_bootstrap: int = 100) -> pd.DataFrame:
    """Build the report of a synthetic run of each size; one row per size: trials, seconds, leader."""
    from reports.build import build_report

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in n_trials:
            run_dir = write_shape_run(pathlib.Path(tmp) / f"run{n}", n, seed=seed)
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
