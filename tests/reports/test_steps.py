"""Trials compared where quality has formed: known-answer runs in which a model learns per optimizer step.

`benchmarks.synthetic.stepped_run`: val_bpc falls from the unigram plateau (4.4) towards what the configuration
reaches once trained, as a function of optimizer steps; batch_size (16 or 64 at seq_len 50: 800 or 3,200
characters a step) is irrelevant once trained, lr is what matters. At the first rung (100k characters) the
batch-64 trials have taken 31 steps and sit on the plateau, so batch_size explains most of the variance there.
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pandas as pd
import pytest

from benchmarks.synthetic import stepped_run
from reports import analyze, choose_budget, load_run
from reports._budget import rungs
from reports._load import RunData
from reports._steps import plateau_exit, step_chars


def write(run: RunData, path: pathlib.Path, **study) -> pathlib.Path:
    """Write an in-memory run through the results contract (study.json and the Parquet tables)."""
    path.mkdir(parents=True, exist_ok=True)
    space = {}
    for p in run.params:
        space[p.name] = ({"type": "categorical", "choices": list(p.choices)} if p.is_categorical else
                         {"type": p.kind, "low": p.low, "high": p.high, "log": p.log, "step": p.step})
    s = {**run.study, "search_space": space, **study}
    (path / "study.json").write_text(json.dumps(s), encoding="utf-8")
    run.trials.to_parquet(path / "trials.parquet", index=False)
    run.curves.astype({"chars_seen": "int64"}).to_parquet(path / "curves.parquet", index=False)
    run.samples.to_parquet(path / "samples.parquet", index=False)
    run.baselines.to_parquet(path / "baselines.parquet", index=False)
    return path


def test_slow_stepping_hyperparameter_does_not_lead_where_it_had_not_formed(tmp_path):
    # Trials stopped at 200k characters, before the batch-64 ones learned: no budget qualifies, and the report
    # says so instead of naming batch_size, which leads the unformed comparison only through the steps it sets.
    early = load_run(write(stepped_run(1, evals=(100_000, 200_000)), tmp_path / "early"))
    a = analyze(early, n_bootstrap=10)
    assert not a.budget.formed and a.budget.chars == 100_000
    assert a.importance.table["param"].iloc[0] == "batch_size"  # the artifact the rule is there to catch
    assert a.verdict.kind == "global_only" and a.verdict.global_answer.case == "not_formed"
    assert a.verdict.global_answer.carried == ("batch_size",)
    s = " ".join([a.summary, *a.bullets])
    assert a.summary.startswith("Quality had not formed at any budget these trials share: at 100k characters 25 of 40 "
                                "compared trials had taken fewer than 100 optimizer steps (the fewest 31)"), s
    assert "25 of 40 were not yet 1 bit/char below the unigram baseline (4.40)" in s
    assert " matters most: it explains" not in s and "batch_size leads" not in s
    assert "batch_size ranks first there, but its lead is carried by the optimizer steps it sets (Spearman −0." in s
    assert "320k characters for the trials that take 3,200 a step" in s

    # The same study trained on to 400k: the comparison moves to the first milestone where every compared trial
    # had taken 100 steps, and names the hyperparameter that matters once trained.
    full = load_run(write(stepped_run(1), tmp_path / "full"))
    b = analyze(full, n_bootstrap=10)
    assert b.budget.formed and b.budget.chars == 400_000 and b.budget.moved_from == 100_000
    assert b.importance.table["param"].iloc[0] == "lr" and b.summary.startswith("lr matters most: it explains "), \
        b.summary
    assert "compared at 400k training characters (at least 125 optimizer steps each)" in b.summary
    assert ("At this budget 100% of the compared trials (18 of 18) had formed, at least 1 bit/char below the "
            "unigram baseline (4.40).") in b.bullets
    assert any(x.startswith("The fewest optimizer steps any compared trial had taken is 125") for x in b.bullets)
    assert any(x.startswith("The comparison is at 400k rather than at 100k, where 25 of 40 trials had taken fewer "
                            "than 100 steps") for x in b.bullets), b.bullets
    # from the curves: trials first got 1 bit below unigram after 125 steps (the first evaluation past 100); the
    # 13 batch-64 trials stopped at 100k (31 steps) never did
    assert (b.plateau.n_trials, b.plateau.n_left, b.plateau.median, b.plateau.p90) == (40, 27, 125, 125)


def test_a_leader_carried_by_steps_is_named_as_such(tmp_path):
    # A study that says 20 steps are enough (scheduler.min_steps) is compared at 100k, where batch_size leads
    # only because the batch-64 trials had taken a quarter of the steps.
    run = load_run(write(stepped_run(1), tmp_path / "r", scheduler={**stepped_run(1).study["scheduler"],
                                                                     "min_steps": 20}))
    a = analyze(run, n_bootstrap=10)
    assert a.budget.formed and a.budget.chars == 100_000
    assert a.verdict.global_answer.case == "carried" and a.verdict.global_answer.leader == "batch_size"
    assert a.summary.startswith("batch_size leads, but its lead is carried by the optimizer steps it sets "
                                "(Spearman −0."), a.summary
    assert "compared at 100k training characters (at least 31 optimizer steps each)" in a.summary


def test_equal_steps_are_stated_as_steps(tmp_path):
    run = stepped_run(2)
    run.trials["param.batch_size"] = 16.0  # every trial takes 800 characters a step
    a = analyze(load_run(write(run, tmp_path / "r")), n_bootstrap=4)
    assert a.budget.chars == 100_000 and a.budget.formed
    assert "trials compared after 125 optimizer steps (100k training characters, 800 per step)" in a.summary
    assert "Spearman correlation of score with steps taken: n/a: every compared trial took the same 125 steps" \
        in " ".join(a.bullets), a.bullets


def test_recorded_steps_are_read_and_agree_with_the_derivation(tmp_path):
    old = load_run(write(stepped_run(3), tmp_path / "old"))
    new = load_run(write(stepped_run(3, record_steps=True), tmp_path / "new"))
    assert "steps" in new.curves and "steps" not in old.curves and "step_chars" in new.trials
    a, b = choose_budget(old), choose_budget(new)
    assert a.chars == b.chars == 400_000
    pd.testing.assert_frame_equal(a.values, b.values)
    # a recorded steps column wins over the derivation
    c = new.curves.copy()
    c["steps"] = 1_000
    moved = choose_budget(RunData(new.run_dir, new.study, new.params, new.trials, c, new.samples,
                                  baselines=new.baselines))
    assert moved.chars == 100_000 and moved.formation.same_steps == 1_000


def test_characters_per_step_from_the_contract(tmp_path):
    base = stepped_run(4)
    t = base.trials

    def per(trials=t, **study):
        return step_chars(RunData(None, {**base.study, **study}, base.params, trials, base.curves, base.samples))

    assert set(per().unique()) == {800.0, 3200.0}  # searched batch_size x fixed seq_len
    no_bs = t.drop(columns="param.batch_size")
    assert set(per(no_bs, fixed={}).unique()) == {64 * 50}  # the trainer's defaults
    assert set(per(no_bs, fixed={"batch_size": 8, "seq_len": 100}).unique()) == {800}
    assert set(per(no_bs, fixed={"step_chars": 1000, "seq_len": 30}).unique()) == {33 * 30}  # batch round(1000/30)
    assert set(per(t.assign(step_chars=1234)).unique()) == {1234}  # the recorded column wins


def test_rungs_are_read_from_study_json_and_recomputed_only_for_old_runs():
    sched = {"grace_period": 100_000, "reduction_factor": 3, "max_t": 900_000}
    assert rungs({"scheduler": sched}) == [100_000, 300_000]
    assert rungs({"scheduler": {**sched, "rungs": [150_000, 450_000]}}) == [150_000, 450_000]
    assert rungs({}) == []


def test_plateau_exit_without_a_baseline_is_unknown():
    run = stepped_run(5)
    bare = RunData(None, run.study, run.params, run.trials, run.curves, run.samples)
    p = plateau_exit(bare, run.trials["trial_id"].tolist())
    assert p.n_left == 0 and math.isnan(p.median)
    f = choose_budget(bare).formation
    assert math.isnan(f.formed_share) and f.fewest_steps == 125


@pytest.mark.parametrize("seed", [6, 7])
def test_known_answer_steps_shape_keeps_the_slow_parameter_out(seed):
    from benchmarks.calibrate import calibrate, coverage_table
    from benchmarks.synthetic import SHAPES

    df = calibrate(["steps"], 1, seed=seed, n_bootstrap=10)
    t = coverage_table(df).set_index("shape")
    assert t.loc["steps", "slow_kept_out"] == 1.0
    assert np.all(df.groupby("rep")["leader"].first() == "lr") and SHAPES["steps"].slow == "batch_size"


def test_the_report_text_says_what_formed(tmp_path):
    # Markdown and HTML render the same blocks: the answer, the labelled importance and the Equal budgets section.
    from reports._document import document
    from reports._render import to_html, to_markdown

    early = analyze(load_run(write(stepped_run(1, evals=(100_000, 200_000)), tmp_path / "early")), n_bootstrap=4)
    md = to_markdown(document(early))
    assert "**Quality had not formed at any budget these trials share" in md
    assert "## Importance (NOT FORMED: trials had not all left the unigram plateau at this budget)" in md
    assert "quality had NOT formed" in md and "38% (15 of 40) of the compared trials had formed" in md
    assert "The steps it takes to leave the plateau, measured from curves: 27 of 40" in md
    full = analyze(load_run(write(stepped_run(1), tmp_path / "full")), n_bootstrap=4)
    html = to_html(document(full), {}, "t")
    assert "so quality had formed at this budget" in html and "the first later milestone where every" in html
    assert "NOT FORMED" not in html


def test_a_recorded_zero_is_no_step_count():
    # The study writes steps 0 for a result that did not report them: derive those, keep the others.
    run = stepped_run(3, record_steps=True)
    c = run.curves.copy()
    c.loc[c.index[:5], "steps"] = 0
    from reports._steps import with_steps

    got = with_steps(c, run)["steps"]
    pd.testing.assert_series_equal(got, with_steps(run.curves, run)["steps"])


def test_recorded_rung_counts_are_shown(tmp_path):
    from reports._document import document
    from reports._render import to_markdown

    run = stepped_run(1)
    sched = {**run.study["scheduler"], "rung_counts": [{"chars": 100_000, "steps": 31, "planned": 40, "reached": 40},
                                                       {"chars": 400_000, "steps": 125, "planned": 10, "reached": 18}]}
    md = to_markdown(document(analyze(load_run(write(run, tmp_path / "r", scheduler=sched)), n_bootstrap=4)))
    assert "| 400,000 | 125 | 10 | 18 |" in md, md[md.find("Promotion"):][:800]


def test_contenders_that_set_the_steps_are_named_as_carried():
    # The seed-1 sentence of issue 18: seq_len and batch_size "in an order these trials cannot settle".
    from dataclasses import replace

    from reports import compute_importance
    from reports._budget import Budget
    from reports._verdict import global_answer
    from reports._wording import global_bullets
    from reports._steps import Formation
    from tests.reports.test_analysis import SPECS, _study

    params, y = _study(4.0, 1.0, n=40, seed=1)
    res = compute_importance(SPECS, params, y, n_bootstrap=30, random_state=0)
    res = replace(res, table=res.table.assign(param=res.table["param"].replace({"a": "seq_len", "b": "batch_size"})))
    # formed (a study that asks 5 steps), so the ranking is stated, with its step-carried contenders
    f = Formation(5, 40, 7, 0, 4.45, 16, -0.74, math.nan, True, 12_800)
    g = global_answer(res, Budget(100_000.0, 40, 1, False, pd.DataFrame({"trial_id": [], "y": []}), pd.DataFrame(),
                                  formation=f), "val_bpc")
    assert g.case == "contenders" and set(g.carried) == {"seq_len", "batch_size"}
    s = " ".join(global_bullets(g))
    assert f"The lead of {g.carried[0]} and {g.carried[1]} is carried by the optimizer steps they set (Spearman −0.74" \
        in s, s


def test_characters_per_step_are_the_trials_own_not_budget_over_steps(tmp_path):
    # 768 characters a step: the evaluation past 100k comes at step 131 (100,608 characters); 100k / 131 is 763.
    run = stepped_run(2)
    run.trials["param.batch_size"] = 16.0
    c = run.curves.copy()
    run.study["fixed"] = {"seq_len": 48}
    c["chars_seen"] = -(-c["chars_seen"] // 768) * 768
    run = RunData(None, run.study, run.params, run.trials, c, run.samples, baselines=run.baselines)
    a = analyze(load_run(write(run, tmp_path / "r")), n_bootstrap=0)
    assert "compared after 131 optimizer steps (100k training characters, 768 per step)" in a.summary, a.summary
