"""StudySearch tells Optuna what the results tables say, without starting Ray."""
from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from study.search import StudySearch, outcome

SPACE = {"lr": FloatDistribution(1e-3, 1e-1, log=True), "cell": CategoricalDistribution(["gru", "lstm"])}


def _searcher(storage) -> StudySearch:
    return StudySearch(SPACE, metric="best_val_bpc", mode="min", sampler=optuna.samplers.RandomSampler(seed=0),
                       study_name="s", storage=storage)


def _result(chars: int, eval_bpc: float, best: float, **extra) -> dict:
    return {"chars_seen": chars, "val_bpc": eval_bpc, "best_val_bpc": best, "finished": False,
            "diverged": False, **extra}


def _by_tune_id(storage) -> dict[str, optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="s", storage=storage)
    return {t.user_attrs["tune_trial_id"]: t for t in study.trials}


@pytest.mark.parametrize("result, error, expected", [
    ({"chars_seen": 9, "best_val_bpc": 2.0, "finished": True}, False, (TrialState.COMPLETE, 2.0, None)),
    ({"chars_seen": 9, "best_val_bpc": 2.5, "finished": False}, False, (TrialState.PRUNED, None, "stopped")),
    ({"chars_seen": 9, "best_val_bpc": math.nan, "diverged": True}, False, (TrialState.FAIL, None, "diverged")),
    ({"chars_seen": 9, "best_val_bpc": 2.0}, True, (TrialState.FAIL, None, "failed")),
    (None, False, (TrialState.FAIL, None, "failed")),
    ({"training_iteration": 1}, False, (TrialState.FAIL, None, "failed")),  # Tune's own fields only
    ({"chars_seen": 9, "best_val_bpc": math.inf, "finished": True}, False, (TrialState.FAIL, None, "failed")),
])
def test_outcome(result, error, expected):
    assert outcome(result, error, "best_val_bpc") == expected


def test_states_and_intermediate_values_follow_the_tables():
    storage = optuna.storages.InMemoryStorage()
    search = _searcher(storage)
    for tid in ("done", "stopped", "diverged", "crashed"):
        params = search.suggest(tid)
        assert set(params) == set(SPACE)
    search.on_trial_result("done", _result(100, 3.0, 3.0))
    search.on_trial_result("done", _result(200, 3.2, 3.0))
    search.on_trial_result("done", _result(100, 3.0, 3.0))  # a retry re-reports from its checkpoint
    search.on_trial_complete("done", _result(300, 2.5, 2.5, finished=True))  # the last result comes only here
    search.on_trial_result("stopped", _result(100, 3.6, 3.6))
    search.on_trial_complete("stopped", _result(200, 3.7, 3.6))
    search.on_trial_result("diverged", _result(100, 3.9, 3.9))
    search.on_trial_result("diverged", _result(150, math.nan, math.nan, diverged=True))
    search.on_trial_complete("diverged", _result(150, math.nan, math.nan, diverged=True))
    search.on_trial_complete("crashed", None, error=True)

    trials = _by_tune_id(storage)
    assert trials["done"].state == TrialState.COMPLETE and trials["done"].value == 2.5
    assert trials["done"].intermediate_values == {100: 3.0, 200: 3.2, 300: 2.5}  # each evaluation's own value
    # PRUNED: Optuna's value is the last intermediate value, the evaluation it was stopped at.
    assert trials["stopped"].state == TrialState.PRUNED and trials["stopped"].value == 3.7
    assert trials["stopped"].intermediate_values == {100: 3.6, 200: 3.7}
    assert trials["stopped"].user_attrs["status"] == "stopped"
    assert trials["diverged"].state == TrialState.FAIL and trials["diverged"].user_attrs["status"] == "diverged"
    assert trials["diverged"].intermediate_values == {100: 3.9}
    assert trials["crashed"].state == TrialState.FAIL and trials["crashed"].user_attrs["status"] == "failed"


