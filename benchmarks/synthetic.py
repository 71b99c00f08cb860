"""Known-answer studies: the one place that builds them, for the tests, the calibration harness and the scale
benchmark. Nothing in the product imports it.

Two families, both through the results contract's names:

- **Calibration shapes** (`Shape`, `SHAPES`): a search space and the noise-free log val_bpc at the compared
  budget. `synthetic_run` and `stepped_run` draw a run of one in memory (`RunData`), as the sampler's startup phase
  draws trials; `write_shape_run` writes one as a run directory, with seed repeats and sample metrics
  (`benchmarks.report_scale`).
- **The test study** (`SEARCH_SPACE`, `final_quality`): a six-hyperparameter space with a known answer (lr 62%,
  cell 21%, hidden_size 10%, seed noise 6.5%; dropout, seq_len and optimizer none). `write_run_dir` writes it
  as a run directory with ASHA's rungs, diverged and failed trials, sample texts (hostile ones on request) and
  seed repeats, in schema 2 or as the schema-1 writer wrote it; `add_local_design` adds a local design around its
  best trial; `local_rundata` builds a local design in memory with effects given in bits/char.

Every run directory is written by `save`.
"""

from __future__ import annotations

import json
import math
import pathlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from reports._load import ParamSpec, RunData, running_best
from runcontract import BASELINES_FILE, CURVES_FILE, SAMPLES_FILE, SCHEMA_VERSION, STUDY_FILE, TRIALS_FILE

def save(path: pathlib.Path, study: dict, *, trials: pd.DataFrame | None = None, curves: pd.DataFrame | None = None,
         samples: pd.DataFrame | None = None, baselines: pd.DataFrame | None = None) -> pathlib.Path:
    """Write a run directory as the study's writer does: study.json and each table given (one not given is left as
    it is), chars_seen as int64. Returns `path`."""
    path.mkdir(parents=True, exist_ok=True)
    for name, df in ((TRIALS_FILE, trials), (CURVES_FILE, curves), (SAMPLES_FILE, samples),
                     (BASELINES_FILE, baselines)):
        if df is not None:
            if "chars_seen" in df:
                df = df.astype({"chars_seen": "int64"})
            df.to_parquet(path / name, index=False)
    (path / STUDY_FILE).write_text(json.dumps(study), encoding="utf-8")
    return path


# ---- calibration shapes ----------------------------------------------------------------------------------------
NOISE_LOG_SD = 0.03 / 2.5  # seed noise measured in real runs: 0.03 bits/char at val_bpc ~2.5
BASE = math.log(2.5)
GRACE, FULL = 125_000, 1_000_000
# The known answer is quality once trained: every trial takes 400 characters a step (16 x 25), 312 optimizer steps by
# the first rung, past the 100 that leaving the unigram plateau takes. The "steps" shape is the one where it is not.
STEP_CHARS = 400


def _float(name, low, high, log=False):
    return ParamSpec(name, "float", float(low), float(high), log)


def _int(name, low, high, log=False, step=1):
    return ParamSpec(name, "int", float(low), float(high), log, step=step)


def _cat(name, *choices):
    return ParamSpec(name, "categorical", choices=tuple(str(c) for c in choices))


def _unit(v, lo, hi, log):
    v = np.asarray(v, float)
    return (np.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo)) if log else (v - lo) / (hi - lo)


def _lookup(values, table: dict) -> np.ndarray:
    return np.array([table[str(v)] for v in values], float)


@dataclass(frozen=True)
class Shape:
    """One kind of study: its search space, the noise-free log val_bpc at the compared budget, its size."""

    name: str
    specs: tuple[ParamSpec, ...]
    f: Callable[[dict], np.ndarray]  # param name -> array of values (n,) -> log val_bpc (n,)
    n_trials: int
    relevant: tuple[str, ...]
    diverged: float = 0.05  # share of trials that diverge (NaN) and leave the fit
    note: str = ""
    slow: str = ""  # a hyperparameter that sets the steps per character: the run is `stepped_run`, not synthetic_run
    n_outer: int = 400  # Monte Carlo draws of a continuous hyperparameter for its true share


