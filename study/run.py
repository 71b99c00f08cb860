"""Run a hyperparameter study of CharRNNs with Ray Tune + Optuna.

    python -m study.run --trials 50
    python -m study.run --spec smoke --trials 4 --out runs/smoke
    python -m study.run --resume runs/sherlock-20261124T190000Z
"""
from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import platform
import secrets
import signal
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from charrnn.config import BASE_LR
from charrnn.pacer import chars_to_give
from runcontract import SCHEMA_VERSION, SPEC_FILE
from study.cluster import TRIALS_PER_GPU, concurrent_trials, local_only
from study.guard import check_trusted, lock
from study.inputs import (UsageError, check_args, check_out_dir, default_out, is_run_dir, load_checked_corpus,
                          resolve_spec, study_name)
from study.plan import Plan, fit_to_minutes
from study.rundir import RunDir, RunDirWriteError
from study.spec import SpecError, fit_to_corpus, load_spec
from study.timeplan import PlanError, TimePlan, apply_plan


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and status 2, instead of usage + message
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m study.run", description="Run a CharRNN hyperparameter study (Ray Tune + Optuna).")
    p.add_argument("--trials", type=int, help="number of search trials (default: the spec's, 50 for sherlock)")
    p.add_argument("--spec", help="job spec TOML, or a bundled spec: sherlock (the default), shakespeare, smoke")
    p.add_argument("--corpus", help="corpus name (sherlock, shakespeare) or path to a UTF-8 text file")
    p.add_argument("--encoding", default="utf-8", help="text encoding of the corpus (default utf-8)")
    p.add_argument("--out", help="run directory (default: runs/<study name>-<UTC timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted study in RUN_DIR")
    p.add_argument("--max-concurrent", type=int, help="trials running at once (default: as resources allow)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial; torch threads = this (default 1)")
    p.add_argument("--gpus-per-trial", type=float,
                   help="GPUs per trial, fractions share a GPU (default: 0.25 when the cluster has GPUs, else 0)")
    p.add_argument("--seed", type=int, help="seed of the sampler and of the trials (default: the spec's)")
    p.add_argument("--repeats", type=int,
                   help="retrain the best config with this many other seeds (default: the spec's, 2 for sherlock)")
    p.add_argument("--final-chars", type=int,
                   help="train the best configuration for up to this many characters as the final model, scored "
                        "once on the test text (default: the spec's; 0 skips the final model)")
    p.add_argument("--final-minutes", type=float,
                   help="at most this many minutes for the final model: its budget shrinks to fit (default: the "
                        "spec's; 0 = no limit)")
    p.add_argument("--minutes", type=float,
                   help="end the whole study within this many minutes: its speed is measured first and the "
                        "budgets, rungs and final model sized to fit (default: the spec's, 30 for sherlock; 0 = "
                        "the spec's budgets as written)")
    p.add_argument("--plan-from", metavar="RUN_DIR",
                   help="replay the time plan of the study in RUN_DIR exactly (its budgets and trials at once) "
                        "instead of measuring this machine")
    p.add_argument("--max-failures", type=int, default=1, help="retries of a crashing trial from its checkpoint")
    p.add_argument("--address", help="join this Ray cluster instead of starting a local one (or set RAY_ADDRESS)")
    p.add_argument("--storage", help="where Tune keeps checkpoints: a path or a pyarrow URI (default RUN/)")
    p.add_argument("--no-report", action="store_true", help="do not build the report at the end")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's and Optuna's start-up messages and the trials' own output")
    return p


