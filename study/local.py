"""The local design: around one configuration, every hyperparameter moved one at a time, all with the same seeds.

The search's trials are spread over the whole space and trained briefly; what they say about one hyperparameter
is mixed with every other's and with seed noise of the same size. The local design asks the lab's question where
models have formed: the center (the search's best) and each move from it train to the same budget with the same
seeds, so seed s of a move and seed s of the center share the data order (and the initialisation, where the move
keeps the model's tensors): the difference of the two is the move's effect plus a noise much smaller than a
seed's. Pure functions: the stage (study/stages/local.py) runs the trials, the report (reports/_effects.py) estimates.

A move of a numeric hyperparameter is a quarter of its range (on the log scale where the space is logarithmic),
up and down; at an edge, the two moves go inward one and two quarters. A categorical one, or an integer with at
most four values, moves to each other value.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from runcontract import LOCAL
from study.spec import Param, StudySpec

STEP = 0.25  # a numeric move: this share of the range
FEW_VALUES = 4  # an integer range with at most this many values moves to each other value
# Moves that keep the model's tensors: with the same seed, center and move start from the same initialisation.
SAME_SHAPE = ("lr", "lr_scale", "optimizer", "dropout", "grad_clip", "train_chars", "seq_len", "batch_size",
              "step_chars", "weight_decay", "lr_schedule")
LEVEL = 0.95


@dataclass(frozen=True)
class Move:
    param: str
    value: object
    label: str  # what a reader sees: "x2.2", "/2.2", "+0.075", "gru", "3"
    kind: str  # "up" | "down" | "choice"

    def to_dict(self) -> dict:
        return asdict(self)


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def moves_of(param: Param, center) -> list[Move]:
    """The moves of one hyperparameter from its center value (see the module doc)."""
    name, center = param.name, _plain(center)
    if param.type == "categorical":
        return [Move(name, _plain(c), str(c), "choice") for c in param.choices if c != center]
    if param.type == "int" and param.high - param.low + 1 <= FEW_VALUES:
        values = range(int(param.low), int(param.high) + 1, int(param.step or 1))
        return [Move(name, v, str(v), "up" if v > center else "down") for v in values if v != center]
    lo, hi, c = (math.log(param.low), math.log(param.high), math.log(center)) if param.log else (
        float(param.low), float(param.high), float(center))
    delta = STEP * (hi - lo)
    tol = 1e-9 * max(1.0, abs(hi - lo))
    steps = [delta, -delta]
    if c + delta > hi + tol:
        steps = [-delta, -2 * delta]
    elif c - delta < lo - tol:
        steps = [delta, 2 * delta]
    out: list[Move] = []
    for d in steps:
        x = c + d
        if x > hi + tol or x < lo - tol:
            continue
        value = math.exp(x) if param.log else x
        value = min(max(value, param.low), param.high)
        if param.type == "int":
            value = int(round(value))
            if value == center or any(m.value == value for m in out):
                continue
        else:
            value = float(f"{value:.4g}")
        factor = math.exp(abs(d))
        label = (f"x{factor:.2g}" if d > 0 else f"/{factor:.2g}") if param.log else f"{d:+.3g}"
        out.append(Move(name, value, label, "up" if d > 0 else "down"))
    return out


def design(spec: StudySpec, center: dict) -> list[Move]:
    """Every move of the local design, hyperparameter by hyperparameter in the spec's order."""
    return [m for name in spec.local_params() for m in moves_of(spec.search[name], center[name])]


def points(spec: StudySpec, center: dict, seeds: list[int]) -> list[dict]:
    """The local design's trials in the order they run: seed by seed, the center first, then every move. Each is
    the configuration's searched hyperparameters, its seed and `moved` (the hyperparameter moved; "" for the
    center)."""
    configs = [("", dict(center))] + [(m.param, {**center, m.param: m.value}) for m in design(spec, center)]
    return [{**params, "seed": s, "moved": moved} for s in seeds for moved, params in configs]


