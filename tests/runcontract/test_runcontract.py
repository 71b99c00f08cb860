"""The results contract between its writer (study.rundir) and its reader (reports._load): what one writes, the
other reads, under the same names, without a study run."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

import runcontract
from reports import load_run
from study.inputs import resolve_spec
from study.rundir import RunDir, TrialTable
from study.space import describe_space
from tests.conftest import REPO


def _result(chars: int, val: float, best: float, **extra) -> dict:
    return {"chars_seen": chars, "wall_s": chars / 1000, "eval_s": 0.1, "train_bpc": val + 0.1, "val_bpc": val,
            "best_val_bpc": best, "lr": 0.01, "sample": f"text at {chars}", "sample_temperature": 0.8,
            "finished": False, "diverged": False, **extra}


@pytest.fixture
def written(tmp_path):
    """A run directory written by the writer alone: a search trial, a seed repeat of it, a final model and the
    baselines, under a bundled spec's search space."""
    spec = resolve_spec("smoke")
    config = {name: p.choices[0] if p.type == "categorical" else p.low for name, p in spec.search.items()}
    table = TrialTable(list(spec.search))
    finals = json.dumps({"0.8": "the end"})
    for role, tid, extra in (("search", "s1", {}), ("repeat", "r1", {"repeat_of": "s1"}),
                             ("final", "f1", {"repeat_of": "s1"})):
        table.stage(role, 1, **extra)
        table.start(tid, config)
        table.result(tid, config, _result(100, 3.0, 3.0))
        last = _result(200, 2.5, 2.5, finished=True, final_samples_json=finals,
                       **({"test_bpc": 2.4} if role == "final" else {}))
        table.result(tid, config, last)
        table.complete(tid, config, last)
    run_dir = RunDir(tmp_path / "run")
    run_dir.create(spec.path, {"name": "contract", "metric": "val_bpc", "search_space": describe_space(spec)})
    run_dir.write_tables(table)
    run_dir.write_baselines([{"method": "xz", "split": split, "bpc": 2.9, "detail": "preset 9"}
                             for split in ("val", "test")])
    return spec, run_dir.path


def test_the_reader_reads_what_the_writer_writes(written):
    spec, path = written
    run = load_run(path)
    assert run.study["schema_version"] == runcontract.SCHEMA_VERSION
    assert [p.name for p in run.params] == list(spec.search)
    assert run.trials.set_index("trial_id")["role"].to_dict() == {"s1": "search", "r1": "repeat"}
    assert run.trials["status"].tolist() == ["completed", "completed"]
    assert run.trials["best_val_bpc"].tolist() == [2.5, 2.5]
    assert run.final["trial_id"].tolist() == ["f1"] and run.final["test_bpc"].tolist() == [2.4]
    s1 = run.curves[run.curves["trial_id"] == "s1"]
    assert s1["val_bpc"].tolist() == [3.0, 2.5] and s1["best_val_bpc"].tolist() == [3.0, 2.5]
    assert set(run.samples["text"]) == {"text at 100", "text at 200", "the end"}
    assert sorted(run.baselines["split"]) == ["test", "val"] and set(run.baselines["bpc"]) == {2.9}


def test_every_table_holds_the_columns_its_reader_requires(written):
    import pandas as pd

    _, path = written
    version = runcontract.SCHEMA_VERSION
    required = {runcontract.TRIALS_FILE: runcontract.TRIALS_REQUIRED[version],
                runcontract.CURVES_FILE: runcontract.CURVES_REQUIRED[version],
                runcontract.SAMPLES_FILE: runcontract.SAMPLES_REQUIRED,
                runcontract.BASELINES_FILE: runcontract.BASELINES_REQUIRED}
    for name, columns in required.items():
        written_columns = set(pd.read_parquet(path / name).columns)
        assert set(columns) <= written_columns, (name, set(columns) - written_columns)
    trials = pd.read_parquet(path / runcontract.TRIALS_FILE)
    assert set(trials["status"]) <= set(runcontract.STATUSES) and set(trials["role"]) <= set(runcontract.ROLES)
    assert tuple(pd.read_parquet(path / runcontract.CURVES_FILE).columns) == runcontract.CURVE_COLUMNS
    assert math.isfinite(trials["best_val_bpc"].iloc[0])


def test_the_contract_imports_nothing():
    code = ("import sys; before = set(sys.modules); import runcontract; "
            "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] != 'runcontract'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_sample_command_is_one_charrnn_sample_takes(tmp_path, capsys):
    """The closing summary and the report print it; it must stay a command that runs (here: to the one-line error
    of a run directory without a final model, not to argparse's usage error)."""
    import shlex

    from charrnn.sample import main

    argv = shlex.split(runcontract.sample_command(tmp_path))
    assert argv[:3] == ["python", "-m", "charrnn.sample"]
    assert main(argv[3:]) == 2
    assert "has no final model" in capsys.readouterr().err


def test_one_step_to_batch_rule_for_the_trainer_and_the_report():
    """batch_size = step_chars / seq_len, rounded half to even, at least 1: the trainer takes it from runcontract."""
    from charrnn.config import TrainConfig
    from runcontract import batch_size_for

    assert [batch_size_for(c, s) for c, s in ((800, 200), (800, 300), (100, 200), (10, 400), (250, 100))] == \
        [4, 3, 1, 1, 2]
    for c in (100, 800, 1600):
        for s in (25, 50, 75, 200, 300):
            assert TrainConfig(step_chars=c, seq_len=s).batch_size == batch_size_for(c, s)
