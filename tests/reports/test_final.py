"""The report's final-model section: with and without a final model and baselines (older runs stay readable)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports import build_report
from reports._final import baseline_table, final_model, unstable_configurations
from reports._load import load_run
from benchmarks.synthetic import HOSTILE

BASELINES = [("unigram", "val", 4.45), ("unigram", "test", 4.45), ("xz", "val", 2.23), ("xz", "test", 2.20),
             ("ppmd", "val", 1.76), ("ppmd", "test", 1.72)]


def _add_final(run_dir, test_bpc=1.20, hostile=False):
    trials = pd.read_parquet(run_dir / "trials.parquet")
    best = trials[trials["role"] == "search"].sort_values("best_val_bpc").iloc[0]
    row = best.copy()
    row["trial_id"], row["role"], row["status"], row["repeat_of"] = "final_0", "final", "completed", best["trial_id"]
    row["best_val_bpc"], row["chars_seen"], row["wall_s"] = test_bpc + 0.03, 9_000_000, 600.0
    trials["test_bpc"] = np.nan
    row["test_bpc"] = test_bpc
    trials = pd.concat([trials, row.to_frame().T], ignore_index=True).astype(trials.dtypes.to_dict())
    trials.to_parquet(run_dir / "trials.parquet", index=False)
    curves = pd.read_parquet(run_dir / "curves.parquet")
    extra = pd.DataFrame({"trial_id": "final_0", "chars_seen": [3_000_000, 6_000_000, 9_000_000],
                          "wall_s": [200.0, 400.0, 600.0], "train_bpc": [1.9, 1.75, 1.7],
                          "val_bpc": [1.95, 1.8, test_bpc + 0.03], "best_val_bpc": [1.95, 1.8, test_bpc + 0.03]})
    pd.concat([curves, extra], ignore_index=True).astype({"trial_id": "string"}).to_parquet(
        run_dir / "curves.parquet", index=False)
    samples = pd.read_parquet(run_dir / "samples.parquet")
    text = HOSTILE if hostile else "Holmes looked at me across the table."
    extra = pd.DataFrame({"trial_id": "final_0", "chars_seen": 9_000_000, "temperature": [0.5, 0.8],
                          "text": [text, text + " And so"], "kind": "final", "known_word_frac": [0.97, 0.95]})
    pd.concat([samples, extra], ignore_index=True).to_parquet(run_dir / "samples.parquet", index=False)
    pd.DataFrame(BASELINES, columns=["method", "split", "bpc"]).to_parquet(run_dir / "baselines.parquet", index=False)
    return run_dir


def test_an_older_run_without_final_model_or_baselines_still_builds(make_run, tmp_path):
    run = load_run(make_run(n_trials=20))
    assert run.final.empty and run.baselines.empty and final_model(run) is None
    out = build_report(run.run_dir, tmp_path / "r", n_bootstrap=10)
    md = (out / "report.md").read_text()
    assert "This run has no final model" in md and not (out / "final.png").exists()


def test_the_final_model_leads_with_its_test_score_beside_the_baselines(make_run, tmp_path):
    run_dir = _add_final(make_run(n_trials=20))
    run = load_run(run_dir)
    # The final row never counts as a search trial.
    assert "final_0" not in set(run.trials["trial_id"]) and list(run.final["trial_id"]) == ["final_0"]
    fm = final_model(run)
    assert fm.test_bpc == 1.20 and fm.source_trial and list(fm.samples["temperature"]) == [0.5, 0.8]
    table = baseline_table(run, fm)
    assert table["model"].iloc[0] == "final model (this study)"  # best first: it beats PPMd's 1.76 here
    assert set(table["model"]) >= {"PPMd order 8", "xz -9e", "unigram (character frequencies)"}
    out = build_report(run_dir, tmp_path / "r", n_bootstrap=10)
    md = (out / "report.md").read_text()
    first = md.index("The final model scores 1.200 bits/char on the test text")
    assert first < md.index("## Importance")
    assert "0.520 bits/char better than PPMd" in md and f"charrnn.sample --run {run_dir}" in md
    assert (out / "final.png").exists()


def test_final_samples_are_escaped_and_fenced(make_run, tmp_path):
    run_dir = _add_final(make_run(n_trials=20), hostile=True)
    out = build_report(run_dir, tmp_path / "r", n_bootstrap=10)
    html = (out / "index.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    md = (out / "report.md").read_text()
    assert "````" in md  # a fence longer than the sample's backtick runs


def test_unstable_configurations_are_found_from_the_repeats(make_run):
    run_dir = make_run(n_trials=20)
    trials = pd.read_parquet(run_dir / "trials.parquet")
    rep = trials[trials["role"] == "repeat"]
    assert len(rep) >= 2
    best = trials[trials["role"] == "search"].sort_values("best_val_bpc")["trial_id"].iloc[0]
    trials["repeat_of"] = pd.Series([best if r == "repeat" else None for r in trials["role"]], dtype="string")
    trials.loc[rep.index[0], "status"] = "diverged"
    trials.to_parquet(run_dir / "trials.parquet", index=False)
    got = unstable_configurations(load_run(run_dir))
    assert len(got) == 1 and got["bad"].iloc[0] == 1 and got["repeats"].iloc[0] == len(rep)
    assert got["trial_id"].iloc[0] == best and not math.isnan(got["repeats"].iloc[0])


def test_the_final_budget_s_decision_is_worded_from_study_json():
    from reports._final import _budget_words

    assert _budget_words({}) == "" and _budget_words({"budget_chars": 60_000, "budget_from": "fixed"}) == ""
    fitted = {"budget_chars": 1_024_000, "budget_from": "fitted", "decided_chars_per_s": 8192.0, "refit": None,
              "stopped_at": None}
    words = _budget_words(fitted)
    assert words.startswith("Its budget, 1,024,000 characters, was decided once, at its start") and "8,192" in words
    assert "cut" not in words and "ran out" not in words
    cut = _budget_words({**fitted, "refit": {"why": "cut from 1,024,000 to 800,000 characters"}, "stopped_at": 790_000})
    assert "markedly slower" in cut and "cut from 1,024,000 to 800,000 characters." in cut and "790,000" in cut
    both = _budget_words({**fitted, "extended": {"why": "extended from 1,024,000 to 1,300,000 characters",
                                                 "at_chars": 100_000},
                          "refit": {"why": "cut from 1,300,000 to 1,200,000 characters", "at_chars": 700_000}})
    assert both.index("markedly faster") < both.index("extended from 1,024,000") < both.index("markedly slower")
    assert "its budget was extended once" in both and "its budget was cut once" in both
    assert "whose plan this one replays" in _budget_words({**fitted, "budget_from": "replayed"})
    remembered = _budget_words({**fitted, "budget_from": "remembered"})
    assert "an earlier study of the same configuration decided on this machine at 8,192 chars/s" in remembered


def _add_race(run_dir, winner="baseline"):
    """The final stage's race beside `_add_final`'s model: two race rows, their curves, study.json `final.race`, and
    the final row as the winner's."""
    import json

    trials = pd.read_parquet(run_dir / "trials.parquet")
    final = trials[trials["role"] == "final"].iloc[0]
    rows = []
    for k, (name, val) in enumerate((("chosen", 2.09), ("baseline", 2.01))):
        row = final.copy()
        row["trial_id"], row["role"], row["status"], row["best_val_bpc"] = f"race_{k}", "race", "stopped", val
        row["test_bpc"], row["chars_seen"] = np.nan, 3_000_000
        rows.append(row)
    trials["candidate"] = pd.Series([None] * len(trials), dtype="string")
    trials.loc[trials["role"] == "final", "candidate"] = winner
    rows = pd.DataFrame(rows).assign(candidate=["chosen", "baseline"])
    trials = pd.concat([trials, rows], ignore_index=True).astype(trials.dtypes.to_dict())
    trials.to_parquet(run_dir / "trials.parquet", index=False)
    curves = pd.read_parquet(run_dir / "curves.parquet")
    extra = pd.DataFrame({"trial_id": ["race_0", "race_1"], "chars_seen": [3_000_000] * 2, "wall_s": [200.0] * 2,
                          "train_bpc": [2.1, 2.0], "val_bpc": [2.09, 2.01], "best_val_bpc": [2.09, 2.01]})
    pd.concat([curves, extra], ignore_index=True).astype({"trial_id": "string"}).to_parquet(
        run_dir / "curves.parquet", index=False)
    study = json.loads((run_dir / "study.json").read_text())
    study["final"] = {**study.get("final", {}), "race": {
        "evals": 2, "share": 0.2, "limit_s": 816.0, "winner": winner,
        "candidates": [{"candidate": "chosen", "trial_id": "race_0", "status": "stopped", "best_val_bpc": 2.09},
                       {"candidate": "baseline", "trial_id": "race_1", "status": "stopped", "best_val_bpc": 2.01}]}}
    (run_dir / "study.json").write_text(json.dumps(study))
    return run_dir


