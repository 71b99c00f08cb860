from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from reports import RunDirError, load_run
from reports._load import running_best


def test_required_columns_only_load_with_defaults(make_run):
    run = load_run(make_run(required_only=True))
    assert set(run.trials["role"]) == {"search"}  # repeats are indistinguishable without the role column
    assert [p.name for p in run.params] == ["lr", "hidden_size", "dropout", "seq_len", "cell", "optimizer"]
    assert run.param("lr").log and run.param("cell").choices == ("rnn_tanh", "rnn_relu", "gru", "lstm")


def test_missing_directory(tmp_path):
    with pytest.raises(RunDirError, match="not a directory"):
        load_run(tmp_path / "nope")


def test_not_a_run_directory(tmp_path):
    with pytest.raises(RunDirError, match="study.json"):
        load_run(tmp_path)


def test_corrupt_table(make_run):
    run_dir = make_run(n_trials=12, asha=False)
    (run_dir / "curves.parquet").write_bytes(b"not parquet")
    with pytest.raises(RunDirError, match="cannot read"):
        load_run(run_dir)


def test_missing_required_column(make_run):
    run_dir = make_run(n_trials=12, asha=False)
    t = pd.read_parquet(run_dir / "trials.parquet").drop(columns=["wall_s"])
    t.to_parquet(run_dir / "trials.parquet")
    with pytest.raises(RunDirError, match="wall_s"):
        load_run(run_dir)


def test_missing_param_column(make_run):
    run_dir = make_run(n_trials=12, asha=False)
    study = json.loads((run_dir / "study.json").read_text())
    study["search_space"]["momentum"] = {"type": "float", "low": 0, "high": 1, "log": False}
    (run_dir / "study.json").write_text(json.dumps(study))
    with pytest.raises(RunDirError, match="param.momentum"):
        load_run(run_dir)


def test_int_step_is_read_and_defaults_to_one(make_run):
    run_dir = make_run(n_trials=12, asha=False)
    study = json.loads((run_dir / "study.json").read_text())
    study["search_space"]["seq_len"]["step"] = 32
    (run_dir / "study.json").write_text(json.dumps(study))
    run = load_run(run_dir)
    assert run.param("seq_len").step == 32 and run.param("hidden_size").step == 1
    study["search_space"]["seq_len"]["step"] = 0.5
    (run_dir / "study.json").write_text(json.dumps(study))
    with pytest.raises(RunDirError, match="step"):
        load_run(run_dir)


def test_schema_1_loads_under_schema_2_names_and_equals_schema_2(make_run):
    run1 = load_run(make_run(n_trials=20, seed=5, schema=1))
    run2 = load_run(make_run(n_trials=20, seed=5, schema=2))
    assert run1.study["schema_version"] == 1 and run2.study["schema_version"] == 2
    assert "best_val_bpc" in run1.trials.columns and "val_bpc" not in run1.trials.columns
    assert {"val_bpc", "best_val_bpc"} <= set(run1.curves.columns) and "eval_val_bpc" not in run1.curves.columns
    for name in ("trials", "curves", "samples"):
        a, b = getattr(run1, name), getattr(run2, name)
        pd.testing.assert_frame_equal(a[sorted(a.columns)], b[sorted(b.columns)], obj=name)


def test_schema_1_without_eval_val_bpc_reads_curves_val_bpc(make_run):
    run1 = load_run(make_run(n_trials=12, asha=False, required_only=True, schema=1))
    run2 = load_run(make_run(n_trials=12, asha=False, required_only=True, schema=2))
    pd.testing.assert_frame_equal(run1.curves, run2.curves)


def test_running_best_is_in_chars_order_and_skips_nan():
    curves = pd.DataFrame({"trial_id": ["a", "a", "a", "a", "b", "b"],
                           "chars_seen": [300.0, 100.0, 400.0, 200.0, 100.0, 200.0],
                           "val_bpc": [2.5, float("nan"), 2.7, 3.0, 4.0, float("inf")]})
    best = running_best(curves)
    assert best.index.equals(curves.index)
    # a in chars order: NaN, 3.0, 2.5, 2.7 -> NaN, 3.0, 2.5, 2.5; b: 4.0, inf -> 4.0, 4.0
    assert best.tolist()[0] == 2.5 and math.isnan(best[1]) and best.tolist()[2:] == [2.5, 3.0, 4.0, 4.0]


@pytest.mark.parametrize("version", [0, 3, "2", True, None])
def test_unknown_schema_version_is_one_line_error(make_run, version):
    run_dir = make_run(n_trials=12, asha=False)
    study = json.loads((run_dir / "study.json").read_text())
    study["schema_version"] = version
    (run_dir / "study.json").write_text(json.dumps(study))
    with pytest.raises(RunDirError, match="unsupported schema_version") as err:
        load_run(run_dir)
    assert "\n" not in str(err.value)


def test_schema_2_needs_best_val_bpc(make_run):
    run_dir = make_run(n_trials=12, asha=False)
    c = pd.read_parquet(run_dir / "curves.parquet").drop(columns=["best_val_bpc"])
    c.to_parquet(run_dir / "curves.parquet")
    with pytest.raises(RunDirError, match="curves.parquet lacks required column.*best_val_bpc"):
        load_run(run_dir)
    run_dir = make_run(n_trials=12, asha=False)
    t = pd.read_parquet(run_dir / "trials.parquet").rename(columns={"best_val_bpc": "val_bpc"})
    t.to_parquet(run_dir / "trials.parquet")  # schema 1's name in a schema-2 directory
    with pytest.raises(RunDirError, match="trials.parquet lacks required column.*best_val_bpc"):
        load_run(run_dir)
