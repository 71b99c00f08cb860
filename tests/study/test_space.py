from __future__ import annotations

import collections
import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from study.inputs import SPECS_DIR, resolve_spec
from study.space import LatinHypercubeStartup, from_unit, make_sampler, optuna_space
from study.spec import load_spec, parse_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)
SHERLOCK = load_spec(SPECS_DIR / "sherlock.toml")


def _ask_tell(study, space, n):
    for _ in range(n):
        trial = study.ask(space)  # as Ray's OptunaSearch asks: with the space's distributions
        study.tell(trial, sum(len(str(v)) for v in trial.params.values()))


def test_startup_trials_cover_every_hyperparameter_evenly():
    space, n = optuna_space(SHERLOCK), SHERLOCK.sampler["n_startup_trials"]
    study = optuna.create_study(sampler=make_sampler(SHERLOCK, seed=3))
    _ask_tell(study, space, n)
    params = [t.params for t in study.trials]
    for name, dist in space.items():
        values = [p[name] for p in params]
        if isinstance(dist, CategoricalDistribution):
            counts = collections.Counter(values)
            assert set(counts) == set(dist.choices), name
            assert max(counts.values()) - min(counts.values()) <= 1, (name, counts)
        elif isinstance(dist, FloatDistribution):  # exactly one trial in each 1/n quantile
            to_unit = ((lambda v: math.log(v / dist.low) / math.log(dist.high / dist.low)) if dist.log
                       else (lambda v: (v - dist.low) / (dist.high - dist.low)))
            assert sorted(int(to_unit(v) * n) for v in values) == list(range(n)), name
        else:
            assert dist.low <= min(values) and max(values) <= dist.high, name


def test_random_startup_is_plain_tpe_and_seeds_give_different_designs():
    raw = {"name": "t", "sampler": {"name": "tpe", "n_startup_trials": 8, "startup": "random"},
           "search": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}
    assert isinstance(make_sampler(parse_spec(raw), 0), optuna.samplers.TPESampler)
    a, b = (make_sampler(SHERLOCK, seed) for seed in (0, 1))
    assert a.design() != b.design()
    assert make_sampler(SHERLOCK, 0).design() == a.design()


def test_a_resumed_study_continues_the_same_design(tmp_path):
    space, n = optuna_space(SHERLOCK), SHERLOCK.sampler["n_startup_trials"]
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    first = make_sampler(SHERLOCK, seed=5)
    _ask_tell(optuna.create_study(study_name="s", storage=storage, sampler=first), space, 10)
    again = make_sampler(SHERLOCK, seed=5)  # a new driver process after an interruption
    study = optuna.load_study(study_name="s", storage=storage, sampler=again)
    _ask_tell(study, space, n - 10 + 5)
    got = [t.params for t in study.trials]
    assert got[:n] == first.design()
    assert all(p not in first.design() for p in got[n:])  # after the startup trials TPE takes over


@pytest.mark.parametrize("dist, low_value, high_value", [
    (FloatDistribution(1e-4, 1e-2, log=True), 1e-4, 1e-2),
    (FloatDistribution(0.0, 0.5), 0.0, 0.5),
    (IntDistribution(1, 3), 1, 3),
    (IntDistribution(20_000, 2_000_000, log=True), 20_000, 2_000_000),
    (IntDistribution(16, 256, step=16), 16, 256),
    (CategoricalDistribution(["adam", "sgd"]), "adam", "sgd"),
])
def test_unit_quantiles_map_onto_the_whole_range(dist, low_value, high_value):
    assert from_unit(dist, 0.0) == pytest.approx(low_value)
    assert from_unit(dist, 1 - 1e-12) == pytest.approx(high_value)
    assert dist._contains(dist.to_internal_repr(from_unit(dist, 0.37)))


def test_integers_get_equal_shares_of_the_quantiles():
    counts = collections.Counter(from_unit(IntDistribution(1, 3), (i + 0.5) / 300) for i in range(300))
    assert counts == {1: 100, 2: 100, 3: 100}
    assert isinstance(LatinHypercubeStartup(optuna.samplers.RandomSampler(0), {}, 2, 0).design(), list)


def _history(spec, n, seed=0, values=None):
    """`n` finished trials of `spec`'s space with the given (or made-up) values, as FrozenTrials."""
    from study.space import LaggedProposer

    space = optuna_space(spec)
    proposer = LaggedProposer(spec, seed, lag=0)
    study = optuna.create_study()
    for k in range(n):
        params = proposer.params_for(study)
        study.enqueue_trial(params)
        trial = study.ask(fixed_distributions=space)
        study.tell(trial, (values or {}).get(k, 2.0 + 0.01 * ((k * 7) % 5)))
    return study


def test_lagged_proposals_depend_on_the_seed_and_the_trials_seen_only():
    from study.space import LaggedProposer, propose

    spec = resolve_spec("sherlock")
    a, b = _history(spec, 30), _history(spec, 30)
    p = LaggedProposer(spec, 0, lag=4)
    assert p.params_for(a) == p.params_for(b)  # same seed and history: the same trial 30
    # Trial 30 sees trials 0..25 only: a different value for trial 27 changes nothing.
    c = _history(spec, 30, values={27: 9.0})
    assert p.params_for(c) == p.params_for(a)
    d = _history(spec, 30, values={k: 2.0 + k for k in range(26)})  # ... and what it sees, everything
    assert propose(spec, 0, 30, d.get_trials()[:26]) != propose(spec, 0, 30, a.get_trials()[:26])


def test_a_lagged_proposal_waits_for_the_trials_it_must_see():
    from study.space import LaggedProposer

    spec = resolve_spec("sherlock")
    study = _history(spec, 26)
    study.ask()  # trial 26 asked and still running; 27 .. 29 would be too, and trial 30 sees up to 25
    running = study.ask()
    p = LaggedProposer(spec, 0, lag=1)
    assert p.params_for(study) is None  # trial 28 must see trial 26, which still runs
    study.tell(running, 2.0)
    assert p.params_for(study) is None
    study.tell(26, 2.0)
    assert p.params_for(study) is not None


def test_startup_trials_never_wait():
    from study.space import LaggedProposer

    spec = resolve_spec("sherlock")
    study = optuna.create_study()
    study.ask()  # trial 0 running
    assert LaggedProposer(spec, 0, lag=0).params_for(study) is not None


def test_a_diverged_trial_is_learned_from_as_the_worst_and_a_crash_is_not():
    from study.space import as_observed

    dist = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}

    def trial(lr, value=None, status=None):
        state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL
        return optuna.trial.create_trial(params={"lr": lr}, distributions=dist, value=value, state=state,
                                         user_attrs={} if status is None else {"status": status})

    history = [trial(1e-3, 2.5), trial(3e-3, 2.1), trial(9e-2, status="diverged"), trial(5e-2, status="failed")]
    seen = as_observed(history)
    assert [t.state.name for t in seen] == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"]
    assert seen[2].value == 2.5 and seen[2].params == {"lr": 9e-2}  # the worst value any trial reached
    assert as_observed(history[2:]) == history[2:]  # nothing to compare with: left as it was
