"""The report depends on the trials, not on the ids Tune happened to give them."""

from __future__ import annotations

import re

import numpy as np

from reports import build_report, load_run
from benchmarks.synthetic import rename_trial_ids


def _tune_ids(n: int, seed: int) -> list[str]:
    """`n` distinct random ids, as Tune's trial ids are: their sorted order is not the order of creation."""
    rng = np.random.default_rng(seed)
    ids: list[str] = []
    while len(ids) < n:
        tid = "".join(rng.choice(list("0123456789abcdef"), 8))
        if tid not in ids:
            ids.append(tid)
    return ids


def _with_ids(make_run, seed: int):
    run_dir = make_run(seed=4, n_trials=24, repeats=3)
    old = load_run(run_dir).trials["trial_id"].tolist()
    new = _tune_ids(len(old), seed)
    rename_trial_ids(run_dir, dict(zip(old, new)))
    return run_dir, dict(zip(new, old))


def _canonical(text: str, back: dict[str, str], run_dir) -> str:
    text = text.replace(str(run_dir), "RUN")
    return re.sub("|".join(sorted(back, key=len, reverse=True)), lambda m: back[m.group(0)], text)


def test_load_orders_trials_by_creation_and_curves_by_trial_then_chars(make_run):
    run_dir, back = _with_ids(make_run, 1)
    run = load_run(run_dir)
    assert run.trials["trial_id"].map(back).tolist() == [f"t{i:03d}" for i in range(27)]
    assert run.trials["role"].tolist() == ["search"] * 24 + ["repeat"] * 3
    for name in ("curves", "samples"):
        df = getattr(run, name)
        ids = df["trial_id"].map(back)
        assert list(dict.fromkeys(ids)) == sorted(set(ids)), name  # t000's rows, then t001's, ...
        assert df.groupby("trial_id")["chars_seen"].apply(lambda s: s.is_monotonic_increasing).all(), name


def test_same_trials_under_other_ids_give_the_same_report(make_run, tmp_path):
    (dir_a, back_a), (dir_b, back_b) = _with_ids(make_run, 1), _with_ids(make_run, 2)
    md = []
    for run_dir, back, name in ((dir_a, back_a, "a"), (dir_b, back_b, "b")):
        out = build_report(run_dir, tmp_path / name, seed=3, n_bootstrap=4)
        md.append([_canonical((out / f).read_text(encoding="utf-8"), back, run_dir)
                   for f in ("report.md", "importance.csv")])
    assert md[0] == md[1]
