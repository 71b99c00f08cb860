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


def rename_trial_ids(run_dir: pathlib.Path, rename: dict[str, str], *, sort_rows: bool = True) -> pathlib.Path:
    """Give the trials of `run_dir` other ids, in place, as another Tune run of the same trials would: every string
    equal to an old id (trial_id, repeat_of, ... in the tables; any value in study.json) becomes `rename[id]`.
    `sort_rows`: put each table's rows in the new ids' order, as a writer that met the trials in that order would."""
    for name in ("trials.parquet", "curves.parquet", "samples.parquet"):
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

    study = json.loads((run_dir / "study.json").read_text(encoding="utf-8"))
    (run_dir / "study.json").write_text(json.dumps(swap(study)), encoding="utf-8")
    return run_dir


# ---- the local design: the center and every one-at-a-time move, trained with the same seeds -------------------
LOCAL_SEEDS = (1000, 1001)
LOCAL_BUDGET, LOCAL_STEPS = 1_600_000, 4_000
UNIGRAM = 3.4  # the unigram baseline written beside a local design: every trained model is 1 bit/char below it
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
                     center_offset: float = 0.0, unigram: float = UNIGRAM) -> pathlib.Path:
    """Add a local design to the synthetic run at `path` (rows of role "local", study.json's "local", and a unigram
    baseline): around its best search trial, every move of `local_moves`, each with `seeds`.

    val_bpc = final_quality(config) + center_offset + a seed's shared part (sd `seed_sd`: common random numbers)
    + a configuration's own part (sd seed_sd / 5; seed_sd / 2 for a move that changes the tensors). The true
    effect of a move is therefore final_quality(move) - final_quality(center); `diverge` = (param, value) makes
    that move diverge in its first seed (value None: the hyperparameter's first move). A hostile run's cell choice
    "<i>lstm</i>`" scores as lstm.
    """
    rng = np.random.default_rng(seed + 77)
    trials = pd.read_parquet(path / "trials.parquet")
    curves = pd.read_parquet(path / "curves.parquet")
    search = trials[(trials["role"] == "search") & (trials["status"] == "completed")]
    best = search.sort_values("best_val_bpc", kind="stable").iloc[0]
    center = {k: (best[f"param.{k}"].item() if hasattr(best[f"param.{k}"], "item") else best[f"param.{k}"])
              for k in SEARCH_SPACE}
    study = json.loads((path / "study.json").read_text(encoding="utf-8"))
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
    curves = pd.concat([curves, pd.DataFrame(crows)], ignore_index=True).astype({"chars_seen": "int64"})
    trials.to_parquet(path / "trials.parquet", index=False)
    curves.to_parquet(path / "curves.parquet", index=False)
    pd.DataFrame({"method": ["unigram"], "split": ["val"], "bpc": [unigram], "detail": [""]}).to_parquet(
        path / "baselines.parquet", index=False)
    study["local"] = {"budget_chars": LOCAL_BUDGET, "steps": LOCAL_STEPS, "seeds": list(seeds),
                      "center_trial": str(best["trial_id"]), "center": center, "moves": moves,
                      "chosen": {"moved": "", "value": None, "why": "no move scored better than the center"}}
    (path / "study.json").write_text(json.dumps(study), encoding="utf-8")
    return path


def true_effects(path: pathlib.Path) -> dict[tuple[str, object], float]:
    """The true effect of every move of a run written by `add_local_design` (no center offset, no noise)."""
    local = json.loads((path / "study.json").read_text(encoding="utf-8"))["local"]
    c = local["center"]
    return {(m["param"], m["value"]): final_quality({**c, m["param"]: m["value"]}) - final_quality(c)
            for m in local["moves"]}


@pytest.fixture(scope="session")
def make_local_run(tmp_path_factory):
    """Factory fixture: make_local_run(run=dict(...), **local) writes a synthetic run with a local design."""

    def make(run: dict | None = None, **local) -> pathlib.Path:
        return add_local_design(write_run_dir(tmp_path_factory.mktemp("local"), **(run or {})), **local)

    return make


LOCAL_CENTER = {"lr": 0.01, "hidden_size": 256, "dropout": 0.2, "seq_len": 128, "cell": "gru", "optimizer": "adam"}


def local_rundata(effects: dict[str, float] | None = None, *, seeds: tuple[int, ...] = LOCAL_SEEDS,
                  seed_sd: float = SEED_SD, center_bpc: float = 1.6, unigram: float = UNIGRAM, n_search: int = 30,
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