SPACE_11 = (_int("num_layers", 1, 3), _float("lr", 3e-4, 3e-2, log=True), _cat("optimizer", "adam", "rmsprop", "sgd"),
            _cat("cell", "rnn_tanh", "rnn_relu", "gru", "lstm"), _cat("hidden_size", 128, 256, 512),
            _int("embedding_dim", 16, 128, log=True), _float("dropout", 0.0, 0.5),
            _cat("seq_len", 25, 50, 100, 200), _int("batch_size", 16, 256, log=True),
            _int("train_chars", 50_000, 1_000_000, log=True), _float("grad_clip", 0.5, 5.0, log=True))


def _layers_lr(p):
    return (BASE + 0.06 * (p["num_layers"] - 2) + 0.5 * (_unit(p["lr"], 3e-4, 3e-2, True) - 0.6) ** 2
            + _lookup(p["cell"], {"rnn_tanh": 0.04, "rnn_relu": 0.02, "gru": -0.03, "lstm": -0.03}))


def _categorical_leader(p):
    return (BASE + _lookup(p["optimizer"], {"adam": -0.04, "rmsprop": -0.02, "sgd": 0.06})
            + 0.6 * (_unit(p["lr"], 3e-4, 3e-2, True) - 0.5) ** 2
            - 0.08 * _unit(p["batch_size"], 16, 256, True))


def _interaction(p):
    # SGD wants a learning rate far above Adam's: the optimizer acts mostly through lr_scale.
    best = _lookup(p["optimizer"], {"adam": 0.3, "rmsprop": 0.4, "sgd": 0.85})
    return BASE + 0.8 * (_unit(p["lr_scale"], 0.1, 10.0, True) - best) ** 2 - 0.02 * (p["num_layers"] - 2)


def _sherlock(p):
    return (BASE + 0.04 * (p["num_layers"] - 2) + 0.4 * (_unit(p["lr"], 3e-4, 3e-2, True) - 0.6) ** 2
            + _lookup(p["optimizer"], {"adam": -0.04, "rmsprop": -0.02, "sgd": 0.06})
            - 0.03 * _unit(p["train_chars"], 50_000, 1_000_000, True))


def _small(p):
    return BASE + 0.3 * (_unit(p["lr"], 3e-4, 3e-2, True) - 0.5) ** 2 + 0.05 * (p["num_layers"] - 2)


def _trained(p):
    # What a trial reaches once trained; batch_size sets only how many characters a step takes (see stepped_run).
    return BASE + 0.6 * (_unit(p["lr"], 3e-4, 3e-2, True) - 0.6) ** 2


SHAPES = {s.name: s for s in (
    Shape("layers-lr", (SPACE_11[0], SPACE_11[1], SPACE_11[3], SPACE_11[6], SPACE_11[5]), _layers_lr, 30,
          ("num_layers", "lr", "cell"), note="few-valued int, log float, categorical; 2 irrelevant"),
    Shape("categorical", (SPACE_11[2], SPACE_11[1], SPACE_11[8], SPACE_11[7], SPACE_11[4], SPACE_11[6]),
          _categorical_leader, 50, ("optimizer", "lr", "batch_size"), note="categorical leader, log int"),
    Shape("interaction", (SPACE_11[2], _float("lr_scale", 0.1, 10.0, log=True), SPACE_11[0], SPACE_11[6]),
          _interaction, 40, ("optimizer", "lr_scale", "num_layers"), note="optimizer x lr_scale"),
    Shape("sherlock-11", SPACE_11, _sherlock, 60, ("num_layers", "lr", "optimizer", "train_chars"), diverged=0.15,
          note="11 hyperparameters, 15% diverged"),
    Shape("small", (SPACE_11[1], SPACE_11[0], SPACE_11[6]), _small, 12, ("lr", "num_layers"),
          note="12 trials, 3 hyperparameters"),
    Shape("steps", (_int("batch_size", 16, 64, step=48), SPACE_11[1], SPACE_11[6]), _trained, 40, ("lr",),
          diverged=0.0, slow="batch_size", note="learning per step; batch_size 16/64 irrelevant once trained"),
)}

# The "steps" shape: a model learns per optimizer step. Its val_bpc starts on the unigram plateau and leaves it
# after about PLATEAU_STEPS steps (a logistic of width PLATEAU_WIDTH), towards what its configuration reaches once
# trained. seq_len is fixed at 50, so batch_size 16 takes 800 characters a step and 64 takes 3,200: at the first
# rung (100k characters) the first have taken 125 steps and the second 31, still on the plateau.
UNIGRAM, PLATEAU_STEPS, PLATEAU_WIDTH, SEQ_LEN = 4.4, 50.0, 10.0, 50
STEPPED_EVALS = (100_000, 200_000, 400_000)


