"""The smoke study end to end through real Ray Tune + Optuna, checking the results contract."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import optuna
import pandas as pd
import pytest
import torch

from study.inputs import SPECS_DIR
from tests.conftest import REPO
from tests.study._sockets import listeners

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The smoke study, with the sockets its processes listened on (read every 0.2 s while it ran) and a HOME of
    its own, so that the token file it uses is the one it made."""
    tmp = tmp_path_factory.mktemp("smoke")
    out, home = tmp / "run", tmp / "home"
    home.mkdir()
    # The smoke spec with its final race in two rounds, as the default spec's (the other studies of the suite race
    # one round, to keep its time): both candidates to the 1st evaluation, then on from their checkpoints to the 2nd.
    spec = tmp / "smoke.toml"
    text = (SPECS_DIR / "smoke.toml").read_text()
    two_rounds = text.replace("\nrace_evals = 1 ", "\nrace_evals = [1, 2] ").replace("\npatience = 2", "\npatience = 3")
    assert two_rounds.count("[1, 2]") == 1 and "patience = 3" in two_rounds  # patience above the race's 2
    spec.write_text(two_rounds)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HOME": str(home)}
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        env.pop(name, None)
    with subprocess.Popen(
        [sys.executable, "-m", "study.run", "--spec", str(spec), "--trials", "4", "--out", str(out),
         "--no-report"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as child:
        seen = set()
        reader = ThreadPoolExecutor(1).submit(child.communicate, timeout=600)
        while not reader.done():
            seen.update(listeners(child.pid))
            time.sleep(0.2)
        stdout, stderr = reader.result()
    proc = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc, sorted(seen, key=str), home


def test_a_local_study_listens_on_loopback_only(smoke_run):
    _, _, seen, home = smoke_run
    names = {s.name for s in seen}
    assert {"gcs_server", "raylet"} <= names, seen  # the sampling saw Ray's servers
    assert any(s.name.startswith("ray::") for s in seen), seen  # and the trials' workers
    beyond = [str(s) for s in seen if not s.loopback]
    assert not beyond, "listening beyond loopback:\n" + "\n".join(beyond)
    token = home / ".ray" / "auth_token"
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text()) == 64


def test_contract_files(smoke_run):
    out, proc, _, _ = smoke_run
    meta = json.loads((out / "study.json").read_text())
    assert meta["schema_version"] == 2 and meta["name"] == "smoke"
    assert meta["metric"] == "val_bpc" and meta["mode"] == "min" and meta["budget_chars"] == 48_000
    assert meta["search_space"]["lr"] == {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}
    assert meta["search_space"]["cell"]["choices"] == ["rnn_tanh", "rnn_relu", "gru", "lstm"]
    assert set(meta["corpus"]) >= {"name", "sha256", "chars", "vocab_size"}
    assert meta["corpus"]["vocab_size"] == 99
    assert {"ray", "optuna", "torch"} <= set(meta["versions"])

    trials = pd.read_parquet(out / "trials.parquet")
    search = trials[trials["role"] == "search"]
    # the 3 best search trials (runcontract.MAX_CANDIDATES), each retrained with --repeats 1 other seed
    assert len(search) == 4 and len(trials[trials["role"] == "repeat"]) == 3
    repeated = trials.loc[trials["role"] == "repeat", "repeat_of"]  # one experiment, each row naming its trial
    assert repeated.is_unique and set(repeated) <= set(search["trial_id"])
    assert meta["eval"]["eval_at_chars"] == [12_000, 16_971, 24_000, 33_941, 48_000]
    assert meta["scheduler"]["rungs"] == [12_000, 24_000] and meta["final"]["chars"] == 60_000
    # The final model's budget as it was decided: given in characters, with no time limit to fit.
    assert {k: meta["final"][k] for k in ("budget_chars", "budget_from", "refit")} == {
        "budget_chars": 60_000, "budget_from": "fixed", "refit": None}
    assert set(trials["status"]) <= {"completed", "stopped", "diverged", "failed"}
    assert "running" not in set(trials["status"])
    for name in meta["search_space"]:
        assert f"param.{name}" in trials.columns
    assert trials["trial_id"].dtype == "string"
    assert trials["chars_seen"].dtype == "int64" and trials["best_val_bpc"].dtype == "float64"
    assert "val_bpc" not in trials.columns  # one meaning per name: a trial's score is its best
    assert trials["node_id"].str.len().gt(0).all() and (trials["device"] == "cpu").all()
    done = search[search["status"] == "completed"]
    assert (done["chars_seen"] >= 48_000).all()
    # Promotion as synchronous halving would send (4, 2, 1 at rf 2), never more; study.json records both counts.
    counts = meta["scheduler"]["rung_counts"]
    assert [c["chars"] for c in counts] == [12_000, 24_000, 48_000] and [c["planned"] for c in counts] == [4, 2, 1]
    assert [c["reached"] for c in counts] == [int((search["chars_seen"] >= c["chars"]).sum()) for c in counts]
    assert all(c["reached"] <= c["planned"] for c in counts)
    # Repeats train on the search's schedule and stop at repeat_chars, where they complete.
    repeats = trials[trials["role"] == "repeat"]
    assert (repeats["status"] == "completed").all() and repeats["chars_seen"].between(24_000, 30_000).all()
    assert (trials.loc[trials["status"] == "stopped", "chars_seen"] < 48_000).all()

    curves = pd.read_parquet(out / "curves.parquet")
    assert list(curves.columns) == ["trial_id", "chars_seen", "steps", "wall_s", "train_bpc", "val_bpc",
                                    "best_val_bpc", "lr"]
    # Steps are characters over each trial's characters per step (batch_size x seq_len, also in trials.parquet).
    per_step = trials.set_index("trial_id")["step_chars"]
    assert (curves["steps"] == curves["chars_seen"] // curves["trial_id"].map(per_step).astype(int)).all()
    assert set(curves["trial_id"]) <= set(trials["trial_id"])
    for tid, rows in curves.groupby("trial_id"):
        assert rows["chars_seen"].is_monotonic_increasing
        row = trials.set_index("trial_id").loc[tid]
        if row["status"] == "completed" and row["role"] == "search":
            assert len(rows) == 5
            assert row["best_val_bpc"] == pytest.approx(rows["val_bpc"].min())
        if row["role"] == "final" or str(row.get("candidate")) == "chosen":  # the search trial's weights, scored first,
            # are the model to beat of the chosen configuration (in the final race, and going on from it)
            assert (rows["best_val_bpc"] <= rows["val_bpc"].cummin() + 1e-9).all()
        else:
            assert rows["best_val_bpc"].tolist() == pytest.approx(rows["val_bpc"].cummin().tolist())

    samples = pd.read_parquet(out / "samples.parquet")
    assert list(samples.columns[:4]) == ["trial_id", "chars_seen", "temperature", "text"]
    finished = trials[trials["status"].isin(["completed", "stopped"])]
    for tid in finished["trial_id"]:
        assert samples.loc[samples["trial_id"] == tid, "text"].str.len().max() >= 300
    assert samples["known_word_frac"].between(0, 1).all()


def test_optuna_study_in_sqlite(smoke_run):
    out, *_ = smoke_run
    with sqlite3.connect(out / "optuna.db") as db:
        states = [s for (s,) in db.execute("select state from trials")]
    assert len(states) == 4


def test_progress_and_summary(smoke_run):
    out, proc, _, _ = smoke_run
    # Not a terminal: plain lines, each with the status (study.progress); no start-up chatter without --verbose.
    assert "[search 4/4 done, 0 running | best val_bpc" in proc.stderr and "elapsed" in proc.stderr
    assert "A new study created" not in proc.stderr and "Token authentication" not in proc.stderr
    assert "best search trial" in proc.stdout and str(out) in proc.stdout
    # The summary leads with the final model: its test score beside the baselines, and how to sample more.
    assert proc.stdout.startswith("final model: test ")
    assert "PPMd" in proc.stdout.splitlines()[0]
    assert f"python -m charrnn.sample --run {out}" in proc.stdout


def test_final_model_row_baselines_and_sampling_by_run(smoke_run):
    out, *_ = smoke_run
    trials = pd.read_parquet(out / "trials.parquet")
    final = trials[trials["role"] == "final"]
    assert len(final) == 1
    row = final.iloc[0]
    assert row["status"] == "completed" and np.isfinite(row["test_bpc"]) and np.isfinite(row["best_val_bpc"])
    assert row["repeat_of"] in set(trials.loc[trials["role"] == "search", "trial_id"])
    assert row["chars_seen"] >= 60_000 or row["stopped_early"]
    # Only the final model is scored on the test text.
    assert trials.loc[trials["role"] != "final", "test_bpc"].isna().all()
    # The final race: the chosen configuration, then the spec's baseline, each to the first evaluation of the final
    # model's run, then both on from their checkpoints to the second (a race of two drops none before its last
    # rung); the winner went on from its second round's checkpoint (the final model's curve starts past it).
    race = trials[trials["role"] == "race"].sort_values("trial_index")
    assert list(race["candidate"]) == ["chosen", "baseline"] * 2 and (race["repeat_of"] == row["repeat_of"]).all()
    record = json.loads((out / "study.json").read_text())["final"]["race"]
    assert record["evals"] == [1, 2] and [len(c["scores"]) for c in record["candidates"]] == [2, 2]
    second = race.iloc[2:]
    won = second[second["candidate"] == record["winner"]].iloc[0]
    assert row["candidate"] == record["winner"] and won["best_val_bpc"] == second["best_val_bpc"].min()
    curves = pd.read_parquet(out / "curves.parquet")
    for first, then in zip(race.iloc[:2].itertuples(), second.itertuples()):  # round 2 goes on from round 1
        assert curves.loc[curves["trial_id"] == then.trial_id, "chars_seen"].min() > first.chars_seen
    assert curves.loc[curves["trial_id"] == row["trial_id"], "chars_seen"].min() > won["chars_seen"]
    assert (race["param.hidden_size"].tolist()[1], race["param.cell"].tolist()[1]) == (32, "rnn_tanh")
    samples = pd.read_parquet(out / "samples.parquet")
    finals = samples[(samples["trial_id"] == row["trial_id"]) & (samples["kind"] == "final")]
    assert sorted(finals["temperature"]) == [0.5, 0.8]
    baselines = pd.read_parquet(out / "baselines.parquet")
    assert set(zip(baselines["method"], baselines["split"])) == {
        (m, s) for m in ("unigram", "xz", "ppmd") for s in ("val", "test")}
    assert baselines["bpc"].between(0.5, 8).all()
    proc = subprocess.run([sys.executable, "-m", "charrnn.sample", "--run", str(out), "--length", "200"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and len(proc.stdout) >= 200


def test_optuna_study_as_the_dashboard_reads_it(smoke_run):
    """optuna.db tells the tables' story: COMPLETE = completed, PRUNED = stopped, FAIL = diverged/failed, and
    each trial's intermediate values are its evaluations (curves.parquet) at chars_seen."""
    out, *_ = smoke_run
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'optuna.db'}")
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["smoke"]
    study = optuna.load_study(study_name="smoke", storage=storage)
    trials = pd.read_parquet(out / "trials.parquet").set_index("trial_id")
    curves = pd.read_parquet(out / "curves.parquet")
    state = {"completed": "COMPLETE", "stopped": "PRUNED", "diverged": "FAIL", "failed": "FAIL"}
    assert len(study.trials) == len(trials[trials["role"] == "search"])
    for trial in study.trials:
        row = trials.loc[trial.user_attrs["tune_trial_id"]]
        assert trial.state.name == state[row["status"]]
        evals = curves[curves["trial_id"] == row.name]
        assert trial.intermediate_values == pytest.approx(dict(zip(evals["chars_seen"], evals["val_bpc"])))
        if row["status"] == "completed":
            assert trial.value == pytest.approx(row["best_val_bpc"])
        elif row["status"] == "stopped":
            assert trial.value == pytest.approx(evals["val_bpc"].iloc[-1])


def test_retention_keeps_the_final_model_and_no_trial_checkpoint(smoke_run):
    """Once a stage ends no resume can use its trials' checkpoints: they are gone, rows name none, and the final
    model (RUN/final_model.pt) is what samples."""
    out, *_ = smoke_run
    assert not list(out.glob("tune*/trial_*/checkpoint_*")), list(out.glob("tune*/trial_*/checkpoint_*"))
    trials = pd.read_parquet(out / "trials.parquet")
    assert trials["checkpoint"].isna().all(), trials["checkpoint"].tolist()
    assert sorted(p.name for p in out.glob("tune*")) == ["tune", "tune-final", "tune-race", "tune-race-2",
                                                             "tune-repeats"]
    for tuner in out.glob("tune*/tuner.pkl"):  # the results writer pickles as where its tables are
        assert tuner.stat().st_size < 200_000, (tuner, tuner.stat().st_size)
    payload = torch.load(out / "final_model.pt", weights_only=True)
    final = trials[trials["role"] == "final"].iloc[0]
    assert payload["val_bpc"] == pytest.approx(final["best_val_bpc"])  # the weights of its best evaluation
    proc = subprocess.run([sys.executable, "-m", "charrnn.sample", "--checkpoint", str(out / "final_model.pt"),
                           "--length", "300", "--prime", "Holmes"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and len(proc.stdout) >= 300


def test_the_report_reads_what_the_study_wrote(smoke_run, tmp_path):
    """The writer (study.rundir) and the reader (reports) agree on the contract: a real run builds a report."""
    out, *_ = smoke_run
    proc = subprocess.run([sys.executable, "-m", "reports.build", str(out), "--out", str(tmp_path / "report")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "The model: text that most resembles the corpus" in html and "best val_bpc" in html
