from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from reports import build_report
from reports._load import load_runs
from reports.build import main

FILES = ("index.html", "report.md", "importance.csv", "importance.png", "marginals.png", "interaction.png",
         "curves.png", "best_trial.png", "cost.png", "sample_importance.png")


@pytest.fixture(scope="module")
def hostile_report(make_run):
    return build_report(make_run(seed=1, hostile=True), n_bootstrap=6)


def test_writes_every_file_into_run_dir_report(hostile_report):
    assert hostile_report.name == "report"
    for name in FILES:
        assert (hostile_report / name).stat().st_size > 0, name
    assert (hostile_report / "importance.png").read_bytes().startswith(b"\x89PNG")


def test_importance_csv_contract(hostile_report):
    t = pd.read_csv(hostile_report / "importance.csv")
    assert list(t.columns[:6]) == ["param", "importance", "ci_low", "ci_high", "rank", "within_noise"]
    assert sorted(t["param"]) == sorted(["lr", "hidden_size", "dropout", "seq_len", "cell", "optimizer"])
    assert sorted(t["rank"]) == list(range(1, 7))
    assert t["importance"].between(0, 1).all() and (t["ci_low"] <= t["ci_high"]).all()
    assert {"fanova", "permutation", "permutation_ci_low", "optuna_fanova", "optuna_ped_anova"} <= set(t.columns)
    assert t.sort_values("rank")["param"].iloc[0] == "lr"


def test_answer_comes_first_with_numbers(hostile_report):
    md = (hostile_report / "report.md").read_text()
    first, *after = [line for line in md.splitlines()[1:] if line.strip()]
    # the headline (at most 40 words), then one bullet a clause
    assert re.search(r"^\*\*lr matters most: it explains \d+% \(95% CI \d+%–\d+%\)", first), first
    assert "trials compared at 100k training characters" in first and len(first.split()) <= 40
    assert any(line.startswith("• ") and "within noise" in line for line in after[:4]), after[:4]


def test_html_is_self_contained_and_escaped(hostile_report):
    page = (hostile_report / "index.html").read_text()
    assert "<script" not in page.lower()
    assert "<img src=x" not in page and "<i>lstm</i>" not in page and "<b>t000</b>" not in page
    assert "&lt;script&gt;alert" in page  # the hostile sample is shown, escaped
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert page.count("data:image/png;base64,") == len([f for f in FILES if f.endswith(".png")])


def test_markdown_fences_hostile_text(hostile_report):
    md = (hostile_report / "report.md").read_text()
    assert "\n`````````text\n<script>alert('x')</script> ``` ````````" in md  # 9 > longest run of 8
    outside = re.sub(r"\n(`{3,})text\n.*?\n\1(?=\n)", "", md, flags=re.S)
    assert "<script>" not in outside and "<i>lstm" not in outside and "<b>" not in outside
    for png in ("importance.png", "curves.png"):
        assert f"]({png})" in md


def test_only_required_columns(make_run, tmp_path):
    out = build_report(make_run(seed=2, required_only=True), tmp_path / "out", n_bootstrap=4)
    md = (out / "report.md").read_text()
    assert "seed noise floor is unknown" in md
    assert "no sample metrics" in md
    assert not (out / "sample_importance.png").exists()
    t = pd.read_csv(out / "importance.csv")
    assert t.sort_values("rank")["param"].iloc[0] == "lr"


def test_degenerate_runs_still_build(make_run, tmp_path):
    bad = make_run(seed=3, n_trials=8, repeats=0)
    t = pd.read_parquet(bad / "trials.parquet").assign(status="diverged", best_val_bpc=float("nan"))
    t.to_parquet(bad / "trials.parquet")
    out = build_report(bad, tmp_path / "bad", n_bootstrap=2)
    assert "Too few comparable trials (0)" in (out / "report.md").read_text()
    assert len(pd.read_csv(out / "importance.csv")) == 6
    few = build_report(make_run(seed=3, n_trials=6, repeats=0, asha=False), tmp_path / "few", n_bootstrap=2)
    assert (few / "index.html").exists()


def test_same_seed_same_report_numbers(make_run, tmp_path):
    run_dir = make_run(seed=4, n_trials=24, repeats=2)
    a = build_report(run_dir, tmp_path / "a", seed=3, n_bootstrap=4)
    b = build_report(run_dir, tmp_path / "b", seed=3, n_bootstrap=4)
    assert (a / "importance.csv").read_bytes() == (b / "importance.csv").read_bytes()
    assert (a / "report.md").read_text() == (b / "report.md").read_text()


