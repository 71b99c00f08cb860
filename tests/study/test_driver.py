"""The driver's decisions that need no running cluster."""
from __future__ import annotations

from study.driver import _has_experiment_state


def test_an_experiment_is_resumed_only_once_tune_has_saved_its_state(tmp_path):
    """Killed after Tune wrote tuner.pkl but before its first snapshot: Tuner.can_restore says yes, but there is
    nothing to resume (Tune would start over without the study's param space), so the stage starts afresh."""
    exp = tmp_path / "tune"
    assert not _has_experiment_state(str(exp))
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"x")
    assert not _has_experiment_state(str(exp))
    (exp / "experiment_state-2026-11-26_05-00-00.json").write_text("{}")
    assert _has_experiment_state(str(exp))
    assert _has_experiment_state(f"file://{exp}")
