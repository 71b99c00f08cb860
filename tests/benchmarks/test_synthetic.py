"""The one builder of known-answer studies: every run it writes satisfies the results contract and carries the
answer it was built with."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.synthetic import (SEARCH_SPACE, SHAPES, TRUE_SHARES, _int, add_local_design, draw, final_quality,
                                  local_rundata, synthetic_run, true_effects, write_run_dir, write_shape_run)
from reports import choose_budget, load_run


def test_draws_follow_optunas_log_int():
    spec = _int("embedding_dim", 1, 4, log=True)
    v = draw([spec], 200_000, np.random.default_rng(0))["embedding_dim"]
    p = np.log([1.5, 2.5, 3.5, 4.5]) - np.log([0.5, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(np.bincount(v.astype(int))[1:] / len(v), p / p.sum(), atol=0.005)


def test_synthetic_run_has_stopped_and_diverged_trials():
    run = synthetic_run(SHAPES["sherlock-11"], seed=3)
    st = run.trials["status"].value_counts()
    assert st["stopped"] > st["completed"] > 0 and st.get("diverged", 0) > 0
    assert run.trials.loc[run.trials["status"] == "diverged", "best_val_bpc"].isna().all()


def test_a_shape_written_as_a_run_directory_satisfies_the_contract(tmp_path):
    run = load_run(write_shape_run(tmp_path / "r", 40, seed=3))
    assert (run.trials["role"] == "search").sum() == 40 and (run.trials["role"] == "repeat").sum() == 3
    reps = run.trials[run.trials["role"] == "repeat"]
    assert reps["repeat_of"].nunique() == 1 and np.isfinite(reps["best_val_bpc"]).all()
    assert run.param("num_layers").kind == "int" and run.param("lr").log
    b = choose_budget(run)
    search = run.trials[run.trials["role"] == "search"]
    assert b.chars == 125_000 and b.n_trials == search["status"].isin(["completed", "stopped"]).sum()


@pytest.mark.parametrize("schema", [1, 2])
def test_the_test_study_loads_in_either_schema_with_its_answer(tmp_path, schema):
    run = load_run(write_run_dir(tmp_path / "r", n_trials=30, schema=schema))
    assert set(SEARCH_SPACE) == {s.name for s in run.params} and set(TRUE_SHARES) == set(SEARCH_SPACE)
    search = run.trials[run.trials["role"] == "search"]
    assert {"stopped", "completed", "diverged", "failed"} <= set(search["status"])
    done = run.trials[(run.trials["role"] == "repeat")]
    cfg = {k: done.iloc[0][f"param.{k}"] for k in SEARCH_SPACE}
    # a repeat's best score is its configuration's quality plus seed noise (sd 0.05), the curve's last point
    assert abs(done["best_val_bpc"] - final_quality(cfg)).max() < 0.2


def test_a_local_design_carries_its_true_effects(tmp_path):
    path = add_local_design(write_run_dir(tmp_path / "r", n_trials=20), seed_sd=0.0)
    run = load_run(path)
    local = run.trials[run.trials["role"] == "local"]
    center = local[local["moved"] == ""]["best_val_bpc"].mean()
    for (param, value), effect in true_effects(path).items():
        col = local[f"param.{param}"]
        same = col.astype(str) == value if isinstance(value, str) else np.isclose(col.astype(float), value)
        moved = local[(local["moved"] == param) & same]
        assert len(moved) == 2
        assert moved["best_val_bpc"].mean() - center == pytest.approx(effect, abs=1e-9)
    mem = local_rundata({"lr": 0.3}, seed_sd=0.0)
    t = mem.trials[mem.trials["role"] == "local"]
    assert (t[t["moved"] == "lr"]["best_val_bpc"] - 1.6).to_numpy() == pytest.approx(0.3)
    assert (t[t["moved"] != "lr"]["best_val_bpc"]).to_numpy() == pytest.approx(1.6)