def prepare(args: argparse.Namespace) -> Plan:
    """Check every input and load the corpus; raises UsageError. Starts nothing."""
    check_args(args)
    if args.resume:
        run_dir = Path(args.resume)
        if not is_run_dir(run_dir):
            raise UsageError(f"--resume {run_dir} is not a run directory (no study.json of a study)")
        saved = RunDir(run_dir).read_study()
        if saved["schema_version"] != SCHEMA_VERSION:
            raise UsageError(f"--resume {run_dir}: its tables are schema {saved['schema_version']}, this version "
                             f"writes schema {SCHEMA_VERSION}; its report still builds (python -m reports.build "
                             f"{run_dir}), but continuing it needs the version that started it")
        inv = saved["invocation"]
        check_trusted(run_dir, _experiment_dirs(inv["storage"], run_dir))
        try:
            spec = load_spec(run_dir / SPEC_FILE)
        except SpecError as exc:
            raise UsageError(str(exc)) from None
        corpus = load_checked_corpus(spec, inv["corpus_path"], inv["encoding"])
        if corpus.sha256 != saved["corpus"]["sha256"]:
            raise UsageError(f"the corpus {inv['corpus_path']} changed since the study started (sha256 differs)")
        spec, adjusted = fit_to_corpus(spec, len(corpus.train), len(corpus.val))  # as when it started
        time_plan = saved.get("plan")
        if time_plan:
            spec = apply_plan(spec, TimePlan.from_dict(time_plan))
        return Plan(spec, corpus, run_dir, inv["trials"], inv["seed"], inv["repeats"],
                    inv.get("final_chars", 0), inv.get("final_minutes", 0.0), inv["cpus_per_trial"],
                    inv["gpus_per_trial"], inv["max_concurrent"], args.max_failures,
                    args.address or os.environ.get("RAY_ADDRESS") or inv.get("address"), inv["storage"],
                    inv["encoding"], True, not args.no_report,
                    study_name=saved.get("name", spec.name), adjusted=adjusted, verbose=args.verbose,
                    minutes=inv.get("minutes", 0.0), time_plan=time_plan,
                    final_minutes_asked=inv.get("final_minutes_asked", False))
    spec = resolve_spec(args.spec)
    corpus = load_checked_corpus(spec, args.corpus, args.encoding)
    spec, adjusted = fit_to_corpus(spec, len(corpus.train), len(corpus.val))
    name = study_name(spec, corpus)
    run_dir = Path(args.out) if args.out else default_out(name)
    check_out_dir(run_dir)
    storage = _study_storage(args.storage, run_dir, name)
    time_plan = _replayed_plan(args.plan_from) if getattr(args, "plan_from", None) else None
    if time_plan:
        spec = apply_plan(spec, TimePlan.from_dict(time_plan))
    return Plan(
        spec=spec,
        corpus=corpus,
        run_dir=run_dir,
        trials=args.trials or spec.trials,
        seed=spec.seed if args.seed is None else args.seed,
        repeats=spec.repeats if args.repeats is None else args.repeats,
        final_chars=spec.final["chars"] if args.final_chars is None else args.final_chars,
        final_minutes=spec.final["minutes"] if args.final_minutes is None else args.final_minutes,
        cpus_per_trial=args.cpus_per_trial or 1.0,
        gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent,
        max_failures=args.max_failures,
        address=args.address or os.environ.get("RAY_ADDRESS"),
        storage=storage,
        encoding=args.encoding,
        resume=False,
        report=not args.no_report,
        study_name=name,
        adjusted=adjusted,
        verbose=args.verbose,
        minutes=(time_plan or {}).get("minutes") or (spec.minutes if args.minutes is None else args.minutes),
        time_plan=time_plan,
        final_minutes_asked=args.final_minutes is not None,
    )


def _replayed_plan(run_dir: str) -> dict:
    """The time plan recorded in another study's study.json (--plan-from), marked `replayed`, with the budget its
    final model decided (study.json `final`) as `final_budget_chars` and `final_chars_per_s` where it recorded one,
    so that the final model is replayed too; raises UsageError."""
    path = Path(run_dir)
    if not is_run_dir(path):
        raise UsageError(f"--plan-from {path} is not a run directory (no study.json of a study)")
    saved = RunDir(path).read_study()
    time_plan = saved.get("plan")
    if not time_plan:
        raise UsageError(f"--plan-from {path}: that study ran without a time plan (--minutes 0)")
    try:
        TimePlan.from_dict(time_plan)
    except (TypeError, KeyError) as exc:
        raise UsageError(f"--plan-from {path}: its plan cannot be read ({exc})") from None
    final = saved.get("final") or {}
    decided: dict = {}
    if final.get("budget_chars") and final.get("decided_chars_per_s"):
        decided = {"final_budget_chars": chars_to_give(final),
                   "final_chars_per_s": float(final["decided_chars_per_s"])}
    race = {c["candidate"]: [int(c["budget_chars"]), float(c["decided_chars_per_s"])]
            for c in (final.get("race") or {}).get("candidates", [])
            if c.get("budget_chars") and c.get("decided_chars_per_s")}
    if race:
        decided["final_race"] = race
    return {**time_plan, "replayed": True, **decided}


