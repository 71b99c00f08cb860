"""Figures drawn from an `Analysis` (compute first, draw second). Each returns PNG bytes or None."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reports._analysis import Analysis  # noqa: E402
from reports._effects import SAME_SHAPE, SHAPE  # noqa: E402
from reports._final import BASELINE_NAMES, FinalModel, final_model  # noqa: E402
from reports._load import RunData  # noqa: E402
from reports._wording import move_label  # noqa: E402
from runcontract import SEARCH  # noqa: E402

DPI = 110
METHOD_LABELS = {"fanova": "fANOVA (additive GP)", "permutation": "permutation (boosted trees, OOB)"}


def label(s: object, limit: int = 40) -> str:
    """A run-directory string made safe for matplotlib text: no mathtext, bounded length."""
    s = str(s).replace("\n", " ").replace("$", r"\$")
    return s if len(s) <= limit else s[:limit - 1] + "…"


def _chars_axis(ax) -> None:
    ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))
    ax.set_xlabel("characters seen")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def importance_bars(a: Analysis) -> bytes | None:
    t = a.importance.table
    if not np.isfinite(t["importance"]).any():
        return None
    methods = [m for m in METHOD_LABELS if m in t.columns]
    with sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(figsize=(8, 0.55 * len(t) + 1.4))
        h = 0.8 / len(methods)
        ypos = np.arange(len(t))
        for i, m in enumerate(methods):
            y = ypos - 0.4 + h * (i + 0.5)
            err = np.vstack([t[m] - t[f"{m}_ci_low"], t[f"{m}_ci_high"] - t[m]]).clip(0)
            ax.barh(y, t[m], height=h, xerr=err, capsize=3, label=METHOD_LABELS[m],
                    color=sns.color_palette()[i], alpha=0.85)
        ax.axvline(a.importance.floors["applied"], color="k", ls="--", lw=1, label="noise floor")
        ax.set_yticks(ypos, [label(p) + ("  (noise)" if w else "") for p, w in zip(t["param"], t["within_noise"])])
        ax.invert_yaxis()
        ax.set_xlabel(f"share of the variance of {label(a.target)} (95% bootstrap CI)")
        ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"Hyperparameter importance, {a.importance.n_trials} trials at equal budget")
    return _png(fig)


def marginals(a: Analysis, top: int = 3) -> bytes | None:
    m = a.importance.marginals
    if m is None or m.empty:
        return None
    names = a.importance.table["param"].head(top).tolist()
    params = a.run.trials.set_index("trial_id").loc[a.budget.values["trial_id"]]
    y = a.budget.values["y"].to_numpy(float)
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False, sharey=True)
        for ax, name in zip(axes[0], names):
            spec, d = a.run.param(name), m[m["param"] == name]
            if spec.is_categorical:
                x = d["pos"].to_numpy()
                ax.errorbar(x, d["mean"], yerr=np.vstack([d["mean"] - d["low"], d["high"] - d["mean"]]).clip(0),
                            fmt="o", color="C0", capsize=4, label="main effect (95% CI)")
                pos = {c: i for i, c in enumerate(spec.choices)}
                px = np.array([pos.get(v, np.nan) for v in params[spec.column]], dtype=float)
                ax.scatter(px + np.random.default_rng(0).uniform(-0.15, 0.15, len(px)), y, s=10, color="grey",
                           alpha=0.6, label="trials")
                ax.set_xticks(range(len(spec.choices)), [label(c, 14) for c in spec.choices], rotation=30)
            else:
                x = d["value"].astype(float).to_numpy()
                ax.plot(x, d["mean"], color="C0", label="main effect")
                ax.fill_between(x, d["low"].astype(float), d["high"].astype(float), color="C0", alpha=0.25,
                                label="95% CI")
                ax.scatter(params[spec.column], y, s=10, color="grey", alpha=0.6, label="trials")
                if spec.log:
                    ax.set_xscale("log")
            ax.set_xlabel(label(name))
            ax.set_title(label(name))
        axes[0][0].set_ylabel(f"best {label(a.run.metric)} up to {a.budget.chars:,.0f} chars")
        axes[0][0].legend(fontsize=7)
        fig.suptitle("Main effects: the other hyperparameters averaged over the search space", fontsize=10)
    return _png(fig)


def validation_curves(a: Analysis) -> bytes | None:
    c = a.run.curves
    t = a.run.trials[a.run.trials["role"] == SEARCH].set_index("trial_id")
    c = c[c["trial_id"].isin(t.index)]
    if c.empty:
        return None
    best = t["best_val_bpc"]  # colours each curve by its trial's score
    ok = best[np.isfinite(best)]
    norm = matplotlib.colors.Normalize(ok.min(), ok.max()) if len(ok) else matplotlib.colors.Normalize(0, 1)
    cmap = plt.get_cmap("viridis_r")
    with sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for tid, g in c.sort_values("chars_seen").groupby("trial_id"):
            v = best.get(tid, math.nan)
            color = cmap(norm(v)) if math.isfinite(v) else "lightgrey"
            ax.plot(g["chars_seen"], g["val_bpc"], color=color, lw=1, alpha=0.8, marker="o", ms=2.5)
        vals = c["val_bpc"][np.isfinite(c["val_bpc"])]
        if len(vals):
            lo, hi = vals.min(), vals.quantile(0.97)
            ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
        if math.isfinite(a.budget.chars):
            ax.axvline(a.budget.chars, color="k", ls="--", lw=1)
            ax.annotate(" compared here", (a.budget.chars, ax.get_ylim()[1]), va="top", fontsize=8)
        _baseline_lines(ax, a.run.baselines)
        sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=ax, label=f"best {label(a.run.metric)} of the trial")
        _chars_axis(ax)
        ax.set_ylabel(label(a.run.metric))
        ax.set_title("Validation curves of all search trials (grey: diverged or failed)")
    return _png(fig)


def _baseline_lines(ax, baselines: pd.DataFrame) -> None:
    """The compressors' validation bits/char as grey lines, the axis widened to show them."""
    val = baselines[baselines["split"] == "val"] if len(baselines) else baselines
    lo, hi = ax.get_ylim()
    for r, style in zip(val.itertuples(), ("--", "-.", ":", "--")):
        if math.isfinite(r.bpc) and r.bpc < hi:
            ax.axhline(r.bpc, color="grey", ls=style, lw=1)
            ax.annotate(f"{r.method} {r.bpc:.2f} ", (ax.get_xlim()[1], r.bpc), ha="right", va="bottom", fontsize=8,
                        color="dimgrey")
            lo = min(lo, r.bpc - 0.05)
    ax.set_ylim(lo, hi)