def test_a_restored_searcher_continues_and_keeps_what_optuna_was_told(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    first = _searcher(storage)
    first.suggest("a")
    first.suggest("b")
    first.on_trial_result("a", _result(100, 3.0, 3.0))
    first.on_trial_result("b", _result(100, 3.5, 3.5))
    first.save(str(tmp_path / "searcher.pkl"))
    # After the save, the driver told "a" and was killed before Tune saved its own state again.
    first.on_trial_result("a", _result(200, 2.0, 2.0, finished=True))
    first.on_trial_complete("a", _result(200, 2.0, 2.0, finished=True))

    resumed = _searcher(storage)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_result("a", _result(200, 2.2, 2.2, finished=True))  # Tune resumed "a": ignored
    resumed.on_trial_complete("a", _result(200, 2.2, 2.2, finished=True))
    resumed.on_trial_result("b", _result(200, 3.1, 3.1, finished=True))
    resumed.on_trial_complete("b", _result(200, 3.1, 3.1, finished=True))
    assert set(resumed.suggest("c")) == set(SPACE)

    trials = _by_tune_id(storage)
    assert trials["a"].value == 2.0 and trials["a"].intermediate_values == {100: 3.0, 200: 2.0}
    assert trials["b"].state == TrialState.COMPLETE and trials["b"].intermediate_values == {100: 3.5, 200: 3.1}
    assert trials["c"].state == TrialState.RUNNING and len(trials) == 3


def test_an_optuna_trial_no_tune_trial_ran_goes_to_the_next_new_trial(tmp_path):
    """A driver killed after asking Optuna for "ghost" but before Tune saved that trial: the resumed searcher
    hands the asked trial to the next Tune trial, so there is one Optuna trial per Tune trial."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    first = _searcher(storage)
    first.suggest("a")
    first.save(str(tmp_path / "searcher.pkl"))
    ghost_params = first.suggest("ghost")  # asked after the last save; then the driver was killed

    resumed = _searcher(storage)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    assert resumed.suggest("c") == ghost_params
    resumed.suggest("d")  # a new ask
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert len(trials) == 3
    assert sorted(t.user_attrs["tune_trial_id"] for t in trials) == ["a", "c", "d"]


def test_a_new_searcher_on_an_interrupted_study_uses_its_asked_trials_first(tmp_path):
    """Killed before Tune saved anything: a new searcher on the same study takes over the trials asked before."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    first = _searcher(storage)
    asked = first.suggest("x")
    again = _searcher(storage)
    assert again.suggest("y") == asked
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert len(trials) == 1 and trials[0].user_attrs["tune_trial_id"] == "y"


def test_a_run_that_learned_nothing_says_so_not_that_its_loss_exploded():
    from study.outcomes import ended

    last = {"chars_seen": 40_000, "diverged": True, "val_bpc": 6.9, "best_val_bpc": 6.8}
    assert ended(last) == ("diverged", "never scored better than a uniform guess (best val_bpc 6.80)")
    status, why = ended({**last, "val_bpc": float("nan")})
    assert status == "diverged" and why.startswith("loss diverged")


def test_a_trial_left_half_asked_gets_the_rest_of_its_enqueued_parameters():
    """A driver killed inside `ask` leaves a RUNNING Optuna trial with some parameters written: the trial that takes
    its place gets the others, as they were enqueued (the killed-and-resumed soak study once ran a trial with the
    trainer's defaults for half its hyperparameters)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from study.search import _complete

    space = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "layers": IntDistribution(1, 3),
             "cell": CategoricalDistribution(["gru", "lstm"])}
    study = optuna.create_study()
    study.enqueue_trial({"lr": 0.01, "layers": 2, "cell": "lstm"})
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)  # the one written before the kill
    _complete(trial, space)
    assert trial.params == {"lr": 0.01, "layers": 2, "cell": "lstm"}


def test_a_proposal_left_waiting_by_a_killed_driver_is_taken_not_enqueued_again(tmp_path):
    """Killed between enqueue and ask, a driver leaves its proposal WAITING; the resumed searcher's next trial takes
    it, and no Optuna trial is left without a Tune trial (the soak test found one WAITING at the end)."""
    from study.spec import parse_spec
    from study.space import LaggedProposer

    spec = parse_spec({"name": "s", "sampler": {"name": "tpe", "n_startup_trials": 4},
                       "search": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
                                  "cell": {"type": "categorical", "choices": ["gru", "lstm"]}}})
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")
    proposer = LaggedProposer(spec, seed=0, lag=2)
    first = StudySearch(SPACE, metric="best_val_bpc", mode="min", sampler=optuna.samplers.RandomSampler(seed=0),
                        study_name="s", storage=storage, proposer=proposer)
    first.study.enqueue_trial(proposer.params_for(first.study))  # then the kill, before ask
    again = StudySearch(SPACE, metric="best_val_bpc", mode="min", sampler=optuna.samplers.RandomSampler(seed=0),
                        study_name="s", storage=storage, proposer=proposer)
    assert again.suggest("t0") == proposer.design[0]
    assert again.suggest("t1") == proposer.design[1]
    states = [t.state for t in again.study.get_trials(deepcopy=False)]
    assert states == [TrialState.RUNNING, TrialState.RUNNING]