def test_a_study_whose_configuration_lost_the_final_race_says_so_and_hands_over_the_baseline(make_run, tmp_path):
    run = load_run(_add_race(_add_final(make_run(n_trials=20))))
    # The race's rows are the final stage's, never search trials.
    assert not set(run.trials["trial_id"]) & {"race_0", "race_1"} and list(run.race["candidate"]) == ["chosen",
                                                                                                       "baseline"]
    assert final_model(run).candidate == "baseline"
    out = build_report(run.run_dir, tmp_path / "r", n_bootstrap=10)
    md = " ".join((out / "report.md").read_text().split())
    assert "It is the hand-picked baseline's configuration, which beat search trial" in md
    assert ("validation bits/char the study's configuration 2.090, the hand-picked baseline (the spec's "
            "final.baseline) 2.010. The hand-picked baseline won" in md)
    assert "this study's configuration lost to it" in md and (out / "final.png").exists()


def test_a_study_whose_configuration_won_the_final_race_says_it_went_on(make_run, tmp_path):
    run = load_run(_add_race(_add_final(make_run(n_trials=20)), winner="chosen"))
    md = " ".join((build_report(run.run_dir, tmp_path / "r", n_bootstrap=10) / "report.md").read_text().split())
    assert "The study's configuration won, and went on" in md and "It is search trial" in md


