"""The trainable's report callback, without a Ray runtime: Tune's `report` is replaced by a list."""
from __future__ import annotations

import json
import math

import pytest

from charrnn.pacer import BudgetDecision
from charrnn.train import EvalRecord
from study import trainable
from study.trainable import FAIL_ENV, InjectedFailure, TuneReporter, tune_metrics

LABELS = {"device": "cpu", "node_id": "n1", "seed": 3, "threads": 1, "precision": "fp32"}


RECORD = {"chars_seen": 1000, "wall_s": 2.0, "train_bpc": 3.0, "val_bpc": 2.5, "best_val_bpc": 2.4, "lr": 1e-3,
          "sample": "ab", "sample_temperature": 0.8, "is_best": False, "budget_chars": 4000}


def _record(**changes) -> EvalRecord:
    return EvalRecord(**{**RECORD, **changes})


def test_metric_keys_and_values():
    metrics = tune_metrics(_record(final_samples={0.5: "x"}), LABELS)
    assert list(metrics) == ["chars_seen", "steps", "wall_s", "eval_s", "train_bpc", "val_bpc", "best_val_bpc", "lr",
                             "sample", "sample_temperature", "final_samples_json", "budget_chars",
                             "budget_decision_json", "stopped_early", "test_bpc", "finished", "diverged", "device",
                             "node_id", "seed", "threads", "precision"]
    assert metrics["val_bpc"] == 2.5 and metrics["best_val_bpc"] == 2.4  # ASHA and Optuna rank by the best so far
    assert metrics["final_samples_json"] == '{"0.5": "x"}' and not metrics["finished"]
    assert metrics["budget_decision_json"] == ""  # no time limit
    decision = BudgetDecision(budget_chars=4000, chars_per_s=2896.0, measured_chars_per_s=3100.0)
    paced = json.loads(tune_metrics(_record(budget_decision=decision), LABELS)["budget_decision_json"])
    assert BudgetDecision.from_dict(paced) == decision and paced["refit"] is None
    diverged = tune_metrics(_record(done=True, diverged=True), LABELS)
    assert math.isnan(diverged["val_bpc"]) and math.isnan(diverged["best_val_bpc"])
    assert not diverged["finished"] and diverged["diverged"]


def test_reporter_hands_tune_the_checkpoint_directory_and_fails_on_request(tmp_path, monkeypatch):
    reported = []
    monkeypatch.setattr(trainable.tune, "report", lambda metrics, checkpoint: reported.append((metrics, checkpoint)))
    monkeypatch.setenv(FAIL_ENV, "once:2")
    report = TuneReporter(str(tmp_path), LABELS, fail_after=2)
    report(_record())
    with pytest.raises(InjectedFailure, match=f"after report 2 \\({FAIL_ENV}=once:2\\)"):
        report(_record(chars_seen=2000))
    report(_record(chars_seen=4000, done=True))  # the last report never fails: the trial has finished
    assert [m["chars_seen"] for m, _ in reported] == [1000, 2000, 4000]
    assert all(c.path == str(tmp_path) for _, c in reported)


@pytest.mark.parametrize("hidden, batch, cpus, threads", [
    (256, 8, 2, 2),     # the default study's usual final model: 15% faster on the second thread
    (128, 16, 2, 1),    # 20% slower on two
    (16, 16, 2, 1),     # the smoke models
    (512, 8, 1.5, 1),   # never more threads than whole CPUs
    (512, 8, 4, 4),
])
def test_threads_follow_the_recurrent_matmul_size(hidden, batch, cpus, threads):
    from charrnn.config import TrainConfig
    config = TrainConfig.from_flat({"hidden_size": hidden, "batch_size": batch})
    assert trainable.useful_threads(cpus, config) == threads