def seeds_for(seed: int, n: int) -> list[int]:
    """The local design's seeds: apart from the search's (`seed`) and the repeats' (`seed + 1` ...), and apart
    from every other study seed's (seed 0: 1000, 1001; seed 1: 1002, 1003 with n = 2), so that studies with
    different seeds measure their effects on different draws."""
    return [1000 + seed * n + k for k in range(n)]


def config_key(row: pd.Series | dict, names: list[str]) -> tuple:
    return tuple(_plain(row[f"param.{n}"]) for n in names)


@dataclass(frozen=True)
class Choice:
    """The configuration the local design hands to the final model, and why."""

    moved: str  # "" keeps the center
    value: object
    trial_id: str | None  # the chosen configuration's best seed: the final model's weights to beat
    mean_bpc: float
    why: str

    def to_dict(self) -> dict:
        return {"moved": self.moved, "value": self.value, "trial_id": self.trial_id, "mean_bpc": self.mean_bpc,
                "why": self.why}


def choose(trials: pd.DataFrame, spec: StudySpec, uniform_bpc: float) -> Choice | None:
    """The configuration with the best expected score among the center and its moves, confirmed by its seeds.

    A move replaces the center only if it trained normally in every seed and its paired difference from the center
    is below zero beyond its 95% interval (the standard error pools the paired differences of every move, as the
    report does). Otherwise the center, if it trained normally in every seed. None when neither did.
    """
    local = trials[trials["role"] == LOCAL]
    if local.empty:
        return None
    names = list(spec.search)
    y = local["best_val_bpc"].where(local["status"].isin(("completed", "stopped")), uniform_bpc).astype(float)
    local = local.assign(_y=y.fillna(uniform_bpc), _ok=local["status"].isin(("completed", "stopped")))
    moved = local["moved"].fillna("").astype(str)
    center = local[moved == ""].set_index("seed")
    if center.empty:
        return None
    groups = {}
    for key, g in local[moved != ""].groupby(local[moved != ""].apply(lambda r: (r["moved"],) + config_key(r, names),
                                                                      axis=1), sort=False):
        g = g.set_index("seed")
        common = g.index.intersection(center.index)
        groups[key] = (g, (g.loc[common, "_y"] - center.loc[common, "_y"]).to_numpy())
    diffs = [d - d.mean() for _, d in groups.values() if len(d) > 1]
    dof = sum(len(d) - 1 for d in diffs)
    sd = math.sqrt(sum(float((d ** 2).sum()) for d in diffs) / dof) if dof else math.inf
    center_ok = bool(center["_ok"].all())
    best = None
    for key, (g, d) in groups.items():
        if not g["_ok"].all() or len(d) == 0:
            continue
        upper = d.mean() + stats.t.ppf(0.5 + LEVEL / 2, dof) * sd / math.sqrt(len(d)) if dof else math.inf
        if upper < 0 and (best is None or g["_y"].mean() < best[1]["_y"].mean()):
            best = (key, g, d, upper)
    if best is not None:
        (param, *_), g, d, upper = best
        trial = g.sort_values("_y").iloc[0]
        return Choice(param, _plain(trial[f"param.{param}"]), str(trial["trial_id"]), float(g["_y"].mean()),
                      f"{param} moved to {_plain(trial[f'param.{param}'])} scored {-d.mean():.3f} bits/char better "
                      f"than the center in every seed's pair (95% interval up to {upper:+.3f})")
    if not center_ok:
        return None
    trial = center.sort_values("_y").iloc[0]
    return Choice("", None, str(trial["trial_id"]), float(center["_y"].mean()),
                  "no move scored better than the center beyond its 95% interval; the center trained normally in "
                  f"all {len(center)} seeds")


def local_chars(n_points: int, budget_chars: int, parallel: int) -> int:
    """Characters the local design trains, counted in rounds of `parallel` trials."""
    return int(np.ceil(n_points / max(parallel, 1)) * max(parallel, 1) * budget_chars)
