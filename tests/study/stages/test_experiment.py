"""What the stages share with Tune, without a running cluster."""
from __future__ import annotations

from study.stages.experiment import has_experiment_state


def test_an_experiment_is_resumed_only_once_tune_has_saved_its_state(tmp_path):
    """Killed after Tune wrote tuner.pkl but before its first snapshot: Tuner.can_restore says yes, but there is
    nothing to resume (Tune would start over without the study's param space), so the stage starts afresh."""
    exp = tmp_path / "tune"
    assert not has_experiment_state(str(exp))
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"x")
    assert not has_experiment_state(str(exp))
    (exp / "experiment_state-2026-11-26_05-00-00.json").write_text("{}")
    assert has_experiment_state(str(exp))
    assert has_experiment_state(f"file://{exp}")
