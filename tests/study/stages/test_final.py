"""The final stage's settings, as the final stage and benchmarks.final build them (one function)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd

from charrnn.config import TrainConfig
from study.inputs import resolve_spec
from study.stages.final import final_config, final_texts


def test_the_final_config_is_the_spec_s_final_terms_over_the_configuration():
    spec = resolve_spec("sherlock")
    params = {"cell": "gru", "hidden_size": 64, "num_layers": 1, "seq_len": 25, "lr_scale": 1.0, "optimizer": "adam"}
    flat = final_config(spec, params, 1_000_000, 90.0, 7)
    config = TrainConfig.from_flat(flat)  # every key is the trainer's
    final = spec.final
    assert config.train_chars == 0 and config.budget_chars == 1_000_000 and config.time_limit_s == 90.0
    assert config.seed == 7 and config.eval_at == () and config.val_chars == 0
    assert (config.evals_per_trial, config.patience, config.min_delta) == (final["evals"], final["patience"],
                                                                           final["min_delta"])
    assert config.batch_size * config.seq_len == (final["step_chars"] or spec.fixed["step_chars"])
    assert config.lr_schedule == spec.fixed["lr_schedule"] and config.hidden_size == 64


def test_the_final_model_scores_its_share_of_the_validation_text():
    spec = resolve_spec("sherlock")
    corpus = SimpleNamespace(train=np.arange(10), val=np.arange(spec.final["val_chars"] + 5), test=np.arange(3))
    texts = final_texts(spec, corpus)
    assert len(texts["val"]) == spec.final["val_chars"] and texts["train"] is corpus.train


def test_a_replayed_plan_gives_the_final_model_its_source_s_budget():
    from study.stages.final import replayed_budget

    plan = SimpleNamespace(time_plan={"replayed": True, "final_budget_chars": 2_048_000, "final_chars_per_s": 8192.0},
                           final_chars=50_000_000)
    assert replayed_budget(plan) == (2_048_000, 8192.0)
    assert replayed_budget(SimpleNamespace(time_plan=plan.time_plan, final_chars=1_000_000)) == (1_000_000, 8192.0)
    assert replayed_budget(SimpleNamespace(time_plan=plan.time_plan, final_chars=0)) is None  # no final model
    measured = {k: v for k, v in plan.time_plan.items() if k != "replayed"}  # the study's own plan, resumed
    assert replayed_budget(SimpleNamespace(time_plan=measured, final_chars=50_000_000)) is None
    assert replayed_budget(SimpleNamespace(time_plan={"replayed": True}, final_chars=50_000_000)) is None
    assert replayed_budget(SimpleNamespace(time_plan=None, final_chars=50_000_000)) is None
    flat = final_config(resolve_spec("sherlock"), {}, 2_048_000, 90.0, 7, decided_chars_per_s=8192.0)
    assert TrainConfig.from_flat(flat).decided_chars_per_s == 8192.0


def test_study_json_records_the_final_budget_as_decided():
    import json

    from charrnn.pacer import BudgetDecision, Refit, chars_to_give
    from study.stages.final import budget_record

    assert budget_record({"budget_decision_json": ""}, 60_000) == {
        "budget_chars": 60_000, "decided_chars_per_s": None, "budget_from": "fixed", "refit": None,
        "extended": None, "stopped_at": None}
    refit = Refit(at_chars=500_000, from_chars=1_024_000, to_chars=800_000, chars_per_s=5000.0,
                  decided_chars_per_s=8192.0, projected_s=700.0, limit_s=600.0)
    decision = BudgetDecision(budget_chars=1_024_000, chars_per_s=8192.0, measured_chars_per_s=9000.0, refit=refit)
    got = budget_record({"budget_decision_json": json.dumps(decision.to_dict())}, 50_000_000)
    assert (got["budget_chars"], got["decided_chars_per_s"], got["budget_from"]) == (1_024_000, 8192.0, "fitted")
    assert got["refit"]["to_chars"] == 800_000 and got["refit"]["why"] == refit.why and got["stopped_at"] is None
    assert got["extended"] is None and chars_to_give(got) == 1_024_000  # a cut is not given to another run
    grown = Refit(at_chars=100_000, from_chars=1_024_000, to_chars=1_300_000, chars_per_s=11_000.0,
                  decided_chars_per_s=8192.0, projected_s=480.0, limit_s=600.0)
    got = budget_record({"budget_decision_json": json.dumps(BudgetDecision(
        budget_chars=1_024_000, chars_per_s=8192.0, extended=grown).to_dict())}, 50_000_000)
    assert got["budget_chars"] == 1_024_000 and got["extended"]["why"] == grown.why and chars_to_give(got) == 1_300_000
    given = BudgetDecision(budget_chars=1_024_000, chars_per_s=8192.0, given=True, stopped_at=990_000)
    got = budget_record({"budget_decision_json": json.dumps(given.to_dict())}, 1_024_000)
    assert got["budget_from"] == "replayed" and got["stopped_at"] == 990_000


def test_the_final_model_caps_the_learning_rate_at_the_optimizers_usual_rate():
    """A rate that wins a few hundred steps is not the rate for a run many times longer (issue 18)."""
    from types import SimpleNamespace

    from study.stages.final import final_rate as _final_rate
    from study.inputs import resolve_spec

    plan = SimpleNamespace(spec=resolve_spec("sherlock"))
    assert _final_rate(plan, {"optimizer": "adam", "lr_scale": 2.82, "seq_len": 25}) == {"lr_scale": 1.0}
    assert _final_rate(plan, {"optimizer": "sgd", "lr_scale": 0.5, "seq_len": 25}) == {}
    smoke = SimpleNamespace(spec=resolve_spec("smoke"))
    assert _final_rate(smoke, {"optimizer": "adam", "lr": 0.0249, "seq_len": 16, "batch_size": 16}) == {"lr": 2e-3}


def test_the_race_puts_the_spec_s_baseline_over_the_chosen_configuration():
    from study.stages.final import candidates

    spec = resolve_spec("sherlock")
    chosen = {"cell": "gru", "hidden_size": 256, "num_layers": 1, "lr_scale": 1.0, "optimizer": "sgd", "seq_len": 200,
              "dropout": 0.003, "grad_clip": 1.3, "embedding_dim": 112, "train_chars": 500_000}
    pool = candidates(spec, chosen)
    assert [c.name for c in pool] == ["chosen", "baseline", "gru"] and pool[0].params == chosen
    baseline = pool[1].params
    assert {k: baseline[k] for k in spec.final["baseline"]} == spec.final["baseline"]
    assert baseline["train_chars"] == 500_000  # what the baseline leaves out keeps the chosen value
    # A study that chose the baseline itself does not race it; a spec that does not race trains one configuration.
    assert [c.name for c in candidates(spec, baseline)] == ["chosen", "gru"]
    no_race = SimpleNamespace(final={**spec.final, "race_evals": 0})
    assert [c.name for c in candidates(no_race, chosen)] == ["chosen"]
    # A baseline's rate replaces the chosen one's, in whichever form the chosen trial has it.
    lr_form = candidates(spec, {**{k: v for k, v in chosen.items() if k != "lr_scale"}, "lr": 0.3})[1].params
    assert "lr" not in lr_form and lr_form["lr_scale"] == spec.final["baseline"]["lr_scale"]


def test_the_winner_s_whole_run_and_the_others_races_fit_the_final_stage_s_time():
    from study.stages.final import race_cost, race_limit_s, survivors

    # The better half (at least two) goes on at each rung but the last, which keeps the winner.
    assert survivors(3, 2) == [2, 1] and survivors(2, 2) == [2, 1] and survivors(2, 1) == [1]
    assert survivors(5, 3) == [3, 2, 1] and survivors(8, 2) == [4, 1]
    sherlock = resolve_spec("sherlock")
    assert sherlock.final["race_evals"] == [2, 4] and sherlock.final["evals"] == 10
    # Of three, one drops at the 2nd of 10 evaluations and one at the 4th: 0.2 + 0.4 of a run.
    assert math.isclose(race_cost(sherlock, 3), 0.6) and math.isclose(race_cost(sherlock, 2), 0.4)
    one_rung = SimpleNamespace(final={**sherlock.final, "race_evals": [2]})
    assert math.isclose(race_cost(one_rung, 3), 0.4) and math.isclose(race_cost(one_rung, 2), 0.2)
    for spec, n in ((sherlock, 3), (sherlock, 2), (one_rung, 3)):
        each = race_limit_s(1000.0, race_cost(spec, n))
        # What every candidate trains, rung by rung, adds up to the stage's time: the winner's whole run included.
        left, trained, previous = n, 0.0, 0
        for rung, keep in zip(spec.final["race_evals"], survivors(n, len(spec.final["race_evals"]))):
            trained, left, previous = trained + left * (rung - previous) / 10 * each, keep, rung
        assert math.isclose(trained + (1 - previous / 10) * each, 1000.0)
    assert race_limit_s(0.0, 0.6) == 0.0  # no limit stays none


def test_the_race_goes_to_the_best_normal_candidate_and_a_tie_to_the_chosen_one():
    from study.stages.final import race_winner

    rows = pd.DataFrame({"candidate": ["chosen", "baseline"], "status": ["stopped", "stopped"],
                         "best_val_bpc": [2.09, 2.01]})
    assert race_winner(rows)["candidate"] == "baseline"
    assert race_winner(rows.assign(best_val_bpc=[2.0, 2.0]))["candidate"] == "chosen"
    assert race_winner(rows.assign(status=["stopped", "diverged"]))["candidate"] == "chosen"
    assert race_winner(rows.assign(best_val_bpc=[math.nan, 2.5]))["candidate"] == "baseline"
    assert race_winner(rows.assign(status=["failed", "diverged"])) is None


def test_a_race_round_ranks_the_normal_candidates_best_first_and_ties_in_race_order():
    from study.stages.final import race_ranking

    rows = pd.DataFrame({"candidate": ["chosen", "baseline", "gru"], "status": ["stopped", "stopped", "stopped"],
                         "best_val_bpc": [2.34, 2.04, 2.03]})
    assert list(race_ranking(rows)["candidate"]) == ["gru", "baseline", "chosen"]
    assert list(race_ranking(rows.assign(best_val_bpc=[2.0, 2.1, 2.0]))["candidate"]) == ["chosen", "gru", "baseline"]
    assert list(race_ranking(rows.assign(status=["stopped", "diverged", "stopped"]))["candidate"]) == ["gru", "chosen"]


def test_the_spec_s_alternatives_race_too_and_no_configuration_races_twice():
    from study.stages.final import candidates

    spec = resolve_spec("sherlock")
    gru = {"cell": "gru", "num_layers": 1, "hidden_size": 512}
    racing = SimpleNamespace(final={**spec.final, "alternatives": {"gru": gru, "same": dict(spec.final["baseline"])}})
    chosen = {"cell": "lstm", "hidden_size": 256, "num_layers": 2, "lr_scale": 1.0, "optimizer": "sgd", "seq_len": 200}
    pool = candidates(racing, chosen)
    assert [c.name for c in pool] == ["chosen", "baseline", "gru"]  # "same" is the baseline again
    assert {k: pool[2].params[k] for k in gru} == gru and pool[2].params["optimizer"] == "sgd"


def test_a_candidate_that_broke_in_the_race_is_named_by_its_status_not_a_score():
    from study.stages.final import race_scores

    rows = [{"candidate": "chosen", "best_val_bpc": 2.1551, "status": "stopped"},
            {"candidate": "baseline", "best_val_bpc": None, "status": "diverged"}]
    assert race_scores(rows) == "chosen 2.1551, baseline diverged"


def test_a_later_study_here_trains_the_budget_an_earlier_one_decided_for_the_same_run(monkeypatch):
    import json

    from charrnn.pacer import BudgetDecision
    from study.machine import recall_budget
    from study.stages.final import budget_key, budget_record, given_budget, keep_budget

    spec = resolve_spec("sherlock")
    plan = SimpleNamespace(time_plan={"minutes": 30}, final_chars=50_000_000, corpus=SimpleNamespace(sha256="abc"))
    point = final_config(spec, {"cell": "gru"}, 0, 1000.0, 0)
    key = budget_key(plan, point, 2, 0)
    # Its time and budget are not part of the key; its configuration, seed, corpus and resources are.
    timed = {**point, "time_limit_s": 900.0, "budget_chars": 7, "decided_chars_per_s": 1.0}
    assert budget_key(plan, timed, 2, 0) == key
    assert budget_key(plan, {**point, "cell": "lstm"}, 2, 0) != key
    assert budget_key(plan, {**point, "seed": 1}, 2, 0) != key
    assert budget_key(plan, point, 1, 0) != key
    assert budget_key(SimpleNamespace(corpus=SimpleNamespace(sha256="def")), point, 2, 0) != key
    import study.stages.final as final_stage
    rule = final_stage.PACER_RULE
    monkeypatch.setattr(final_stage, "PACER_RULE", rule - 1)
    assert budget_key(plan, point, 2, 0) != key  # a budget decided under the pacer's earlier rule is not given
    monkeypatch.setattr(final_stage, "PACER_RULE", rule)

    assert given_budget(plan, "chosen", False, key, 1000.0) is None  # nothing remembered: the run decides
    decided = BudgetDecision(budget_chars=15_585_600, chars_per_s=18_300.0, measured_chars_per_s=18_300.0)
    keep_budget(key, {"budget_decision_json": json.dumps(decided.to_dict())}, 1000.0)
    assert given_budget(plan, "chosen", False, key, 960.0) == (15_585_600, 18_300.0, "remembered")
    assert given_budget(SimpleNamespace(**{**vars(plan), "final_chars": 1_000_000}), "chosen", False, key,
                        960.0) == (1_000_000, 18_300.0, "remembered")  # --final-chars still caps it
    assert given_budget(plan, "chosen", False, key, 500.0) is None  # half the time: decided afresh
    assert given_budget(SimpleNamespace(**{**vars(plan), "time_plan": None}), "chosen", False, key, 1000.0) is None
    # A replayed plan's budget comes first.
    replay = {"replayed": True, "final_budget_chars": 2_048_000, "final_chars_per_s": 8192.0}
    assert given_budget(SimpleNamespace(**{**vars(plan), "time_plan": replay}), "chosen", False, key,
                        1000.0) == (2_048_000, 8192.0, "replayed")
    # A budget the run was given is not remembered again as its own decision.
    given = BudgetDecision(budget_chars=1_000, chars_per_s=1.0, given=True)
    keep_budget(key, {"budget_decision_json": json.dumps(given.to_dict())}, 1000.0)
    assert recall_budget(key, 1000.0).chars == 15_585_600
    got = budget_record({"budget_decision_json": json.dumps(given.to_dict())}, 1_000, "remembered")
    assert got["budget_from"] == "remembered"
