"""Everything a user passes in, checked before anything expensive starts.

Each mistake a user can make ends here as a `UsageError` with one line; `study.run` prints it and
exits with status 2 before Ray is started.
"""
from __future__ import annotations

import argparse
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from charrnn import corpora
from charrnn.corpus import Corpus, CorpusError, load_corpus
from study.spec import SpecError, StudySpec, load_spec

SPECS_DIR = Path(__file__).resolve().parent / "specs"  # package data: found from any working directory
DEFAULT_SPEC = "sherlock"


class UsageError(ValueError):
    """Bad input from the user: one line, exit status 2."""


def resolve_corpus(name_or_path: str) -> tuple[str, Path]:
    """A corpus name or a path -> (name, path); names resolve as `charrnn.corpora.find` says."""
    path = Path(name_or_path).expanduser()
    looks_like_path = os.sep in name_or_path or path.suffix or path.exists()
    if looks_like_path:
        return path.stem, path
    try:
        return name_or_path, corpora.find(name_or_path)
    except CorpusError as exc:
        raise UsageError(str(exc)) from None


def spec_names() -> list[str]:
    """The names of the specs that ship with the package (`sherlock`, `shakespeare`, `smoke`)."""
    return sorted(p.stem for p in SPECS_DIR.glob("*.toml"))


def resolve_spec(value: str | None) -> StudySpec:
    """--spec PATH, or the name of a bundled spec (e.g. 'smoke'), or the default sherlock spec."""
    value = value or DEFAULT_SPEC
    path = Path(value).expanduser()
    if not path.exists() and not path.suffix and os.sep not in value:
        if value not in spec_names():
            raise UsageError(f"spec {value!r} is neither a file nor a bundled spec ({', '.join(spec_names())})")
        path = SPECS_DIR / f"{value}.toml"
    try:
        return load_spec(path)
    except SpecError as exc:
        raise UsageError(str(exc)) from None


def load_checked_corpus(spec: StudySpec, corpus_arg: str | None, encoding: str) -> Corpus:
    name, path = resolve_corpus(corpus_arg or spec.corpus)
    try:
        corpus = load_corpus(path, name=name, encoding=encoding)
    except CorpusError as exc:
        raise UsageError(str(exc)) from None
    need = spec.min_train_chars_needed()
    if len(corpus.val) < 2 or len(corpus.train) < need:
        raise UsageError(
            f"corpus {path} is too short: {corpus.chars:,} chars gives {len(corpus.train):,} training chars, "
            f"but the spec's largest batch needs {need:,} (batch_size x (seq_len+1)) plus a 10% held-out split"
        )
    if "train_chars" in spec.search:
        low = int(spec.search["train_chars"].low)
        if low < need:
            raise UsageError(f"search.train_chars low ({low:,}) is below the {need:,} chars one batch needs")
    return corpus


def check_args(args: argparse.Namespace) -> None:
    if args.trials is not None and args.trials < 1:
        raise UsageError(f"--trials must be >= 1, got {args.trials}")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise UsageError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    if args.cpus_per_trial is not None and args.cpus_per_trial <= 0:
        raise UsageError(f"--cpus-per-trial must be > 0, got {args.cpus_per_trial}")
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        raise UsageError(f"--gpus-per-trial must be >= 0, got {args.gpus_per_trial}")
    if args.repeats is not None and args.repeats < 0:
        raise UsageError(f"--repeats must be >= 0, got {args.repeats}")
    if args.final_chars is not None and args.final_chars < 0:
        raise UsageError(f"--final-chars must be >= 0 (0 skips the final model), got {args.final_chars}")
    if args.final_minutes is not None and not args.final_minutes >= 0:
        raise UsageError(f"--final-minutes must be >= 0 (0 = no limit), got {args.final_minutes}")
    if getattr(args, "minutes", None) is not None and not args.minutes >= 0:
        raise UsageError(f"--minutes must be >= 0 (0 = the spec's budgets as written), got {args.minutes}")
    if args.max_failures < 0:
        raise UsageError(f"--max-failures must be >= 0, got {args.max_failures}")
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    address = args.address or os.environ.get("RAY_ADDRESS")
    if args.gpus_per_trial and args.gpus_per_trial > 0 and not address:
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"--gpus-per-trial {args.gpus_per_trial} but this machine has no CUDA GPU "
                             "(use --gpus-per-trial 0, or --address to join a cluster that has GPUs)")


def study_name(spec: StudySpec, corpus: Corpus) -> str:
    """The spec's name, followed by the corpus's when it is not the spec's own (e.g. "sherlock-mynovel")."""
    if corpus.name == Path(spec.corpus).stem:
        return spec.name
    return f"{spec.name}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', corpus.name).strip('._') or 'corpus'}"


def default_out(name: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("runs") / f"{name}-{stamp}"


def is_run_dir(path: Path) -> bool:
    """A directory with the study.json of a study (of any schema version)."""
    from study.rundir import RunDir

    return RunDir(path).read_study() is not None


def check_out_dir(path: Path) -> None:
    """A new study needs an empty or absent directory; a finished or running study is never overwritten."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} exists and is not a directory")
    if is_run_dir(path):
        raise UsageError(f"--out {path} already holds a study; pass --resume {path} to continue it, "
                         "or choose another --out")
    if path.is_dir() and any(p.name != ".lock" for p in path.iterdir()):  # a lock left by a study that never began
        raise UsageError(f"--out {path} is not empty; choose a new directory")