def test_a_schema_1_run_builds_the_same_report_as_schema_2(make_run, tmp_path):
    """An old run directory (trials' val_bpc = the trial's best, curves' val_bpc = eval_val_bpc) reports the
    same numbers as the same study written in schema 2."""
    old = build_report(make_run(seed=6, n_trials=24, repeats=2, schema=1), tmp_path / "v1", seed=3, n_bootstrap=4)
    new = build_report(make_run(seed=6, n_trials=24, repeats=2, schema=2), tmp_path / "v2", seed=3, n_bootstrap=4)
    assert (old / "importance.csv").read_bytes() == (new / "importance.csv").read_bytes()
    md = (old / "report.md").read_text()
    assert md == (new / "report.md").read_text()
    assert "best val\\_bpc" in md and "final val\\_bpc" not in md


def test_cli_writes_to_out(make_run, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main([str(make_run(seed=5, n_trials=20)), "--out", str(out), "--bootstrap", "2"]) == 0
    assert (out / "index.html").exists() and str(out / "index.html") in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing", "empty", "bad_json", "bad_table", "bad_version"])
def test_cli_bad_input_exits_2_with_one_line(make_run, tmp_path, capsys, case):
    target = tmp_path / case
    if case == "empty":
        target.mkdir()
    elif case == "bad_json":
        target = make_run(n_trials=12, asha=False)
        (target / "study.json").write_text("{not json")
    elif case == "bad_table":
        target = make_run(n_trials=12, asha=False)
        (target / "trials.parquet").write_bytes(b"PAR1 garbage")
    elif case == "bad_version":
        target = make_run(n_trials=12, asha=False)
        study = json.loads((target / "study.json").read_text())
        (target / "study.json").write_text(json.dumps({**study, "schema_version": 3}))
    assert main([str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reports.build: ") and err.count("\n") == 1, err


def test_survivors_are_only_a_labelled_check_and_the_fit_is_on_log_bpc(make_run, tmp_path):
    out = build_report(make_run(seed=8, n_trials=30, survive=0.6, overshoot=True), tmp_path / "s", n_bootstrap=4)
    md = (out / "report.md").read_text()
    first = next(line for line in md.splitlines()[1:] if line.strip())
    assert "of the variance in log val\\_bpc across 28 trials compared at 100k training characters" in first
    assert "### Check: survivors only, at 800,000 characters" in md and "The 10 valid search trials" in md
    assert "The fit is on log val\\_bpc" in md


def test_pooling_two_studies_fits_all_their_search_trials(make_run, tmp_path, capsys):
    a, b = make_run(seed=11, n_trials=20, repeats=3), make_run(seed=12, n_trials=20, repeats=3)
    run = load_runs([a, b])
    search = run.trials[run.trials["role"] == "search"]
    assert len(search) == 40 and search["trial_id"].is_unique
    assert search["trial_id"].str.startswith("2/").sum() == 20  # the synthetic ids collide: the second run is prefixed
    assert (run.trials["role"] == "repeat").sum() == 3  # the first study's noise floor only
    assert set(run.curves["trial_id"]) <= set(run.trials["trial_id"])
    out = tmp_path / "pooled"
    assert main([str(a), str(b), "--out", str(out), "--bootstrap", "2"]) == 0
    assert "Pooled from 2 studies" in (out / "report.md").read_text()
    assert not (a / "report").exists()  # no run's own report is touched


def test_pooling_needs_out_and_one_search_space(make_run, capsys):
    a, b = make_run(seed=13, n_trials=12, asha=False), make_run(seed=14, n_trials=12, asha=False)
    assert main([str(a), str(b)]) == 2
    assert "needs --out" in capsys.readouterr().err
    study = json.loads((b / "study.json").read_text())
    study["search_space"].popitem()
    (b / "study.json").write_text(json.dumps(study))
    assert main([str(a), str(b), "--out", str(b / "pooled")]) == 2
    err = capsys.readouterr().err
    assert "differ in search_space" in err and err.count("\n") == 1


# ---- a hostile run directory: its report/ may hold anything a sender put there ------------------------------

@pytest.fixture(scope="module")
def received_run(make_run):
    return make_run(seed=21, n_trials=12, asha=False)


def _victim(tmp_path, text="the reader's own file\n"):
    victim = tmp_path / "victim.txt"
    victim.write_text(text)
    return victim


def test_a_symlinked_report_file_is_replaced_not_followed(received_run, tmp_path):
    victim = _victim(tmp_path)
    report = received_run / "report"
    report.mkdir(exist_ok=True)
    (report / "report.md").unlink(missing_ok=True)
    (report / "report.md").symlink_to(victim)
    (report / "importance.csv").unlink(missing_ok=True)
    (report / "importance.csv").symlink_to(tmp_path / "created-through-a-dangling-link.csv")
    (report / "notes.txt").write_text("kept")  # not the report's: left alone
    assert main([str(received_run), "--bootstrap", "2"]) == 0
    assert victim.read_text() == "the reader's own file\n"
    assert not (tmp_path / "created-through-a-dangling-link.csv").exists()
    for name in ("report.md", "importance.csv", "index.html"):
        assert not (report / name).is_symlink() and (report / name).stat().st_size > 0
    assert (report / "notes.txt").read_text() == "kept"
    assert not [p for p in received_run.iterdir() if p.name.startswith(".report.")]  # no staging left behind


@pytest.mark.parametrize("kind", ["symlink", "file", "dir_named_like_a_report_file"])
def test_a_report_dir_that_is_not_its_own_is_refused_in_one_line(received_run, tmp_path, capsys, kind):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = _victim(elsewhere)
    report = received_run / "report"
    if report.is_symlink() or report.is_file():
        report.unlink()
    elif report.exists():
        import shutil
        shutil.rmtree(report)
    if kind == "symlink":
        report.symlink_to(elsewhere)
    elif kind == "file":
        report.write_text("a file")
    else:
        (report / "index.html").mkdir(parents=True)
    assert main([str(received_run), "--bootstrap", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reports.build: cannot write the report: ") and err.count("\n") == 1, err
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim.txt"] and victim.read_text().startswith("the")
    assert not [p for p in received_run.iterdir() if p.name.startswith(".report.")]
    if kind == "file":
        assert report.read_text() == "a file"


def test_csv_cells_a_spreadsheet_would_evaluate_are_neutralized():
    from reports._output import neutralize_csv

    df = pd.DataFrame({"param": ["=HYPERLINK(\"http://x\")", "+1", "-cmd", "@SUM(A1)", "\t=1", "\r=1", "lr"],
                       "importance": [-0.5, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})
    out = neutralize_csv(df)
    assert out["param"].tolist() == ["'=HYPERLINK(\"http://x\")", "'+1", "'-cmd", "'@SUM(A1)", "'\t=1", "'\r=1", "lr"]
    assert out["importance"].tolist() == df["importance"].tolist()  # a negative number stays a number


def test_the_hostile_reports_csv_has_no_formula_cells(hostile_report):
    t = pd.read_csv(hostile_report / "importance.csv", dtype=str, keep_default_na=False)
    cells = [*t.columns, *(v for col in t.columns for v in t[col])]
    assert not [v for v in cells if v.startswith(("=", "+", "@", "\t", "\r"))]


# ---- a run with a local design: the answer comes from it, the fANOVA view is the second one --------------------

@pytest.fixture(scope="module")
def local_report(make_local_run):
    run_dir = make_local_run(run={"seed": 6, "n_trials": 24, "repeats": 2, "hostile": True}, diverge=("seq_len", None))
    return build_report(run_dir, n_bootstrap=4)


def test_a_local_design_leads_the_report(local_report):
    md = (local_report / "report.md").read_text()
    first, *after = [line for line in md.splitlines()[1:] if line.strip()]
    assert first.startswith("**At 4,000 optimizer steps around ") and len(first.split()) <= 40, first
    assert after[0].startswith("• ")
    local, fanova = md.index("## How quality depends on each hyperparameter"), md.index("## The whole search space")
    assert local < fanova and md.index("](effects.png)") < fanova < md.index("](importance.png)")
    table = md[local:fanova]
    for name in ("lr", "hidden\\_size", "dropout", "seq\\_len", "cell", "optimizer"):  # every searched one
        assert f"\n| {name} | " in table, name
    assert "(1 diverged or failed)" in table
    assert (local_report / "effects.png").read_bytes().startswith(b"\x89PNG")
    t = pd.read_csv(local_report / "effects.csv")
    assert list(t.columns[:3]) == ["param", "label", "kind"] and len(t) == 14 and t["ci_low"].le(t["ci_high"]).all()


def test_a_local_report_escapes_the_run_directorys_strings(local_report):
    page = (local_report / "index.html").read_text()
    assert "<i>lstm</i>" not in page and "<script" not in page.lower() and "&lt;i&gt;lstm&lt;/i&gt;" in page
    md = (local_report / "report.md").read_text()
    outside = re.sub(r"\n(`{3,})text\n.*?\n\1(?=\n)", "", md, flags=re.S)
    assert "<i>lstm" not in outside


def test_a_local_report_is_the_same_for_the_same_seed(local_report, tmp_path):
    again = build_report(local_report.parent, tmp_path / "again", n_bootstrap=4)
    for name in ("report.md", "effects.csv"):
        assert (again / name).read_bytes() == (local_report / name).read_bytes(), name