def _study_storage(storage: str | None, run_dir: Path, name: str) -> str:
    """Where Tune keeps this study's experiments: the run directory, or a directory of the study's own under
    --storage (`NAME-<UTC timestamp>-<random>`), so that studies sharing a --storage never share an experiment."""
    if not storage or ("://" not in storage and Path(storage).resolve() == run_dir.resolve()):
        return str(run_dir.resolve())
    own = f"{name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    return f"{storage.rstrip('/')}/{own}" if "://" in storage else str(Path(storage).resolve() / own)


def _experiment_dirs(storage: str, run_dir: Path) -> list[Path]:
    """Tune's experiment directories of a study whose --storage is a local path outside its run directory."""
    if "://" in storage or Path(storage).resolve() == run_dir.resolve():
        return []
    return sorted(Path(storage).glob("tune*"))


def study_metadata(plan: Plan) -> dict:
    """study.json: the results contract's description of the study."""
    from study.space import describe_space

    spec = plan.spec
    versions = {"python": platform.python_version()}
    for dist in ("torch", "ray", "optuna", "charrnn-study", "pandas", "pyarrow"):
        try:
            versions[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist.replace("-", "_")] = None
    return {
        "name": plan.study_name,
        "spec": spec.name,
        "metric": "val_bpc",
        "mode": "min",
        "budget_chars": spec.budget_chars,
        "search_space": describe_space(spec),
        "fixed": spec.fixed,
        "corpus": plan.corpus.describe(),
        "eval": {"val_chars": min(spec.val_chars or len(plan.corpus.val), len(plan.corpus.val)),
                 "eval_at_chars": spec.eval_at(), "evals_per_rung": spec.evals_per_rung},
        "lr_base": ({"searched_as": "lr_scale", "rates": BASE_LR} if "lr_scale" in {*spec.search, *spec.fixed}
                    else {"searched_as": "lr"}),
        "repeat_chars": spec.repeat_chars or spec.budget_chars,
        "final": {"chars": plan.final_chars, "minutes": plan.final_minutes, "evals": spec.final["evals"],
                  "val_chars": spec.final["val_chars"] or len(plan.corpus.val), "patience": spec.final["patience"],
                  "min_delta": spec.final["min_delta"], "step_chars": spec.final["step_chars"] or None,
                  "test_chars": len(plan.corpus.test)},
        "sampler": {"name": "TPESampler" if spec.sampler["name"] == "tpe" else "RandomSampler", "seed": plan.seed,
                    **{k: v for k, v in spec.sampler.items() if k != "name"}},
        "scheduler": ({"name": "ASHA", "time_attr": "chars_seen", "grace_period": spec.grace_chars,
                       "reduction_factor": spec.scheduler["reduction_factor"], "max_t": spec.budget_chars,
                       "rungs": spec.rungs(), "min_steps": spec.min_steps,
                       "promotion": "at most floor(arrived / reduction_factor) per rung (study.schedule)"}
                      if spec.scheduler["name"] == "asha" else {"name": "FIFO"}),
        "seed": plan.seed,
        "num_trials": plan.trials,
        "repeats": plan.repeats,
        **({"adjusted": plan.adjusted} if plan.adjusted else {}),
        **({"plan": plan.time_plan} if plan.time_plan else {}),
        **({"plan_source": "replayed" if (plan.time_plan or {}).get("replayed") else "measured"}
           if plan.minutes > 0 else {}),
        "versions": versions,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "invocation": {
            "trials": plan.trials, "seed": plan.seed, "repeats": plan.repeats, "final_chars": plan.final_chars,
            "final_minutes": plan.final_minutes, "final_minutes_asked": plan.final_minutes_asked,
            "minutes": plan.minutes,
            "cpus_per_trial": plan.cpus_per_trial, "gpus_per_trial": plan.gpus_per_trial,
            "max_concurrent": plan.max_concurrent, "storage": plan.storage, "encoding": plan.encoding,
            "corpus_path": plan.corpus.path, "spec_path": spec.path, "address": plan.address,
        },
    }


