"""Planning a study (no Ray): a corpus of one's own names the study and fits the spec's text sizes."""
from __future__ import annotations

import json
import re

import optuna
import pytest

from study.inputs import resolve_spec
from study.rundir import RunDir
from study.run import adjusted_note, build_parser, prepare, study_metadata


@pytest.fixture
def novel(tmp_path, tiny_text):
    """A 'novel' of 100k characters: 90k of training text, fewer than the smoke spec's 200k."""
    path = tmp_path / "my novel.txt"
    path.write_text((tiny_text * 6)[:100_000])
    return path


def _plan(tmp_path, *argv):
    return prepare(build_parser().parse_args(["--spec", "smoke", "--out", str(tmp_path / "run"), *argv]))


def test_the_spec_own_corpus_keeps_the_spec_name_and_range(tmp_path):
    plan = _plan(tmp_path)
    assert plan.study_name == "smoke" and plan.adjusted == {}
    assert plan.spec.search["train_chars"].high == 200_000
    meta = study_metadata(plan)
    assert meta["name"] == meta["spec"] == "smoke" and "adjusted" not in meta


def test_a_small_corpus_of_ones_own_fits_the_spec_and_names_the_study(tmp_path, novel, monkeypatch):
    plan = _plan(tmp_path, "--corpus", str(novel))
    assert plan.study_name == "smoke-my_novel"
    assert len(plan.corpus.train) == 90_000
    assert (plan.spec.search["train_chars"].low, plan.spec.search["train_chars"].high) == (20_000, 90_000)
    meta = json.loads(json.dumps(study_metadata(plan)))
    assert meta["name"] == "smoke-my_novel" and meta["spec"] == "smoke"
    assert meta["search_space"]["train_chars"]["high"] == 90_000
    assert meta["adjusted"]["train_chars"]["from"] == {"low": 20_000, "high": 200_000}
    assert "val_chars" not in meta["adjusted"]  # 5,000 validation characters: the smoke spec's 4,000 fit
    note = adjusted_note(plan)
    assert "\n" not in note and "train_chars 20,000..90,000 instead of 20,000..200,000" in note

    monkeypatch.chdir(tmp_path)  # without --out, the run directory is named after the study too
    plan = prepare(build_parser().parse_args(["--spec", "smoke", "--corpus", str(novel)]))
    assert plan.run_dir.parent.name == "runs" and plan.run_dir.name.startswith("smoke-my_novel-")


def test_the_optuna_study_is_the_plans_and_ends_with_no_trial_running(tmp_path, novel):
    """The driver creates the study under plan.study_name; once the search is over, Optuna trials still RUNNING
    are told what the tables say (a tell the storage refused), or FAIL "orphaned" (no Tune trial ran them)."""
    from study.stages.search import settle_optuna as _settle_optuna
    from study.rundir import TrialTable

    plan = _plan(tmp_path, "--corpus", str(novel))
    plan.run_dir.mkdir()
    study = optuna.create_study(study_name=plan.study_name, storage=RunDir(plan.run_dir).optuna_url)
    orphan, untold, pruned = study.ask(), study.ask(), study.ask()
    untold.set_user_attr("tune_trial_id", "t1")
    pruned.set_user_attr("tune_trial_id", "t2")
    pruned.report(3.5, 100)
    table = TrialTable([], None, ([{"trial_id": "t1", "status": "completed", "best_val_bpc": 2.5},
                                   {"trial_id": "t2", "status": "stopped", "best_val_bpc": 3.5}], [], []))
    _settle_optuna(plan, table)
    trials = study.trials
    assert trials[orphan.number].state == optuna.trial.TrialState.FAIL
    assert trials[orphan.number].user_attrs["status"] == "orphaned"
    assert trials[untold.number].state == optuna.trial.TrialState.COMPLETE and trials[untold.number].value == 2.5
    assert trials[pruned.number].state == optuna.trial.TrialState.PRUNED and trials[pruned.number].value == 3.5


def test_resume_keeps_the_study_name_and_the_fitted_spec(tmp_path, novel):
    from study.rundir import RunDir

    first = _plan(tmp_path, "--corpus", str(novel))
    RunDir(first.run_dir).create(first.spec.path, study_metadata(first))
    again = prepare(build_parser().parse_args(["--resume", str(first.run_dir)]))
    assert again.resume and again.study_name == "smoke-my_novel"
    assert again.spec.search["train_chars"] == first.spec.search["train_chars"] and again.adjusted == first.adjusted


def test_help_states_the_bundled_sherlock_specs_defaults():
    """A default the help names "for sherlock" is the bundled sherlock spec's, not a number of its own."""
    spec = resolve_spec("sherlock")
    named = {a.dest: re.search(r"(\d+(?:\.\d+)?) for sherlock", a.help or "") for a in build_parser()._actions}
    named = {dest: float(m.group(1)) for dest, m in named.items() if m}
    assert {"trials", "repeats", "minutes"} <= set(named)
    for dest, value in named.items():
        assert value == getattr(spec, dest), dest
    repeats = next(a for a in build_parser()._actions if a.dest == "repeats")
    assert not set(re.findall(r"\d+", repeats.help)) - {str(spec.repeats)}  # no other number is given as its default


def test_a_replayed_plan_is_marked_and_carries_the_final_budget_its_source_decided(tmp_path):
    """--plan-from: the plan as recorded, marked `replayed` (study.json's plan_source says so), with the budget the
    source's final model decided, so that a replayed plan replays the final model too."""
    from study.timeplan import TimePlan

    recorded = TimePlan(minutes=10.0, chars_per_s=4096.0, parallel=2, min_steps=10, step_chars=800, grace_chars=8_000,
                        budget_chars=16_000, rungs=[8_000], planned=[4, 2], repeat_chars=8_000, search_s=100.0,
                        repeats_s=20.0, final_s=200.0, report_s=40.0, margin_s=72.0).to_dict()
    source = prepare(build_parser().parse_args(["--spec", "smoke", "--out", str(tmp_path / "source")]))
    source.time_plan, source.minutes = recorded, 10.0
    RunDir(source.run_dir).create(source.spec.path, study_metadata(source))
    assert RunDir(source.run_dir).read_study()["plan_source"] == "measured"

    def replay():
        return prepare(build_parser().parse_args(["--spec", "smoke", "--out", str(tmp_path / "replay"),
                                                  "--plan-from", str(source.run_dir)]))

    before = replay()  # its final model has not decided yet: the plan alone
    assert before.time_plan == {**recorded, "replayed": True} and before.minutes == 10.0
    assert study_metadata(before)["plan_source"] == "replayed"
    RunDir(source.run_dir).update_study({"final": {"budget_chars": 2_048_000, "decided_chars_per_s": 4096.0}})
    after = replay()
    assert after.time_plan == {**recorded, "replayed": True, "final_budget_chars": 2_048_000,
                               "final_chars_per_s": 4096.0}
    assert TimePlan.from_dict(after.time_plan) == TimePlan.from_dict(recorded)