def best_trial(a: Analysis) -> bytes | None:
    if a.showcase.empty and a.pareto.empty:
        return None
    tid = (a.pareto.sort_values("best_val_bpc")["trial_id"].iloc[0] if not a.pareto.empty
           else a.showcase["trial_id"][0])
    c = a.run.curves[a.run.curves["trial_id"] == tid].sort_values("chars_seen")
    if c.empty:
        return None
    w = max(3, len(c) // 8)
    with sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(figsize=(8, 4))
        for col, color in (("train_bpc", "C1"), ("val_bpc", "C0")):
            ax.plot(c["chars_seen"], c[col], color=color, lw=0.8, alpha=0.45, label=f"{col}")
            ax.plot(c["chars_seen"], c[col].rolling(w, center=True, min_periods=1).mean(), color=color, lw=2.2,
                    label=f"{col}, centred rolling mean of {w}")
        _chars_axis(ax)
        ax.set_ylabel("bits per character")
        ax.legend(fontsize=8)
        ax.set_title(f"Best trial {label(tid)}: training curve")
    return _png(fig)


def cost(a: Analysis) -> bytes | None:
    p = a.pareto
    if p.empty:
        return None
    with sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        sc = ax.scatter(p["wall_s"], p["best_val_bpc"], c=p["chars_seen"], cmap="crest", s=22, alpha=0.85)
        fig.colorbar(sc, ax=ax, label="characters seen", format=matplotlib.ticker.EngFormatter(sep=""))
        f = p[p["on_front"]]
        ax.step(f["wall_s"], f["best_val_bpc"], where="post", color="C3", lw=1.5, label="Pareto front")
        ax.scatter(f["wall_s"], f["best_val_bpc"], facecolors="none", edgecolors="C3", s=60)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("wall time of the trial (s)")
        ax.set_ylabel(f"best {label(a.run.metric)} of the trial")
        ax.legend(fontsize=8)
        ax.set_title("Quality against cost")
    return _png(fig)


def interaction(a: Analysis) -> bytes | None:
    g = a.interaction
    if g is None or g.empty or a.interaction_pair is None:
        return None
    na, nb = a.interaction_pair  # the hyperparameter the answer names, and its partner
    sa, sb = a.run.param(na), a.run.param(nb)
    grid = g.pivot(index="b_pos", columns="a_pos", values="mean").to_numpy()
    with sns.axes_style("white"):
        fig, ax = plt.subplots(figsize=(6.5, 5))
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis_r")
        fig.colorbar(im, ax=ax, label=f"predicted best {label(a.run.metric)}")
        for ax_set, spec, vals in ((ax.set_xticks, sa, g.drop_duplicates("a_pos")["a"]),
                                   (ax.set_yticks, sb, g.drop_duplicates("b_pos")["b"])):
            vals = list(vals)
            idx = range(len(vals)) if spec.is_categorical else range(0, len(vals), max(1, len(vals) // 5))
            ax_set(list(idx), [label(vals[i], 14) if spec.is_categorical else f"{float(vals[i]):.3g}" for i in idx])
        ax.set_xlabel(label(na))
        ax.set_ylabel(label(nb))
        ax.set_title(f"Interaction of {label(na)} and {label(nb)} (others averaged)", fontsize=10)
    return _png(fig)


def effects(a: Analysis) -> bytes | None:
    """The local design in one panel: per move a point with its 95% interval, grouped by hyperparameter (every
    searched one; an unmoved one is a labelled empty row), a vertical line at 0 (the center)."""
    e = a.effects
    if e is None or e.moves.empty or not np.isfinite(e.moves["effect"]).any():
        return None
    m = e.moves
    names = [p.name for p in a.run.params]
    names += [n for n in pd.unique(m["param"]) if n not in names]
    rows = []  # (tick label, move row or None, which hyperparameter), top to bottom
    for k, name in enumerate(names):
        mine = m[m["param"] == name]
        rows += [(f"{label(name, 24)}  {label(move_label(str(r['label'])), 12)}", r, k) for _, r in mine.iterrows()]
        if mine.empty:
            rows.append((f"{label(name, 24)}  (not moved)", None, k))
    ok = m[(m["n_failed"] == 0) & np.isfinite(m["ci_low"])]
    span = ok if len(ok) else m[np.isfinite(m["effect"])]
    lo = float(np.nanmin(np.r_[span["ci_low"].fillna(span["effect"]), span["effect"], 0.0]))
    hi = float(np.nanmax(np.r_[span["ci_high"].fillna(span["effect"]), span["effect"], 0.0]))
    pad = 0.08 * (hi - lo) + 1e-3
    lo, hi = lo - pad, hi + pad
    colors = {SAME_SHAPE: "C0", SHAPE: "C1"}
    with sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.6))
        for y, (_, _, k) in enumerate(rows):  # every other hyperparameter's rows shaded
            if k % 2:
                ax.axhspan(y - 0.5, y + 0.5, color="0.94", zorder=0, lw=0)
        for y, (_, r, _) in enumerate(rows):
            if r is None or not math.isfinite(r["effect"]):
                continue
            x = min(max(float(r["effect"]), lo), hi)
            err = ([[max(x - max(r["ci_low"], lo), 0)], [max(min(r["ci_high"], hi) - x, 0)]]
                   if math.isfinite(r["ci_low"]) else None)
            face = "white" if r["n_failed"] else colors.get(r["pool"], "C0")
            ax.errorbar([x], [y], xerr=err, fmt="o", color=colors.get(r["pool"], "C0"), mfc=face, capsize=3)
            if not lo < float(r["effect"]) < hi:
                ax.annotate(f"{float(r['effect']):+.2f}", (x, y), xytext=(-4 if x >= hi else 4, 6),
                            textcoords="offset points", ha="right" if x >= hi else "left", fontsize=7)
        ax.axvline(0, color="k", lw=1)
        ax.set_xlim(lo, hi)
        ax.set_yticks(range(len(rows)), [t for t, _, _ in rows], fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)  # every row, an unmoved one's too, top to bottom
        for name, c in colors.items():
            ax.plot([], [], "o", color=c, label=f"moves that {'keep' if name == SAME_SHAPE else 'change'} the "
                                                f"model's tensors")
        ax.plot([], [], "o", color="grey", mfc="white", label="with a diverged or failed seed (uniform guess)")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_xlabel("effect on best val_bpc, move − center with the same seed (bits/char; 95% CI)")
        ax.set_title(f"Around the center: each hyperparameter moved one at a time, {len(e.seeds)} seeds each",
                     fontsize=10)
    return _png(fig)


def sample_importance(a: Analysis) -> bytes | None:
    if not a.samples:
        return None
    rows = [st.result.table.assign(metric=st.metric) for st in a.samples]
    d = pd.concat(rows)
    if not np.isfinite(d["importance"]).any():
        return None
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, len(a.samples), figsize=(4.8 * len(a.samples), 0.45 * len(rows[0]) + 1.5),
                                 squeeze=False, layout="constrained")
        for ax, st in zip(axes[0], a.samples):
            t = st.result.table
            err = np.vstack([t["importance"] - t["ci_low"], t["ci_high"] - t["importance"]]).clip(0)
            ax.barh([label(p) for p in t["param"]], t["importance"], xerr=err, capsize=3, color="C2")
            ax.axvline(st.result.floors["applied"], color="k", ls="--", lw=1)
            ax.invert_yaxis()
            ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
            ax.set_title(f"{label(st.metric)} (T={st.temperature:g})", fontsize=10)
        fig.suptitle("What drives sample quality (share of variance, 95% CI)", fontsize=10)
    return _png(fig)