def test_an_alternative_that_won_the_race_is_named_and_the_baseline_s_win_over_the_chosen_said(make_run, tmp_path):
    import json

    run_dir = _add_race(_add_final(make_run(n_trials=20)), winner="gru")
    study = json.loads((run_dir / "study.json").read_text())
    study["final"]["race"]["candidates"].append({"candidate": "gru", "trial_id": "race_2", "status": "stopped",
                                                 "best_val_bpc": 1.99})
    (run_dir / "study.json").write_text(json.dumps(study))
    md = " ".join((build_report(run_dir, tmp_path / "r", n_bootstrap=10) / "report.md").read_text().split())
    assert "It is the hand-picked alternative gru's configuration, which beat search trial" in md
    assert "the hand-picked alternative gru (final.alternatives.gru) 1.990" in md
    assert ("The hand-picked alternative gru won: on the final model's terms this study's configuration lost to "
            "it" in md and "lost to the hand-picked baseline on the final model's terms too" in md)


def test_a_race_in_two_rounds_gives_each_rung_s_scores_and_compares_the_baseline_where_both_raced(make_run,
                                                                                                    tmp_path):
    import json

    run_dir = _add_race(_add_final(make_run(n_trials=20)), winner="gru")
    study = json.loads((run_dir / "study.json").read_text())
    study["final"]["race"] = {"evals": [2, 4], "cost": 0.6, "limit_s": 510.0, "winner": "gru", "candidates": [
        {"candidate": "chosen", "trial_id": "race_0", "status": "stopped", "best_val_bpc": 2.34,
         "scores": [[2, 2.34]]},
        {"candidate": "baseline", "trial_id": "race_1", "status": "stopped", "best_val_bpc": 1.95,
         "scores": [[2, 2.04], [4, 1.95]]},
        {"candidate": "gru", "trial_id": "race_2", "status": "stopped", "best_val_bpc": 1.90,
         "scores": [[2, 2.06], [4, 1.90]]}]}
    (run_dir / "study.json").write_text(json.dumps(study))
    md = " ".join((build_report(run_dir, tmp_path / "r", n_bootstrap=10) / "report.md").read_text().split())
    assert ("3 configurations raced on its terms (the whole training text, its step size and schedule), one after "
            "the other, each for its first 2 evaluations of a run of 8.5 minutes: validation bits/char the study's "
            "configuration 2.340, the hand-picked baseline (the spec's final.baseline) 2.040, the hand-picked "
            "alternative gru (final.alternatives.gru) 2.060; then the better two on to their 4th evaluation: the "
            "hand-picked baseline 1.950, the hand-picked alternative gru 1.900. The hand-picked alternative gru won"
            in md)
    # The baseline beat the chosen configuration where both raced, at the 2nd evaluation.
    assert "lost to the hand-picked baseline on the final model's terms too" in md
    assert "what leads at the race's last rung (4th of" in md and "need not lead at the run's end" in md
    # Where the chosen configuration led the baseline at the 2nd evaluation, a later score of the baseline's alone
    # does not make it the better one.
    study["final"]["race"]["candidates"][0]["scores"] = [[2, 2.03], [4, 1.97]]
    study["final"]["race"]["candidates"][1]["scores"] = [[2, 2.04]]
    study["final"]["race"]["candidates"][1]["best_val_bpc"] = 2.04
    (run_dir / "study.json").write_text(json.dumps(study))
    md = " ".join((build_report(run_dir, tmp_path / "r2", n_bootstrap=10) / "report.md").read_text().split())
    assert "lost to the hand-picked baseline" not in md


