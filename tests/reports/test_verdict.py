"""The verdict on clear-cut local designs, and the caveats it carries (asserted on the decision, not its words)."""

from __future__ import annotations

import math

import pytest

from reports import load_run
from reports._analysis import analyze
from reports._effects import local_effects
from reports._verdict import (KINDS, FailedMoves, GlobalAnswer, GlobalDiffers, RankTestSees, SingleTest, Unmoved,
                              decide)
from benchmarks.synthetic import local_rundata


def _global(case: str = "no_signal", leader: str | None = None) -> GlobalAnswer:
    """A global view that names nothing (or `leader`): the local verdict does not depend on it."""
    import pandas as pd

    from reports._budget import Budget
    from reports._importance import ImportanceResult

    table = pd.DataFrame({"param": [leader or "lr"], "importance": [0.5], "ci_low": [0.4], "ci_high": [0.6]})
    imp = ImportanceResult(table=table, marginals=pd.DataFrame(), agreement=pd.DataFrame(), floors={}, fit={},
                           n_trials=40, n_bootstrap=0, target="log val_bpc")
    budget = Budget(1e5, 40, 1, False, pd.DataFrame({"trial_id": [], "y": []}), pd.DataFrame())
    return GlobalAnswer(case, imp, budget, "val_bpc", leader=leader)


def verdict(effects=None, answer=None, **kw):
    return decide(local_effects(local_rundata(effects, **kw)), answer or _global())


def test_one_big_effect_is_ranked():
    v = verdict({"lr": 0.3})
    assert v.kind == "ranked" and v.leader.param == "lr" and v.contenders == ()
    assert v.leader.ci_low > 0 and v.leader.low > max(x.importance for x in v.ranking[1:])
    assert v.steps == 4000 and v.center["cell"] == "gru" and {x.param for x in v.ranking} == set(v.center)
    assert set(v.noise) == set(v.center) - {"lr"}


def test_two_close_big_effects_are_contenders():
    v = verdict({"lr": 0.3, "cell": 0.29})
    assert v.kind == "contenders" and {v.leader.param, *(c.param for c in v.contenders)} == {"lr", "cell"}
    assert not {"lr", "cell"} & set(v.noise)


def test_no_effect_is_no_signal():
    v = verdict({})
    assert v.kind == "no_signal" and all(x.low == 0 for x in v.ranking)
    assert v.leader is v.ranking[0]  # the largest, named as noise


def test_no_signal_holds_on_most_null_designs():
    # The joint intervals keep "no signal" honest over many null designs: 11 hyperparameters' separate 95%
    # intervals would name one in about 40% of them.
    kinds = [verdict({}, seed=k).kind for k in range(40)]
    assert kinds.count("no_signal") >= 36, kinds


def test_an_unformed_center_is_not_formed():
    v = verdict({"lr": 0.3}, center_bpc=3.0)  # within 1 bit/char of the unigram baseline, 3.4
    assert v.kind == "not_formed" and v.leader is None


def test_one_seed_is_too_few_trials():
    v = verdict({"lr": 0.3}, seeds=(1000,))
    assert v.kind == "too_few_trials"


def test_a_run_without_a_local_design_is_global_only(make_run):
    a = analyze(load_run(make_run(n_trials=24, repeats=2)), n_bootstrap=4)
    assert a.verdict.kind == "global_only" and a.effects is None
    assert a.verdict.global_answer.case in ("leader", "contenders") and a.verdict.global_answer.leader == "lr"
    assert a.verdict.kind in KINDS


def test_a_rank_test_the_local_design_calls_noise_is_not_called_noise():
    v = verdict({"cell": 0.3}, search_lr_slope=0.4, n_search=40)
    seen = [c for c in v.caveats if isinstance(c, RankTestSees)]
    assert [c.param for c in seen] == ["lr"] and seen[0].p < 1e-3
    assert "lr" not in v.noise and v.leader.param == "cell"


def test_caveats_name_failures_unmoved_and_the_global_leader():
    v = verdict({"cell": 0.3}, diverge=("lr", 0.05623), answer=_global("leader", "optimizer"))
    failed = next(c for c in v.caveats if isinstance(c, FailedMoves))
    assert failed.moves == (("lr", "x5.6", 1, 2),)
    assert [(c.local, c.other) for c in v.caveats if isinstance(c, GlobalDiffers)] == [("cell", "optimizer")]
    run = local_rundata({"cell": 0.3})
    run.study["local"]["moves"] = [m for m in run.study["local"]["moves"] if m["param"] != "dropout"]
    v = decide(local_effects(run), _global())
    assert [c.params for c in v.caveats if isinstance(c, Unmoved)] == [("dropout",)]


@pytest.mark.parametrize("seed", range(12))
def test_a_lone_interval_without_a_joint_signal_is_said(seed):
    v = verdict({}, seed=seed)
    lone = [c for c in v.caveats if isinstance(c, SingleTest)]
    single = [x for x in v.ranking if x.ci_low > 0 or x.ci_high < 0]
    assert v.kind != "no_signal" or len(lone) == min(len(single), 1)


def test_a_move_that_breaks_training_in_every_seed_is_named_not_ranked():
    """In the default study's seed 0, 2 layers and the rnn_tanh cell diverged in both seeds around a high-rate SGD
    center; counted as uniform guesses they tied at +3.72 bits/char and "led". They are a finding of their own."""
    from reports._verdict import Diverges
    from reports._wording import bullets, headline

    v = verdict({"cell": 0.3}, diverge=("lr", 0.05623), diverge_seeds=2)
    broken = [c for c in v.caveats if isinstance(c, Diverges)]
    assert broken and broken[0].moves == (("lr", "x5.6", 2),)
    assert not any(isinstance(c, FailedMoves) for c in v.caveats)
    assert v.kind == "ranked" and v.leader.param == "cell"
    lr = next(x for x in v.ranking if x.param == "lr")
    assert lr.label != "x5.6" and lr.importance < 0.3  # ranked by its other move, which trained
    text = headline(v)
    assert "cell matters most" in text and "training broke at lr ×5.6" in text and len(text.split()) <= 40
    assert any("Training broke" in b for b in bullets(v))


def test_a_hyperparameter_whose_every_move_broke_training_was_still_moved():
    from reports._verdict import Diverges

    run = local_rundata({"cell": 0.3}, diverge=("lr", 0.05623), diverge_seeds=2)
    run.trials.loc[(run.trials["moved"] == "lr"), ["status", "best_val_bpc"]] = ["diverged", math.nan]
    v = decide(local_effects(run), _global())
    assert [len(c.moves) for c in v.caveats if isinstance(c, Diverges)] == [2]
    assert not any(isinstance(c, Unmoved) for c in v.caveats) and "lr" not in {x.param for x in v.ranking}