def adjusted_note(plan: Plan) -> str:
    """The one line that says how the spec was fitted to a corpus smaller than it expects."""
    def show(v) -> str:
        return f"{v['low']:,}..{v['high']:,}" if isinstance(v, dict) else f"{v:,}"

    changes = "; ".join(f"{name} {show(a['to'])} instead of {show(a['from'])} ({a['why']})"
                        for name, a in plan.adjusted.items())
    return f"note: corpus {plan.corpus.name} is smaller than spec {plan.spec.name} expects: {changes}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = prepare(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if plan.adjusted and not plan.resume:
        print(adjusted_note(plan), file=sys.stderr)
    if plan.time_plan is not None and not plan.resume:
        final = plan.time_plan.get("final_budget_chars")
        print(TimePlan.from_dict(plan.time_plan).describe() + f" (replayed from {args.plan_from}"
              + (f", its final model's budget of {final:,} characters too" if final else "") + ")", flush=True)
        if plan.max_concurrent is None:
            plan.max_concurrent = int(plan.time_plan["parallel"])
    elif plan.minutes > 0 and not plan.resume and not plan.address:
        try:
            _plan_locally(plan)
        except PlanError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        held = lock(plan.run_dir)  # noqa: F841 - held (and the run directory this driver's) until the process ends
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot create the run directory {plan.run_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        if not plan.resume:
            RunDir(plan.run_dir).create(plan.spec.path, study_metadata(plan))
    except OSError as exc:
        print(f"error: cannot create the run directory {plan.run_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2

    if hasattr(signal, "SIGUSR2"):  # `kill -USR2 PID` prints every thread's stack (Tune takes SIGUSR1): a study
        signal.signal(signal.SIGUSR2, _print_stacks)  # that seems stuck says where, and goes on
    if plan.address is None:
        local_only()  # before Ray is imported: a local study listens on loopback only (study.cluster)
    from study.driver import run_study  # imports Ray: only after every input is known to be good
    from study.stopping import Interrupted, write_failure_message

    try:
        summary = run_study(plan)
    except UsageError as exc:  # found only once connected to the cluster (e.g. no GPUs there)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunDirWriteError as exc:
        print(write_failure_message(exc, plan.run_dir), file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt) as exc:
        name = getattr(exc, "signal_name", "SIGINT")
        print(f"stopped by {name}; finished trials are in {plan.run_dir}. Continue with:\n"
              f"  python -m study.run --resume {plan.run_dir}", file=sys.stderr)
        return 143 if name == "SIGTERM" else 130
    print(summary, flush=True)
    if plan.report:
        return _build_report(plan.run_dir)
    return 0


def _print_stacks(signum, frame) -> None:
    """Every Python thread's stack to stderr, from the main thread with the GIL held (`kill -USR2 PID`).
    faulthandler.register would dump from inside the signal, in whichever thread took it, walking the other threads'
    frames while they run and exit: unsafe while Ray's threads come and go. The cost: a main thread blocked in C
    code prints once it returns to Python (Tune's loop does every fraction of a second)."""
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)


def _plan_locally(plan: Plan) -> None:
    """`--minutes` on this machine: measure it and size the study before Ray starts (study.timeplan), so that too
    few minutes is one line and exit status 2 before anything is created."""
    cpus, gpus, device, have_gpus = plan.cpus_per_trial, 0.0, "cpu", 0
    if plan.gpus_per_trial is None or plan.gpus_per_trial > 0:
        import torch

        if torch.cuda.is_available():
            device, have_gpus = "cuda", torch.cuda.device_count()
            gpus = plan.gpus_per_trial or 1.0 / TRIALS_PER_GPU  # as study.cluster.gpus_per_trial defaults
    parallel = concurrent_trials(os.cpu_count() or 1, have_gpus, cpus, gpus, plan.max_concurrent, plan.trials)
    print(f"measuring this machine's training speed ({device}, {max(1, int(cpus))} thread(s) per trial, "
          f"{parallel} trials at once) ...", flush=True)
    time_plan = fit_to_minutes(plan, parallel=parallel, device=device)
    print(time_plan.describe(), flush=True)


def _build_report(run_dir: Path) -> int:
    from reports.build import build_report

    try:
        out = build_report(run_dir)
    except Exception as exc:  # the study's results are safe on disk; say how to retry
        print(f"error: building the report failed ({type(exc).__name__}: {exc}); the results are intact in "
              f"{run_dir}; retry with: python -m reports.build {run_dir}", file=sys.stderr)
        return 1
    print(f"report: {Path(out) / 'index.html'}")
    return 0


if __name__ == "__main__":
    logging.getLogger("ray").setLevel(logging.WARNING)
    from study._compat import exit_without_teardown

    exit_without_teardown(main())