def final_curve(run: RunData, fm: FinalModel | None) -> bytes | None:
    """The final model's validation curve with the baselines as horizontal lines."""
    if fm is None:
        return None
    c = run.curves[run.curves["trial_id"] == fm.trial_id].sort_values("chars_seen")
    if c.empty:
        return None
    with sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot(c["chars_seen"], c["val_bpc"], marker="o", ms=3, label="final model, validation")
        race = run.race.assign(candidate=run.race.get("candidate", "")) if len(run.race) else run.race
        for name, rs in (race.groupby("candidate", sort=False) if len(race) else []):
            # the final race: where the final model went on from, and the others (a candidate's rounds, one line)
            rc = run.curves[run.curves["trial_id"].isin(rs["trial_id"])].sort_values("chars_seen")
            if len(rc):
                ax.plot(rc["chars_seen"], rc["val_bpc"], marker="x", ms=4, ls="--", lw=1,
                        label=f"race: {name}, validation")
        if "train_bpc" in c:
            ax.plot(c["chars_seen"], c["train_bpc"], alpha=0.6, lw=1, label="final model, training")
        val = run.baselines[run.baselines["split"] == "val"] if len(run.baselines) else run.baselines
        for (_, r), style in zip(val.iterrows(), ("--", "-.", ":", "--")):
            if math.isfinite(r["bpc"]) and r["bpc"] < 1.5 * float(c["val_bpc"].max()):
                ax.axhline(r["bpc"], color="grey", ls=style, lw=1)
                ax.annotate(f" {BASELINE_NAMES.get(r['method'], r['method'])} {r['bpc']:.2f}",
                            (c["chars_seen"].iloc[0], r["bpc"]), va="bottom", fontsize=8, color="dimgrey")
        _chars_axis(ax)
        ax.set_ylabel("bits/char")
        ax.legend(fontsize=8, loc="upper right")
        ax.set_title("Final model against the compressors on the same validation text")
    return _png(fig)


def final(a: Analysis) -> bytes | None:
    return final_curve(a.run, final_model(a.run))


FIGURES = {
    "importance.png": importance_bars, "marginals.png": marginals, "interaction.png": interaction,
    "curves.png": validation_curves, "best_trial.png": best_trial, "cost.png": cost,
    "sample_importance.png": sample_importance, "final.png": final, "effects.png": effects,
}


def draw_all(a: Analysis) -> dict[str, bytes]:
    """Every figure that the analysis has data for, by file name."""
    out = {}
    for name, fn in FIGURES.items():
        png = fn(a)
        if png is not None:
            out[name] = png
    return out