def plateau(steps) -> np.ndarray:
    """Share of the way from the trained score back up to the unigram plateau, after `steps` optimizer steps."""
    return 1.0 / (1.0 + np.exp((np.asarray(steps, float) - PLATEAU_STEPS) / PLATEAU_WIDTH))


def stepped_run(seed: int, n_trials: int = 40, *, evals: tuple[int, ...] = STEPPED_EVALS, promote: float = 0.5,
                record_steps: bool = False, shape: Shape | None = None) -> RunData:
    """A run of the "steps" shape in memory (see `plateau`): every trial is evaluated at the first of `evals`, a
    random `promote` share of them (drawn without regard to their scores, as a scheduler that compares trials
    only once formed would promote them independently of batch_size) at every later one. Characters per step
    come from batch_size x the fixed seq_len, as in a run directory written before the study recorded steps;
    `record_steps` writes curves' `steps` and trials' `step_chars` columns as newer runs do. baselines holds the
    unigram's 4.4 bits/char."""
    shape = shape or SHAPES["steps"]
    rng = np.random.default_rng(seed)
    p = draw(shape.specs, n_trials, rng)
    trained = np.exp(shape.f(p) + rng.normal(0, NOISE_LOG_SD, n_trials))
    per_step = np.asarray(p["batch_size"], float) * SEQ_LEN
    promoted = rng.random(n_trials) < promote
    ids = [f"t{i:04d}" for i in range(n_trials)]
    rows = []
    for i in range(n_trials):
        for k, at in enumerate(evals):
            if k and not promoted[i]:
                break
            steps = at // per_step[i]
            v = trained[i] + (UNIGRAM - trained[i]) * float(plateau(steps)) + rng.normal(0, 0.005)
            rows.append((ids[i], float(at), float(steps), v))
    curves = pd.DataFrame(rows, columns=["trial_id", "chars_seen", "steps", "val_bpc"])
    curves["wall_s"] = curves["chars_seen"] / 1e4
    curves["train_bpc"] = curves["val_bpc"] - 0.05
    curves["best_val_bpc"] = running_best(curves)
    best = curves.groupby("trial_id")["val_bpc"].min()
    last = curves.groupby("trial_id")["chars_seen"].max()
    trials = pd.DataFrame({"trial_id": ids, "status": np.where(promoted, "completed", "stopped"),
                           "best_val_bpc": best.loc[ids].to_numpy(), "chars_seen": last.loc[ids].to_numpy(),
                           "wall_s": 1.0, "node_id": "n0", "role": "search"})
    if record_steps:
        trials["step_chars"] = per_step
    else:
        curves = curves.drop(columns="steps")
    for s in shape.specs:
        trials[s.column] = [str(x) for x in p[s.name]] if s.is_categorical else np.asarray(p[s.name], float)
    study = {"schema_version": 2, "name": f"calibrate-{shape.name}", "metric": "val_bpc", "budget_chars": evals[-1],
             "search_space": {}, "fixed": {"seq_len": SEQ_LEN}, "corpus": {"vocab_size": 99},
             "eval": {"eval_at_chars": list(evals)},
             "scheduler": {"name": "ASHA", "grace_period": evals[0], "reduction_factor": 4, "max_t": evals[-1],
                           "rungs": list(evals[:-1])}}
    samples = pd.DataFrame(columns=["trial_id", "chars_seen", "temperature", "text"])
    baselines = pd.DataFrame({"method": ["unigram"], "split": ["val"], "bpc": [UNIGRAM]})
    return RunData(None, study, tuple(shape.specs), trials, curves, samples, baselines=baselines)