def test_candidates_that_lost_on_their_repeats_mean_are_not_called_unstable(make_run, tmp_path):
    import json

    from runcontract import selection

    run_dir = make_run(n_trials=20)
    trials = pd.read_parquet(run_dir / "trials.parquet")
    top = trials[trials["role"] == "search"].sort_values("best_val_bpc")["trial_id"].head(2).tolist()
    reps = [{**trials[trials["trial_id"] == tid].iloc[0].to_dict(), "trial_id": f"{tid}-r{k}", "role": "repeat",
             "repeat_of": tid, "best_val_bpc": score} for tid, scores in zip(top, [(3.1, 3.0), (2.8, 2.9)])
            for k, score in enumerate(scores)]
    trials = pd.concat([trials[trials["role"] != "repeat"], pd.DataFrame(reps)], ignore_index=True)
    trials["repeat_of"] = trials["repeat_of"].astype("string")
    trials.to_parquet(run_dir / "trials.parquet", index=False)
    chosen, checked = selection.decide(trials, top)
    study = json.loads((run_dir / "study.json").read_text())
    (run_dir / "study.json").write_text(json.dumps({**study, "selection": selection.record(checked, chosen)}))
    assert chosen == top[1]  # the second-best trial, whose repeats scored better
    run = load_run(run_dir)
    assert unstable_configurations(run).empty
    text = (build_report(run_dir, tmp_path / "rep") / "report.md").read_text(encoding="utf-8")
    assert "does not train reliably" not in text
    assert f"search trial {top[1]}'s: of the 2 best search trials" in text and "(2.850 bits/char;" in text
