from __future__ import annotations

import numpy as np

from benchmarks.report_scale import write_synthetic_run
from reports import choose_budget, load_run


def test_synthetic_run_directory_satisfies_the_contract(tmp_path):
    run = load_run(write_synthetic_run(tmp_path / "r", 40, seed=3))
    assert (run.trials["role"] == "search").sum() == 40 and (run.trials["role"] == "repeat").sum() == 3
    reps = run.trials[run.trials["role"] == "repeat"]
    assert reps["repeat_of"].nunique() == 1 and np.isfinite(reps["best_val_bpc"]).all()
    assert run.param("num_layers").kind == "int" and run.param("lr").log
    b = choose_budget(run)
    search = run.trials[run.trials["role"] == "search"]
    assert b.chars == 125_000 and b.n_trials == search["status"].isin(["completed", "stopped"]).sum()