def draw(specs, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """`n` configurations as the sampler draws them, in hyperparameter units (written apart from _encode)."""
    out = {}
    for s in specs:
        u = rng.random(n)
        if s.is_categorical:
            out[s.name] = np.array(s.choices, dtype=object)[rng.integers(0, len(s.choices), n)]
        elif s.kind == "int" and not s.log:
            k = int((s.high - s.low) // s.step) + 1
            out[s.name] = s.low + s.step * rng.integers(0, k, n)
        else:
            out[s.name] = _from_unit(s, u)
    return out


def _from_unit(s: ParamSpec, u: np.ndarray) -> np.ndarray:
    """A numeric hyperparameter's value at quantile `u` of the sampler's distribution."""
    if s.kind == "int" and s.log:
        a, b = math.log(s.low - 0.5), math.log(s.high + 0.5)
        return np.clip(np.floor(np.exp(a + u * (b - a)) + 0.5), s.low, s.high)
    if s.kind == "int":
        k = int((s.high - s.low) // s.step) + 1
        return s.low + s.step * np.minimum(np.floor(u * k), k - 1)
    if s.log:
        return np.exp(math.log(s.low) + u * (math.log(s.high) - math.log(s.low)))
    return s.low + u * (s.high - s.low)



def synthetic_run(shape: Shape, seed: int, n_trials: int | None = None) -> RunData:
    """A run of `shape` in memory: search trials drawn from the space, their log val_bpc at the first ASHA rung
    f + seed noise, the best third promoted to the full budget, `shape.diverged` of them diverged (NaN)."""
    rng = np.random.default_rng(seed)
    n = n_trials or shape.n_trials
    p = draw(shape.specs, n, rng)
    y_rung = np.exp(shape.f(p) + rng.normal(0, NOISE_LOG_SD, n))
    diverged = rng.random(n) < shape.diverged
    promoted = np.argsort(np.where(diverged, np.inf, y_rung))[: max(1, n // 3)]
    ids = [f"t{i:04d}" for i in range(n)]
    crows = []
    for i in range(n):
        crows.append((ids[i], GRACE, y_rung[i]))
        if i in promoted:
            crows.append((ids[i], FULL, y_rung[i] * 0.85 + rng.normal(0, 0.01)))
    curves = pd.DataFrame(crows, columns=["trial_id", "chars_seen", "val_bpc"])
    curves["chars_seen"] = curves["chars_seen"].astype(float)
    curves["steps"] = curves["chars_seen"] // STEP_CHARS
    curves["wall_s"] = curves["chars_seen"] / 1e4
    curves["train_bpc"] = curves["val_bpc"] - 0.05
    best = curves.groupby("trial_id")["val_bpc"].min()
    trials = pd.DataFrame({"trial_id": ids, "status": np.where(diverged, "diverged",
                                                                np.where(np.isin(np.arange(n), promoted),
                                                                         "completed", "stopped")),
                           "best_val_bpc": np.where(diverged, np.nan, best.loc[ids].to_numpy()),
                           "chars_seen": np.where(np.isin(np.arange(n), promoted), FULL, GRACE).astype(float),
                           "wall_s": 1.0, "node_id": "n0", "role": "search", "step_chars": STEP_CHARS})
    curves.loc[curves["trial_id"].isin(np.array(ids)[diverged]) & (curves["chars_seen"] > GRACE), "val_bpc"] = np.nan
    curves["best_val_bpc"] = running_best(curves)
    for s in shape.specs:
        v = p[s.name]
        trials[s.column] = [str(x) for x in v] if s.is_categorical else np.asarray(v, float)
    study = {"schema_version": 2, "name": f"calibrate-{shape.name}", "metric": "val_bpc", "budget_chars": FULL,
             "search_space": {}, "corpus": {"vocab_size": 99},
             "eval": {"eval_at_chars": [GRACE, FULL]},
             "scheduler": {"name": "ASHA", "grace_period": GRACE, "reduction_factor": 8, "max_t": FULL}}
    samples = pd.DataFrame(columns=["trial_id", "chars_seen", "temperature", "text"])
    return RunData(None, study, tuple(shape.specs), trials, curves, samples)



def write_shape_run(path: pathlib.Path, n_trials: int, *, seed: int = 0, shape: str = "sherlock-11",
                        repeats: int = 3) -> pathlib.Path:
    """A run directory (study.json + the three Parquet tables) of `n_trials` search trials of a calibration shape,
    plus `repeats` seed repeats of the best one and two sample metrics per evaluation."""
    sh = SHAPES[shape]
    run = synthetic_run(sh, seed=seed, n_trials=n_trials)
    rng = np.random.default_rng(seed + 1)
    trials, curves = run.trials.copy(), run.curves.copy()
    best = trials.loc[trials["best_val_bpc"].idxmin()]
    rep_rows, rep_curves = [], []
    for r in range(repeats):
        tid = f"r{r}"
        c = curves[curves["trial_id"] == best["trial_id"]].assign(trial_id=tid)
        c = c.assign(val_bpc=c["val_bpc"] * np.exp(rng.normal(0, 0.012)))
        c = c.assign(best_val_bpc=running_best(c))
        rep_curves.append(c)
        rep_rows.append({**best.to_dict(), "trial_id": tid, "role": "repeat", "repeat_of": best["trial_id"],
                         "best_val_bpc": float(c["val_bpc"].min())})
    trials = pd.concat([trials, pd.DataFrame(rep_rows)], ignore_index=True)
    curves = pd.concat([curves, *rep_curves], ignore_index=True)
    samples = curves[["trial_id", "chars_seen"]].assign(
        temperature=0.8, text="Holmes said the door was open.", kind="eval",
        known_word_frac=np.clip(1.2 - 0.2 * curves["val_bpc"] + rng.normal(0, 0.02, len(curves)), 0, 1),
        copy20_frac=np.clip(rng.normal(0.05, 0.01, len(curves)), 0, 1))
    space = {}
    for s in sh.specs:
        space[s.name] = ({"type": "categorical", "choices": list(s.choices)} if s.is_categorical else
                         {"type": s.kind, "low": int(s.low) if s.kind == "int" else s.low,
                          "high": int(s.high) if s.kind == "int" else s.high, "log": s.log})
    study = {**run.study, "schema_version": SCHEMA_VERSION, "name": f"bench-{shape}-{n_trials}", "mode": "min",
             "search_space": space, "num_trials": n_trials, "repeats": repeats, "seed": seed,
             "sampler": {"name": "RandomSampler", "seed": seed}}
    return save(path, study, trials=trials, curves=curves, samples=samples)

# ---- the test study ------------------------------------------------------------------------------------------
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
TEST_BUDGET, TEST_EVALS, TEST_GRACE, RF = 800_000, 8, 100_000, 3
SEED_SD = 0.05
WORDS = ("the of and to a in that it his was he I you is Holmes Watson said upon my which had not as be with "
         "for at this have but there Baker Street Lestrade Moriarty inspector matter door").split()
HOSTILE = "<script>alert('x')</script> ``` ```````` </pre><img src=x onerror=alert(1)> | # [a](javascript:x)"


def final_quality(p: dict) -> float:
    """Noise-free val_bpc of a configuration at the full budget."""
    u_lr = _unit(p["lr"], 1e-4, 1e-1, True)
    u_h = _unit(p["hidden_size"], 64, 1024, True)
    cell = {"rnn_tanh": 1, "rnn_relu": 1, "gru": -1, "lstm": -1}[p["cell"]]
    return float(1.6 + 1.643 * (u_lr - 0.6) ** 2 + 0.0894 * cell - 0.219 * (u_h - 0.5))


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
    milestones = [TEST_BUDGET * k // TEST_EVALS for k in range(1, TEST_EVALS + 1)]
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
    stop_at = np.full(n_trials, TEST_BUDGET)
    if asha:  # the top third (or `survive`) is promoted at each rung, judged at that rung
        order = np.argsort(finals)
        first, second = ((n_trials // 3, n_trials // 9) if survive is None
                         else (int(n_trials * survive), int(n_trials * survive ** 2)))
        stop_at[order[first:]] = TEST_GRACE
        stop_at[order[second:first]] = TEST_GRACE * RF
    status = np.where(stop_at < TEST_BUDGET, "stopped", "completed").astype(object)
    if n_trials > 7:
        status[3], status[7] = "diverged", "failed"
    best = int(np.argmin(np.where(status == "completed", finals, np.inf)))
    roles = ["search"] * n_trials + ["repeat"] * repeats
    configs += [configs[best]] * repeats
    finals = np.concatenate([finals, final_quality(configs[best]) + rng.normal(0, SEED_SD, repeats)])
    stop_at = np.concatenate([stop_at, np.full(repeats, TEST_BUDGET)])
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
            vb = fin + 1.2 * (TEST_BUDGET / m - 1) ** 0.5 * 0.1 + rng.normal(0, 0.01)
            if st == "diverged" and m > TEST_GRACE:
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
    space = json.loads(json.dumps(SEARCH_SPACE))
    if hostile:
        space["cell"]["choices"][3] = "<i>lstm</i>`"
    study = {"schema_version": schema, "name": "<script>x</script>" if hostile else name, "metric": "val_bpc",
             "mode": "min", "budget_chars": TEST_BUDGET, "search_space": space,
             "fixed": {"embedding_dim": 64, "batch_size": batch_size},
             "corpus": {"name": "sherlock", "path": "shared/data/sherlock.txt", "sha256": "0" * 64,
                        "chars": 3_000_000, "vocab_size": 96, "train_chars": 2_700_000, "val_chars": 150_000,
                        "test_chars": 150_000},
             "eval": {"val_chars": 50_000, "evals_per_trial": TEST_EVALS},
             "sampler": {"name": "TPESampler", "seed": seed},
             "scheduler": {"name": "ASHA", "time_attr": "chars_seen", "grace_period": TEST_GRACE,
                           "reduction_factor": RF, "max_t": TEST_BUDGET},
             "seed": seed, "num_trials": n_trials, "repeats": repeats,
             "versions": {"python": "3.11", "torch": "2.13.0", "ray": "2", "optuna": "5.0.0",
                          "charrnn_study": "0.1"},
             "created_utc": "2025-01-01T00:00:00Z"}
    return save(path, study, trials=trials, curves=curves, samples=samples)


def rename_trial_ids(run_dir: pathlib.Path, rename: dict[str, str], *, sort_rows: bool = True) -> pathlib.Path:
    """Give the trials of `run_dir` other ids, in place, as another Tune run of the same trials would: every string
    equal to an old id (trial_id, repeat_of, ... in the tables; any value in study.json) becomes `rename[id]`.
    `sort_rows`: put each table's rows in the new ids' order, as a writer that met the trials in that order would."""
    for name in (TRIALS_FILE, CURVES_FILE, SAMPLES_FILE):
        df = pd.read_parquet(run_dir / name)
        for col in df.columns:
            if df[col].dtype == object or pd.api.types.is_string_dtype(df[col]):
                df[col] = df[col].map(lambda v: rename.get(v, v) if isinstance(v, str) else v)
        if sort_rows:
            df = df.sort_values("trial_id", kind="stable")
        df.to_parquet(run_dir / name, index=False)

    def swap(obj):
        if isinstance(obj, dict):
            return {k: swap(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [swap(v) for v in obj]
        return rename.get(obj, obj) if isinstance(obj, str) else obj

    study = json.loads((run_dir / STUDY_FILE).read_text(encoding="utf-8"))
    (run_dir / STUDY_FILE).write_text(json.dumps(swap(study)), encoding="utf-8")
    return run_dir


# ---- the local design: the center and every one-at-a-time move, trained with the same seeds -------------------
LOCAL_SEEDS = (1000, 1001)
LOCAL_BUDGET, LOCAL_STEPS = 1_600_000, 4_000
LOCAL_UNIGRAM = 3.4  # the unigram baseline written beside a local design: every trained model is 1 bit/char below it
SHAPE = ("hidden_size", "cell")  # the synthetic space's hyperparameters that change the model's tensors


def local_moves(center: dict, space: dict | None = None) -> list[dict]:
    """The moves of the synthetic space (or `space`) from `center`, as study.local designs them (a quarter of a
    numeric range, on the log scale where the space is logarithmic; every other choice of a categorical one)."""
    out = []
    for name, spec in (space or SEARCH_SPACE).items():
        c = center[name]
        if spec["type"] == "categorical":
            out += [{"param": name, "value": v, "label": v, "kind": "choice"} for v in spec["choices"] if v != c]
            continue
        lo, hi, log = spec["low"], spec["high"], spec["log"]
        span = (math.log(hi) - math.log(lo)) if log else hi - lo
        for sign, kind in ((1, "up"), (-1, "down")):
            v = c * math.exp(sign * span / 4) if log else c + sign * span / 4
            v = min(max(v, lo), hi)
            v = int(round(v)) if spec["type"] == "int" else float(f"{v:.4g}")
            factor = math.exp(span / 4)
            label = (f"x{factor:.2g}" if sign > 0 else f"/{factor:.2g}") if log else f"{sign * span / 4:+.3g}"
            out.append({"param": name, "value": v, "label": label, "kind": kind})
    return out


def add_local_design(path: pathlib.Path, *, seeds: tuple[int, ...] = LOCAL_SEEDS, seed: int = 0,
                     seed_sd: float = SEED_SD, diverge: tuple[str, object] | None = None,
                     center_offset: float = 0.0, unigram: float = LOCAL_UNIGRAM) -> pathlib.Path:
    """Add a local design to the synthetic run at `path` (rows of role "local", study.json's "local", and a unigram
    baseline): around its best search trial, every move of `local_moves`, each with `seeds`.

    val_bpc = final_quality(config) + center_offset + a seed's shared part (sd `seed_sd`: common random numbers)
    + a configuration's own part (sd seed_sd / 5; seed_sd / 2 for a move that changes the tensors). The true
    effect of a move is therefore final_quality(move) - final_quality(center); `diverge` = (param, value) makes
    that move diverge in its first seed (value None: the hyperparameter's first move). A hostile run's cell choice
    "<i>lstm</i>`" scores as lstm.
    """
    rng = np.random.default_rng(seed + 77)
    trials = pd.read_parquet(path / TRIALS_FILE)
    curves = pd.read_parquet(path / CURVES_FILE)
    search = trials[(trials["role"] == "search") & (trials["status"] == "completed")]
    best = search.sort_values("best_val_bpc", kind="stable").iloc[0]
    center = {k: (best[f"param.{k}"].item() if hasattr(best[f"param.{k}"], "item") else best[f"param.{k}"])
              for k in SEARCH_SPACE}
    study = json.loads((path / STUDY_FILE).read_text(encoding="utf-8"))
    moves = local_moves(center, study["search_space"])
    if diverge is not None and diverge[1] is None:
        diverge = (diverge[0], next(m["value"] for m in moves if m["param"] == diverge[0]))

    def quality(cfg: dict) -> float:
        return final_quality({**cfg, "cell": cfg["cell"] if cfg["cell"] in SEARCH_SPACE["cell"]["choices"] else "lstm"})

    shared = rng.normal(0, seed_sd, len(seeds))
    rows, crows = [], []
    index = int(trials["trial_index"].max()) + 1
    for j, s in enumerate(seeds):
        for moved, cfg in [("", center)] + [(m["param"], {**center, m["param"]: m["value"]}) for m in moves]:
            own = seed_sd / (2 if moved in SHAPE else 5)
            y = quality(cfg) + center_offset + shared[j] + rng.normal(0, own)
            failed = diverge is not None and j == 0 and moved == diverge[0] and cfg[moved] == diverge[1]
            tid = f"l{index:03d}"
            rows.append({"trial_id": tid, "status": "diverged" if failed else "completed",
                         **{f"param.{k}": v for k, v in cfg.items()}, "best_val_bpc": math.nan if failed else y,
                         "chars_seen": LOCAL_BUDGET, "wall_s": 30.0, "node_id": "node-0", "trial_index": index,
                         "role": "local", "seed": s, "device": "cpu", "error": None, "train_bpc": y - 0.05,
                         "num_params": 0, "moved": moved})
            for k in range(1, 5):  # four evaluations, falling to y (a diverged trial: NaN after the first)
                v = math.nan if failed and k > 1 else y + 0.2 * (4 - k)
                crows.append({"trial_id": tid, "chars_seen": LOCAL_BUDGET * k // 4, "wall_s": 7.5 * k,
                              "train_bpc": v - 0.05, "val_bpc": v, "best_val_bpc": y + 0.2 * (4 - min(k, 1 if failed
                                                                                               else 4)),
                              "lr": cfg["lr"]})
            index += 1
    trials = pd.concat([trials, pd.DataFrame(rows)], ignore_index=True)
    curves = pd.concat([curves, pd.DataFrame(crows)], ignore_index=True)
    study["local"] = {"budget_chars": LOCAL_BUDGET, "steps": LOCAL_STEPS, "seeds": list(seeds),
                      "center_trial": str(best["trial_id"]), "center": center, "moves": moves,
                      "chosen": {"moved": "", "value": None, "why": "no move scored better than the center"}}
    baselines = pd.DataFrame({"method": ["unigram"], "split": ["val"], "bpc": [unigram], "detail": [""]})
    return save(path, study, trials=trials, curves=curves, baselines=baselines)


def true_effects(path: pathlib.Path) -> dict[tuple[str, object], float]:
    """The true effect of every move of a run written by `add_local_design` (no center offset, no noise)."""
    local = json.loads((path / STUDY_FILE).read_text(encoding="utf-8"))["local"]
    c = local["center"]
    return {(m["param"], m["value"]): final_quality({**c, m["param"]: m["value"]}) - final_quality(c)
            for m in local["moves"]}


LOCAL_CENTER = {"lr": 0.01, "hidden_size": 256, "dropout": 0.2, "seq_len": 128, "cell": "gru", "optimizer": "adam"}


def local_rundata(effects: dict[str, float] | None = None, *, seeds: tuple[int, ...] = LOCAL_SEEDS,
                  seed_sd: float = SEED_SD, center_bpc: float = 1.6, unigram: float = LOCAL_UNIGRAM, n_search: int = 30,
                  search_lr_slope: float = 0.0, diverge: tuple[str, object] | None = None, seed: int = 0,
                  diverge_seeds: int = 1):
    """A run with a local design, in memory (`RunData`, no files): around LOCAL_CENTER, every move of `local_moves`
    has the true effect `effects[param]` (0 for a hyperparameter not named), with `seeds` and the noise of
    `add_local_design` (a seed's shared part of sd `seed_sd`, a configuration's own part smaller). `n_search`
    search trials spread over the space score 1.6 + search_lr_slope * (log10 lr + 2.5) + noise, for the rank
    tests. `diverge` = (param, value): that move diverges in its first `diverge_seeds` seeds."""
    from reports._load import ParamSpec, RunData

    rng = np.random.default_rng(seed)
    effects = effects or {}
    moves = local_moves(LOCAL_CENTER)
    shared = rng.normal(0, seed_sd, len(seeds))
    rows = []
    for j, s in enumerate(seeds):
        for moved, cfg in [("", LOCAL_CENTER)] + [(m["param"], {**LOCAL_CENTER, m["param"]: m["value"]})
                                                  for m in moves]:
            y = center_bpc + effects.get(moved, 0.0) + shared[j] + rng.normal(0, seed_sd / (2 if moved in SHAPE
                                                                                           else 5))
            failed = diverge is not None and j < diverge_seeds and moved == diverge[0] and cfg[moved] == diverge[1]
            rows.append({"status": "diverged" if failed else "completed", "role": "local", "moved": moved,
                         "seed": s, "best_val_bpc": math.nan if failed else y, **_param_cells(cfg)})
    for _ in range(n_search):
        cfg = {"lr": float(10 ** rng.uniform(-4, -1)), "hidden_size": float(rng.integers(64, 1025)),
               "dropout": float(rng.uniform(0, 0.5)), "seq_len": float(rng.integers(32, 257)),
               "cell": str(rng.choice(SEARCH_SPACE["cell"]["choices"])),
               "optimizer": str(rng.choice(SEARCH_SPACE["optimizer"]["choices"]))}
        y = 1.6 + search_lr_slope * (math.log10(cfg["lr"]) + 2.5) + rng.normal(0, seed_sd)
        rows.append({"status": "completed", "role": "search", "moved": "", "seed": 0, "best_val_bpc": y,
                     **_param_cells(cfg)})
    trials = pd.DataFrame(rows).assign(trial_id=[f"x{i:03d}" for i in range(len(rows))], trial_index=range(len(rows)),
                                       chars_seen=LOCAL_BUDGET, wall_s=1.0, node_id="n")
    params = tuple(ParamSpec(n, "categorical", choices=tuple(p["choices"])) if p["type"] == "categorical" else
                   ParamSpec(n, p["type"], float(p["low"]), float(p["high"]), bool(p["log"]))
                   for n, p in SEARCH_SPACE.items())
    study = {"metric": "val_bpc", "search_space": SEARCH_SPACE, "corpus": {"vocab_size": 96},
             "local": {"budget_chars": LOCAL_BUDGET, "steps": LOCAL_STEPS, "seeds": list(seeds),
                       "center_trial": "x-search", "center": LOCAL_CENTER, "moves": moves, "chosen": None}}
    baselines = pd.DataFrame({"method": ["unigram"], "split": ["val"], "bpc": [unigram], "detail": [""]})
    return RunData(pathlib.Path("."), study, params, trials, pd.DataFrame(columns=["trial_id", "chars_seen"]),
                   pd.DataFrame(columns=["trial_id", "chars_seen", "temperature", "text"]), baselines=baselines)


def _param_cells(cfg: dict) -> dict:
    """A configuration as trials.parquet's columns, typed as `load_run` leaves them (categorical: str)."""
    return {f"param.{k}": (str(v) if SEARCH_SPACE[k]["type"] == "categorical" else float(v)) for k, v in cfg.items()}
