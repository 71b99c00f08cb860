"""The closing summary a study prints: the final model first (its test score beside the baselines, its text, how
to sample more), then the search."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from charrnn.sample import printable
from runcontract import BASELINES_FILE, sample_command
from runcontract.selection import points_reached, ranked, unstable_repeats
from study.plan import Plan
from study.rundir import RunDir


def summary(plan: Plan, run_dir: Path, trials: pd.DataFrame, samples: pd.DataFrame) -> str:
    """The closing summary: the final model first (its test score beside the baselines, its text, how to sample
    more), then the search."""
    lines = _final_lines(plan, run_dir, trials, samples)
    search = trials[trials["role"] == "search"]
    counts = search["status"].value_counts().to_dict()
    lines.append(f"study {plan.spec.name}: {len(search)} search trials "
                 + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    candidates = ranked(trials, points_reached(trials, plan.spec.eval_at()))
    best = None if candidates.empty else candidates.iloc[0]
    if best is None:
        lines.append("no trial reached an evaluation.")
    else:
        params = ", ".join(f"{n}={_fmt(best[f'param.{n}'])}" for n in plan.spec.search)
        lines.append(f"best search trial {best['trial_id']}: best val_bpc {best['best_val_bpc']:.4f} after "
                     f"{int(best['chars_seen']):,} chars ({best['wall_s']:.0f} s)")
        lines.append(f"  {params}")
        repeats = trials[(trials["role"] == "repeat") & (trials.get("repeat_of") == best["trial_id"])]
        if len(repeats):
            lines.append(f"  retrained with {len(repeats)} other seeds to {int(repeats['chars_seen'].max()):,} chars: "
                         + ", ".join(f"{v:.4f}" if np.isfinite(v) else s
                                     for v, s in zip(repeats["best_val_bpc"], repeats["status"])))
            bad, n = unstable_repeats(trials, str(best["trial_id"]))
            if bad:
                lines.append(f"  unstable: it diverged or failed in {bad} of {n} seeds, so it is not the final model")
    lines.append(f"run directory: {run_dir}")
    return "\n".join(lines)


def _final_lines(plan: Plan, run_dir: Path, trials: pd.DataFrame, samples: pd.DataFrame) -> list[str]:
    final = trials[trials["role"] == "final"]
    if final.empty:
        why = ("--final-chars 0" if plan.final_chars == 0 else "no configuration trained reliably"
               if len(trials[trials["role"] == "repeat"]) else "no search trial finished")
        return [f"no final model ({why})."]
    row = final.iloc[-1]
    if row["status"] != "completed" or not np.isfinite(row.get("test_bpc", np.nan)):
        return [f"final model {row['trial_id']}: {row['status']}" + (f" ({row['error']})" if row.get("error") else "")]
    refs = _baseline_refs(run_dir)
    started_from = (RunDir(run_dir).read_study() or {}).get("final", {}).get("started_from")
    candidate = row.get("candidate") if isinstance(row.get("candidate"), str) else "chosen"
    lines = [f"final model: test {row['test_bpc']:.3f} bits/char" + (f" ({refs})" if refs else "")
             + f"; val {row['best_val_bpc']:.3f} after {int(row['chars_seen']):,} chars in "
             f"{row['wall_s'] / 60:.1f} min",
             "  " + ", ".join(f"{n}={_param_text(n, row[f'param.{n}'])}" for n in plan.spec.search)
             + (f" (search trial {row['repeat_of']}'s configuration" if candidate == "chosen" else
                f" (the hand-picked {'baseline' if candidate == 'baseline' else 'alternative ' + candidate}, which "
                f"beat search trial {row['repeat_of']}'s configuration in the final race")
             + ", on the whole training text"
             + (", its weights the model to beat)" if started_from else ")")]
    mine = samples[(samples["trial_id"] == row["trial_id"]) & (samples["kind"] == "final")] if len(samples) else samples
    for _, s in mine.sort_values("temperature").iterrows():
        lines.append(f"  sample at temperature {s['temperature']:g}:")
        lines.append("    " + printable(str(s["text"]).strip()).replace("\n", "\n    "))
    lines.append(f"  more text: {sample_command(run_dir)}")
    return lines


def _baseline_refs(run_dir: Path) -> str:
    if not RunDir(run_dir).has_baselines():
        return ""
    b = pd.read_parquet(RunDir(run_dir) / BASELINES_FILE)
    b = b[b["split"] == "test"].set_index("method")["bpc"]
    names = {"ppmd": "PPMd", "xz": "xz", "unigram": "unigram"}
    return ", ".join(f"{names.get(m, m)} {v:.3f}" for m, v in b.items())


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _param_text(name: str, value) -> str:
    """A hyperparameter's value in the closing lines ("all" for a train_chars of 0, the whole training text)."""
    return "all" if name == "train_chars" and not value else _fmt(value)
