"""The chosen search trial: read from study.json's selection, else one documented rule; the seed noise floor uses
the repeats of that configuration only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reports import choose_budget, load_run, noise_floor
from reports._analysis import analyze, best_trial_repeats
from reports._final import baseline_table, unstable_configurations
from reports._selection import ranked_candidates, selection


def _with_repeats(run_dir, plan: dict[int, list[tuple[str, float]]]):
    """Add seed repeats to a synthetic run: plan maps a candidate's rank (0 = best) to its repeats'
    (status, score at every evaluation); writes repeat_of and their curves."""
    run = load_run(run_dir)
    ranked = ranked_candidates(run)["trial_id"].tolist()
    trials = pd.read_parquet(run_dir / "trials.parquet")
    curves = pd.read_parquet(run_dir / "curves.parquet")
    trials["repeat_of"] = None
    rows, crow = [], []
    milestones = sorted(curves["chars_seen"].unique())
    for rank, reps in plan.items():
        src = trials[trials["trial_id"] == ranked[rank]].iloc[0]
        for k, (status, score) in enumerate(reps):
            r = src.copy()
            r["trial_id"], r["role"], r["status"], r["repeat_of"] = f"rep{rank}_{k}", "repeat", status, ranked[rank]
            r["best_val_bpc"] = score if status == "completed" else np.nan
            rows.append(r)
            for m in milestones:
                v = score if status == "completed" else np.nan
                crow.append({"trial_id": r["trial_id"], "chars_seen": m, "wall_s": 1.0, "train_bpc": v,
                             "val_bpc": v, "best_val_bpc": v, "lr": 0.01})
    trials = pd.concat([trials, pd.DataFrame(rows)], ignore_index=True)
    trials.to_parquet(run_dir / "trials.parquet", index=False)
    pd.concat([curves, pd.DataFrame(crow)], ignore_index=True).astype({"chars_seen": "int64"}).to_parquet(
        run_dir / "curves.parquet", index=False)
    return ranked


def test_an_unstable_first_candidate_leaves_the_noise_floor_to_the_second(make_run):
    # The first candidate diverged in 2 of its 3 repeats (the third landed far off); the study handed over the
    # second. The floor must be the second's three repeats, not pooled with the first's survivor.
    run_dir = make_run(n_trials=30, seed=11, repeats=0)
    ranked = _with_repeats(run_dir, {0: [("diverged", 0), ("diverged", 0), ("completed", 2.9)],
                                     1: [("completed", 1.80), ("completed", 1.82), ("completed", 1.84)]})
    run = load_run(run_dir)
    sel = selection(run)
    assert sel.chosen == ranked[1] and not sel.recorded
    assert sel.candidates[0][0] == ranked[0]
    assert sel.candidates[0][1].startswith("unstable: diverged or failed in 2 of 3")
    nf = noise_floor(run, choose_budget(run).chars)
    assert sorted(nf.values) == pytest.approx([1.80, 1.82, 1.84]) and nf.sd == pytest.approx(0.02)
    best = best_trial_repeats(run)
    assert best.trial_id == ranked[1] and best.repeats == pytest.approx((1.80, 1.82, 1.84))
    a = analyze(run, n_bootstrap=0)
    assert a.best == best and a.seed.floor == nf
    chosen_score = run.trials.set_index("trial_id").loc[ranked[1], "best_val_bpc"]
    row = baseline_table(run, None).set_index("model").loc["chosen trial (its budget)"]
    assert row["validation"] == pytest.approx(chosen_score)
    skipped = unstable_configurations(run)
    assert skipped.to_dict("records") == [{"trial_id": ranked[0], "bad": 2, "repeats": 3}]


def test_a_recorded_selection_is_read_not_recomputed(make_run):
    run_dir = make_run(n_trials=30, seed=12, repeats=0)
    ranked = _with_repeats(run_dir, {0: [("completed", 1.7), ("completed", 1.9)],
                                     2: [("completed", 2.0), ("completed", 2.1)]})
    study = json.loads((run_dir / "study.json").read_text())
    # the study decided on the third (say its candidates' repeats were judged on something this reader cannot see)
    study["selection"] = {"chosen": ranked[2], "candidates": [{"trial_id": ranked[0], "skipped": "unstable"},
                                                              {"trial_id": ranked[2], "skipped": None}]}
    (run_dir / "study.json").write_text(json.dumps(study))
    run = load_run(run_dir)
    assert selection(run).recorded and selection(run).chosen == ranked[2]
    assert sorted(noise_floor(run, choose_budget(run).chars).values) == pytest.approx([2.0, 2.1])
    assert best_trial_repeats(run).trial_id == ranked[2]
    study["selection"] = {"chosen": None, "candidates": []}  # no configuration trained reliably
    (run_dir / "study.json").write_text(json.dumps(study))
    run = load_run(run_dir)
    assert best_trial_repeats(run) is None and not noise_floor(run, choose_budget(run).chars).known
