"""Synthetic run directories that satisfy the results contract, with a known answer.

Written in schema 2 (trials' `best_val_bpc`; curves' `val_bpc` per evaluation and `best_val_bpc` so far), or as
the schema-1 writer wrote them with `schema=1`.

val_bpc at the end of training = 1.6 + lr effect + cell effect + hidden_size effect + seed noise, where over a
uniform draw of the search space the shares of variance are about: lr 62%, cell 21%, hidden_size 10%, seed noise
6.5%; dropout, seq_len and optimizer have no effect. copy20_frac grows with hidden_size and falls with dropout.
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pandas as pd
import pytest

SEARCH_SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "hidden_size": {"type": "int", "low": 64, "high": 1024, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5, "log": False},
    "seq_len": {"type": "int", "low": 32, "high": 256, "log": False},
    "cell": {"type": "categorical", "choices": ["rnn_tanh", "rnn_relu", "gru", "lstm"]},
    "optimizer": {"type": "categorical", "choices": ["adam", "adamw", "rmsprop", "sgd"]},
}
TRUE_SHARES = {"lr": 0.62, "cell": 0.21, "hidden_size": 0.10, "dropout": 0.0, "seq_len": 0.0, "optimizer": 0.0}
IRRELEVANT = ("dropout", "seq_len", "optimizer")
BUDGET, EVALS, GRACE, RF = 800_000, 8, 100_000, 3
SEED_SD = 0.05
WORDS = ("the of and to a in that it his was he I you is Holmes Watson said upon my which had not as be with "
         "for at this have but there Baker Street Lestrade Moriarty inspector matter door").split()
HOSTILE = "<script>alert('x')</script> ``` ```````` </pre><img src=x onerror=alert(1)> | # [a](javascript:x)"


def _unit(v, lo, hi, log):
    return (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo)) if log else (v - lo) / (hi - lo)


def final_quality(p: dict) -> float:
    """Noise-free val_bpc of a configuration at the full budget."""
    u_lr = _unit(p["lr"], 1e-4, 1e-1, True)
    u_h = _unit(p["hidden_size"], 64, 1024, True)
    cell = {"rnn_tanh": 1, "rnn_relu": 1, "gru": -1, "lstm": -1}[p["cell"]]
    return 1.6 + 1.643 * (u_lr - 0.6) ** 2 + 0.0894 * cell - 0.219 * (u_h - 0.5)


def _text(rng, quality, n_chars=360):
    p_word = float(np.clip(1.6 - 0.55 * (quality - 1.4) / 0.4, 0.2, 0.98))
    out = []
    while sum(len(w) + 1 for w in out) < n_chars:
        out.append(rng.choice(WORDS) if rng.random() < p_word
                   else "".join(rng.choice(list("qxzjkvwy"), rng.integers(3, 8))))
    return " ".join(out)[:n_chars], p_word


def write_run_dir(path: pathlib.Path, *, n_trials: int = 50, seed: int = 0, repeats: int = 3,
                  required_only: bool = False, hostile: bool = False, asha: bool = True,
                  name: str = "sherlock", survive: float | None = None, overshoot: bool = False,
                  schema: int = 2, batch_size: int = 2) -> pathlib.Path:
    """Write study.json, trials/curves/samples.parquet for a synthetic study into `path`; return `path`.

    `schema`: 2, or 1 for the same study as the schema-1 writer put it (trials' `val_bpc` is the trial's best;
    curves' `val_bpc` and `eval_val_bpc` both the evaluation; no `best_val_bpc`).
    `survive`: share of the trials ASHA promotes at each rung (default a third). `overshoot`: evaluations sit at
    the first training step (of seq_len * batch_size characters) past each milestone, as in real runs, instead of
    on it. `batch_size` (fixed; the run directory records no steps, so the report derives them from it): the
    default 2 gives every trial at least 195 optimizer steps by the first rung, so quality has formed there.
    """
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    milestones = [BUDGET * k // EVALS for k in range(1, EVALS + 1)]
    configs = []
    for _ in range(n_trials):
        configs.append({
            "lr": float(math.exp(rng.uniform(math.log(1e-4), math.log(1e-1)))),
            "hidden_size": int(round(math.exp(rng.uniform(math.log(64), math.log(1024))))),
            "dropout": float(rng.uniform(0, 0.5)), "seq_len": int(rng.integers(32, 257)),
            "cell": str(rng.choice(SEARCH_SPACE["cell"]["choices"])),
            "optimizer": str(rng.choice(SEARCH_SPACE["optimizer"]["choices"])),
        })
    seeds = rng.normal(0, SEED_SD, n_trials)
    finals = np.array([final_quality(c) for c in configs]) + seeds
    stop_at = np.full(n_trials, BUDGET)
    if asha:  # the top third (or `survive`) is promoted at each rung, judged at that rung
        order = np.argsort(finals)
        first, second = ((n_trials // 3, n_trials // 9) if survive is None
                         else (int(n_trials * survive), int(n_trials * survive ** 2)))
        stop_at[order[first:]] = GRACE
        stop_at[order[second:first]] = GRACE * RF
    status = np.where(stop_at < BUDGET, "stopped", "completed").astype(object)
    if n_trials > 7:
        status[3], status[7] = "diverged", "failed"
    best = int(np.argmin(np.where(status == "completed", finals, np.inf)))
    roles = ["search"] * n_trials + ["repeat"] * repeats
    configs += [configs[best]] * repeats
    finals = np.concatenate([finals, final_quality(configs[best]) + rng.normal(0, SEED_SD, repeats)])
    stop_at = np.concatenate([stop_at, np.full(repeats, BUDGET)])
    status = np.concatenate([status, np.array(["completed"] * repeats, dtype=object)])

    trows, crows, srows = [], [], []
    for i, (cfg, fin, stop, st) in enumerate(zip(configs, finals, stop_at, status)):
        tid = f"t{i:03d}" if not hostile or i != 0 else "<b>t000</b>"
        wall, seen, vals = 0.0, 0, []
        for m in milestones:
            if m > stop or st == "failed":
                break
            step = cfg["seq_len"] * batch_size
            at = -(-m // step) * step if overshoot else m
            wall += m / 1e5 * (0.5 + cfg["hidden_size"] / 512) - wall / 2 + 1
            vb = fin + 1.2 * (BUDGET / m - 1) ** 0.5 * 0.1 + rng.normal(0, 0.01)
            if st == "diverged" and m > GRACE:
                vb = math.nan
            tb = vb - 0.05 + rng.normal(0, 0.03)
            vals.append(vb)
            finite_so_far = [v for v in vals if np.isfinite(v)]
            crows.append({"trial_id": tid, "chars_seen": at, "wall_s": wall, "train_bpc": tb, "val_bpc": vb,
                          "best_val_bpc": min(finite_so_far) if finite_so_far else math.nan, "lr": cfg["lr"]})
            seen = at
            for temp in (0.5, 1.0):
                text, p_word = _text(rng, vb + 0.3 * temp)
                if hostile:
                    text = HOSTILE + text
                copy = float(np.clip(0.02 + 0.1 * _unit(cfg["hidden_size"], 64, 1024, True)
                                     - 0.12 * cfg["dropout"] + rng.normal(0, 0.01), 0, 1))
                srows.append({"trial_id": tid, "chars_seen": at, "temperature": temp, "text": text,
                              "kind": "eval", "prime": "Holmes", "known_word_frac": p_word, "copy20_frac": copy})
        finite = [v for v in vals if np.isfinite(v)]
        val = min(finite) if finite and st not in ("diverged", "failed") else math.nan
        trows.append({"trial_id": tid, "status": st, **{f"param.{k}": v for k, v in cfg.items()},
                      "best_val_bpc": val, "chars_seen": seen, "wall_s": wall, "node_id": "node-0",
                      "trial_index": i, "role": roles[i], "seed": 1000 + i, "device": "cpu",
                      "error": "boom" if st == "failed" else None, "train_bpc": val - 0.05,
                      "num_params": cfg["hidden_size"] ** 2 * 4})
    trials, curves, samples = pd.DataFrame(trows), pd.DataFrame(crows), pd.DataFrame(srows)
    if hostile:
        trials.loc[trials["param.cell"] == "lstm", "param.cell"] = "<i>lstm</i>`"
    if required_only:
        trials = trials[["trial_id", "status", *[f"param.{k}" for k in SEARCH_SPACE], "best_val_bpc", "chars_seen",
                         "wall_s", "node_id"]]
        curves = curves[["trial_id", "chars_seen", "wall_s", "train_bpc", "val_bpc", "best_val_bpc"]]
        samples = samples[["trial_id", "chars_seen", "temperature", "text"]]
    if schema == 1:
        trials = trials.rename(columns={"best_val_bpc": "val_bpc"})
        curves = curves.drop(columns="best_val_bpc")
        if not required_only:
            curves.insert(curves.columns.get_loc("val_bpc") + 1, "eval_val_bpc", curves["val_bpc"])
    for df in (trials, curves, samples):
        for c in ("chars_seen",):
            df[c] = df[c].astype("int64")
    trials.to_parquet(path / "trials.parquet", index=False)
    curves.to_parquet(path / "curves.parquet", index=False)
    samples.to_parquet(path / "samples.parquet", index=False)
    space = json.loads(json.dumps(SEARCH_SPACE))
    if hostile:
        space["cell"]["choices"][3] = "<i>lstm</i>`"
    study = {"schema_version": schema, "name": "<script>x</script>" if hostile else name, "metric": "val_bpc",
             "mode": "min", "budget_chars": BUDGET, "search_space": space,
             "fixed": {"embedding_dim": 64, "batch_size": batch_size},
             "corpus": {"name": "sherlock", "path": "shared/data/sherlock.txt", "sha256": "0" * 64,
                        "chars": 3_000_000, "vocab_size": 96, "train_chars": 2_700_000, "val_chars": 150_000,
                        "test_chars": 150_000},
             "eval": {"val_chars": 50_000, "evals_per_trial": EVALS},
             "sampler": {"name": "TPESampler", "seed": seed},
             "scheduler": {"name": "ASHA", "time_attr": "chars_seen", "grace_period": GRACE,
                           "reduction_factor": RF, "max_t": BUDGET},
             "seed": seed, "num_trials": n_trials, "repeats": repeats,
             "versions": {"python": "3.11", "torch": "2.13.0", "ray": "2", "optuna": "5.0.0",
                          "charrnn_study": "0.1"},
             "created_utc": "2025-01-01T00:00:00Z"}
    (path / "study.json").write_text(json.dumps(study), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def make_run(tmp_path_factory):
    """Factory fixture: make_run(**kwargs) writes a fresh synthetic run directory and returns its path."""

    def make(**kwargs) -> pathlib.Path:
        return write_run_dir(tmp_path_factory.mktemp("run"), **kwargs)

    return make
