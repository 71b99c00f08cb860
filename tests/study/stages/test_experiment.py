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


def test_every_stage_of_a_time_plan_has_its_expected_time_and_the_time_after_it():
    """The progress line's plan for each stage, the local design's included (a planned study with a local design
    once stopped at its start on a missing key)."""
    from types import SimpleNamespace

    from study.stages.experiment import expect

    p = {"search_s": 100.0, "repeats_s": 10.0, "local_s": 200.0, "final_s": 400.0, "report_s": 50.0}
    plan = SimpleNamespace(time_plan=p, final_chars=1, spec=SimpleNamespace(local={"seeds": 2}))
    assert expect(plan, "search") == (100.0, 660.0)
    assert expect(plan, "repeat") == (10.0, 650.0)
    assert expect(plan, "local") == (200.0, 450.0)
    assert expect(plan, "final") == (400.0, 20.0)  # the report's expected build (REPORT_KEPT of its reserve)
    plan.spec.local["seeds"] = 0
    assert expect(plan, "search") == (100.0, 460.0)
