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
from reports._final import BASELINE_NAMES, FinalModel, final_model  # noqa: E402
from reports._load import RunData  # noqa: E402

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
    t = a.run.trials[a.run.trials["role"] != "repeat"].set_index("trial_id")
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
    if g is None or g.empty:
        return None
    na, nb = a.importance.table["param"].iloc[:2]
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
        ax.set_title("Interaction of the top two hyperparameters (others averaged)", fontsize=10)
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
    "sample_importance.png": sample_importance, "final.png": final,
}


def draw_all(a: Analysis) -> dict[str, bytes]:
    """Every figure that the analysis has data for, by file name."""
    out = {}
    for name, fn in FIGURES.items():
        png = fn(a)
        if png is not None:
            out[name] = png
    return out
