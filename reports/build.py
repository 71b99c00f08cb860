"""Build the sensitivity report of a run directory: `python -m reports.build RUN_DIR [--out DIR]`.

`python -m reports.build RUN_A RUN_B ... --out DIR` pools the search trials of several studies of one spec.

Reads only the results contract (study.json, trials/curves/samples.parquet) and writes index.html (self-contained),
report.md with the PNG figures beside it, importance.csv, and effects.csv for a run with a local design.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

from reports import _plots
from reports._analysis import Analysis, analyze
from reports._document import document
from reports._load import RunDirError, load_runs
from reports._output import neutralize_csv, write_files
from reports._render import Details, Figure, to_html, to_markdown

CSV_COLUMNS = ("param", "importance", "ci_low", "ci_high", "rank", "within_noise")
EFFECT_COLUMNS = ("param", "label", "kind", "value", "pool", "n_seeds", "effect", "ci_low", "ci_high", "se", "df",
                  "n_failed")  # effects.csv: the local design's moves, in the study's order


def _drawn(blocks: list, figures: dict[str, bytes]) -> list:
    """The blocks without the figures that have no data (inside Details sections too)."""
    out = []
    for b in blocks:
        if isinstance(b, Details):
            out.append(dataclasses.replace(b, blocks=tuple(_drawn(list(b.blocks), figures))))
        elif not isinstance(b, Figure) or b.name in figures:
            out.append(b)
    return out


def write_report(analysis: Analysis, out_dir: pathlib.Path) -> pathlib.Path:
    """Render an analysis into `out_dir` (created if needed; its other files are left alone); returns `out_dir`."""
    figures = _plots.draw_all(analysis)
    blocks = _drawn(document(analysis), figures)
    title = f"Sensitivity report: {analysis.run.study.get('name', '')}"
    t = analysis.importance.table
    extra = [c for c in t.columns if c not in CSV_COLUMNS]
    files = {**figures,
             "index.html": to_html(blocks, figures, title).encode("utf-8"),
             "report.md": to_markdown(blocks).encode("utf-8"),
             "importance.csv": neutralize_csv(t[list(CSV_COLUMNS) + extra]).to_csv(index=False).encode("utf-8")}
    if analysis.effects is not None:
        moves = analysis.effects.moves[list(EFFECT_COLUMNS)].astype({"value": str})
        files["effects.csv"] = neutralize_csv(moves).to_csv(index=False).encode("utf-8")
    # Only these files, created new and renamed into place: nothing in a received run directory's report/
    # (a symbolic link to the reader's files) is written through (reports._output).
    return write_files(out_dir, files)


def build_report(run_dir: str | pathlib.Path | list[str | pathlib.Path], out_dir: str | pathlib.Path | None = None,
                 *, seed: int = 0, n_bootstrap: int = 100, min_trials: int | None = None) -> pathlib.Path:
    """Build the report of one run directory, or of several pooled (`reports._load.load_runs`).

    Args:
        run_dir: a run directory written by study.run (the results contract), or a list of them.
        out_dir: where to write; default RUN_DIR/report (required when pooling: no run's own report is replaced).
        seed: seed of every randomized step (bootstrap, surrogates); same seed, same report.
        n_bootstrap: bootstrap resamples per interval.
        min_trials: trials required at the compared budget (default: 90% of the valid search trials).

    Returns:
        The output directory.

    Raises:
        RunDirError: `run_dir` is not a readable run directory.
    """
    dirs = list(run_dir) if isinstance(run_dir, (list, tuple)) else [run_dir]
    if out_dir is None and len(dirs) > 1:
        raise RunDirError("pooling several run directories needs --out (no run's own report is replaced)")
    run = load_runs(dirs)
    out = pathlib.Path(out_dir) if out_dir is not None else pathlib.Path(dirs[0]) / "report"
    analysis = analyze(run, n_bootstrap=n_bootstrap, random_state=seed, min_trials=min_trials)
    return write_report(analysis, out)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for bad input)."""
    parser = argparse.ArgumentParser(prog="python -m reports.build", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=pathlib.Path, nargs="+",
                        help="run directory (study.json + Parquet tables); several of one spec are pooled "
                             "(needs --out)")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="output directory (default RUN_DIR/report)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and surrogates (default 0)")
    parser.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples (default 100)")
    parser.add_argument("--min-trials", type=int, default=None,
                        help="trials needed at the compared budget (default 90%% of the valid search trials)")
    args = parser.parse_args(argv)
    if args.bootstrap < 0:
        parser.error("--bootstrap must be >= 0")
    try:
        out = build_report(args.run_dir, args.out, seed=args.seed, n_bootstrap=args.bootstrap,
                           min_trials=args.min_trials)
    except RunDirError as exc:
        print(f"reports.build: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. --out not writable
        print(f"reports.build: cannot write the report: {exc}", file=sys.stderr)
        return 2
    print(out / "index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
