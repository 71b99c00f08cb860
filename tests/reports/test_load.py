from __future__ import annotations

import json

import pandas as pd
import pytest

from reports import RunDirError, load_run


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
