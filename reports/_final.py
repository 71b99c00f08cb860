"""The final model: the study's second deliverable, set beside what a compressor does on the same text.

Compute first (`final_model`, `baseline_table`), draw second (`reports._plots.final`), then the report's blocks
(`final_blocks`). Runs without a final model or without baselines.parquet (older runs) still render.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from reports._load import RunData
from reports._render import Block, Code, Figure, Heading, Para, Table
from reports._selection import repeats_of, selection
from runcontract import UNSTABLE as UNSTABLE_STATUSES
from runcontract import BASELINE, CHOSEN, LOCAL, SEARCH, sample_command

BASELINE_NAMES = {"unigram": "unigram (character frequencies)", "xz": "xz -9e", "ppmd": "PPMd order 8"}


@dataclass(frozen=True)
class FinalModel:
    """The final model's row, samples and the command that samples more from it."""

    trial_id: str
    source_trial: str  # the search trial whose configuration it trains
    status: str
    test_bpc: float
    best_val_bpc: float
    chars_seen: int
    wall_s: float
    stopped_early: bool
    params: dict
    samples: pd.DataFrame  # temperature, text, known_word_frac
    command: str
    error: str = ""
    candidate: str = CHOSEN  # whose configuration: the chosen trial's, or the baseline that beat it in the race


def unstable_configurations(run: RunData) -> pd.DataFrame:
    """Candidates the selection skipped (`reports._selection`: the study's decision, or its rule for older runs)
    and how many of their seed repeats diverged or failed: (trial_id, bad, repeats)."""
    rows = []
    for tid, why in selection(run).candidates:
        st = repeats_of(run, tid)["status"]
        bad = int(st.isin(UNSTABLE_STATUSES).sum())
        if why and bad:  # not a candidate that trained reliably and lost on its repeats' mean
            rows.append({"trial_id": tid, "bad": bad, "repeats": len(st)})
    return pd.DataFrame(rows, columns=["trial_id", "bad", "repeats"])


def final_model(run: RunData) -> FinalModel | None:
    """The run's final model, or None when it has none (skipped, older run, or no reliable configuration)."""
    if run.final.empty:
        return None
    row = run.final.iloc[-1]
    s = run.samples[(run.samples["trial_id"] == row["trial_id"])]
    if "kind" in s.columns:
        s = s[s["kind"] == "final"]
    cols = [c for c in ("temperature", "text", "known_word_frac") if c in s.columns]
    params = {p.name: row.get(p.column) for p in run.params}
    source = row.get("repeat_of")
    return FinalModel(
        trial_id=str(row["trial_id"]), source_trial="" if pd.isna(source) else str(source), status=str(row["status"]),
        test_bpc=_float(row.get("test_bpc")), best_val_bpc=_float(row.get("best_val_bpc")),
        chars_seen=int(row.get("chars_seen") or 0), wall_s=_float(row.get("wall_s")),
        stopped_early=bool(row.get("stopped_early", False) == True), params=params,  # noqa: E712 (numpy bool)
        samples=s.sort_values("temperature")[cols].reset_index(drop=True),
        command=sample_command(run.run_dir),
        error="" if pd.isna(row.get("error")) else str(row.get("error")),
        candidate=str(row.get("candidate")) if isinstance(row.get("candidate"), str) else CHOSEN,
    )


def baseline_table(run: RunData, fm: FinalModel | None) -> pd.DataFrame:
    """Bits/char on the validation and test text: the final model, then each baseline, best first. A model's
    validation figure is its best val_bpc; a baseline's is its one measurement."""
    rows = []
    if fm is not None and math.isfinite(fm.test_bpc):
        rows.append({"model": "final model (this study)", "validation": fm.best_val_bpc, "test": fm.test_bpc})
    b = run.baselines
    for method in b["method"].unique() if len(b) else []:
        by = b[b["method"] == method].set_index("split")["bpc"]
        rows.append({"model": BASELINE_NAMES.get(method, method), "validation": by.get("val", math.nan),
                     "test": by.get("test", math.nan)})
    # The trial whose configuration the final model trains: the local design's choice where there was one, else
    # the search trial the study handed over (one rule, in _selection).
    local_choice = (run.study.get("local") or {}).get("chosen") or {}
    if not local_choice.get("handed_over", True):  # around a fixed center the search's choice is handed over
        local_choice = {}
    chosen = local_choice.get("trial_id") or selection(run).chosen
    t = run.trials
    score = t.loc[(t["trial_id"].astype(str) == chosen) & t["role"].isin([SEARCH, LOCAL]), "best_val_bpc"]
    if chosen is not None and len(score.dropna()):
        rows.append({"model": "chosen trial (its budget)", "validation": float(score.dropna().iloc[0]),
                     "test": math.nan})
    df = pd.DataFrame(rows, columns=["model", "validation", "test"])
    return df.sort_values("validation", na_position="last").reset_index(drop=True) if len(df) else df


def _on_repeats(run: RunData) -> list[str]:
    """The selection on expected score, in one sentence, where the study compared its candidates' repeats."""
    from runcontract.selection import repeat_mean

    sel = selection(run)
    means = {tid: repeat_mean(run.trials, tid) for tid, _ in sel.candidates}
    scored = {tid: m for tid, m in means.items() if math.isfinite(m)}
    if sel.chosen is None or sel.chosen not in scored or len(scored) < 2:
        return []
    others = ", ".join(f"{tid} {m:.3f}" for tid, m in scored.items() if tid != sel.chosen)
    return [f"The study's configuration is search trial {sel.chosen}'s: of the {len(sel.candidates)} best search "
            f"trials, each retrained with other seeds, its repeats scored best on average ({scored[sel.chosen]:.3f} "
            f"bits/char; {others}). A trial's own score was picked for being low; its repeats' were not."]


def final_blocks(run: RunData, fm: FinalModel | None) -> list[Block]:
    """The report's opening section on the final model (or why there is none)."""
    blocks: list[Block] = [Heading(2, "The model: text that most resembles the corpus")]
    unstable = unstable_configurations(run)
    notes = [f"Search trial {r.trial_id}'s configuration diverged or failed in {r.bad} of {r.repeats} seed repeats: "
             "it does not train reliably, so it was not handed over as the final model."
             for r in unstable.itertuples()]
    notes += _on_repeats(run)
    if fm is None or fm.status != "completed" or not math.isfinite(fm.test_bpc):
        why = ("This run has no final model (the final stage was skipped with --final-chars 0, the run predates it, "
               "or no configuration trained reliably)." if fm is None else
               f"The final model ({fm.trial_id}) did not finish: {fm.status}{': ' + fm.error if fm.error else ''}.")
        blocks += [Para(why), *[Para(n) for n in notes]]
        table = baseline_table(run, None)
        return blocks + ([Table(_fmt(table))] if len(table) else [])
    ppmd = run.baselines[(run.baselines["method"] == "ppmd") & (run.baselines["split"] == "test")]["bpc"]
    versus = ""
    if len(ppmd) and math.isfinite(ppmd.iloc[0]):
        gap = fm.test_bpc - float(ppmd.iloc[0])
        versus = (f" That is {abs(gap):.3f} bits/char {'better' if gap < 0 else 'worse'} than PPMd, a compressor "
                  f"that has read all the text before it ({ppmd.iloc[0]:.3f}).")
    params = ", ".join(f"{k}={'all' if k == 'train_chars' and not _float(v) else _value(v)}"
                       for k, v in fm.params.items())
    blocks += [
        Para(f"The final model scores {fm.test_bpc:.3f} bits/char on the test text, which no part of the search saw "
             f"and which it was scored on once.{versus} "
             + (f"It is search trial {fm.source_trial}'s configuration" if fm.candidate == CHOSEN else
                f"It is {candidate_name(fm.candidate)}'s configuration, which beat search trial "
                f"{fm.source_trial}'s in the final race")
             + f" ({params}), trained for {fm.chars_seen:,} characters in {fm.wall_s / 60:.1f} minutes"
             + (", stopped early when validation stopped improving" if fm.stopped_early else "") + ".", lead=True),
        *race_blocks(run),
        *_trained_on(run, fm),
        Table(_fmt(baseline_table(run, fm))),
        *[Para(n) for n in notes],
    ]
    for r in fm.samples.itertuples():
        known = getattr(r, "known_word_frac", math.nan)
        blocks.append(Para(f"Sample at temperature {r.temperature:g}"
                           + (f" ({known:.0%} of its words occur in the corpus)" if math.isfinite(known) else "")
                           + ":"))
        blocks.append(Code(str(r.text)))
    blocks += [Para("More text from it:"), Code(fm.command),
               Figure("final.png", "The final model's validation and training bits/char; grey: the baselines on "
                                   "the same validation text")]
    return blocks


def race_blocks(run: RunData) -> list[Block]:
    """The final race, where the study ran one (study.json `final.race`): who raced, their validation scores at each
    of its rungs, and who went on; a study whose configuration lost to the hand-picked baseline says so."""
    race = (run.study.get("final") or {}).get("race") or {}
    rows = race.get("candidates") or []
    if len(rows) < 2:
        return []
    minutes = (f" of a run of {race['limit_s'] / 60:.1f} minutes" if isinstance(race.get("limit_s"), (int, float))
               and race["limit_s"] > 0 else "")
    winner = race.get("winner")
    rungs = race.get("evals") if isinstance(race.get("evals"), list) else [race.get("evals")]
    last, evals = rungs[-1], (run.study.get("final") or {}).get("evals", "its")
    lost_to = ("this study's configuration lost to the hand-picked baseline on the final model's terms" if any(
        r["candidate"] == BASELINE for r in rows) and winner != BASELINE and _beat(rows, BASELINE) else "")
    verdict = ("The study's configuration won, and went on from where its race ended." if winner == CHOSEN else
               f"{candidate_name(winner)[0].upper()}{candidate_name(winner)[1:]} won: on the final model's terms "
               "this study's configuration lost to it, so the model handed over is "
               f"{candidate_name(winner)}'s, going on from where its race ended"
               + (f"; {lost_to} too" if lost_to else "") + "." if winner else "None trained normally.")
    return [Para(f"Before the final model trained, {len(rows)} configurations raced on its terms (the whole "
                 f"training text, its step size and schedule), one after the other, {_rounds(race, rows, minutes)}. "
                 f"{verdict} What wins a search trial's few hundred steps need not win a run a hundred times "
                 f"longer, and what leads at the race's last rung ({_ordinal(last)} of {evals} evaluations) need "
                 "not lead at the run's end; the other configurations' races are what the check cost.")]


def _rounds(race: dict, rows: list[dict], minutes: str) -> str:
    """The race's rounds in words: each rung, who raced to it and their validation scores there."""
    rungs = race.get("evals")
    rungs = rungs if isinstance(rungs, list) else [rungs]
    scored = {r["candidate"]: {int(e): v for e, v in (r.get("scores") or [[rungs[0], r.get("best_val_bpc")]])}
              for r in rows}
    status = {r["candidate"]: r.get("status") for r in rows}
    parts, before = [], len(rows)
    for i, rung in enumerate(rungs):
        at = [(name, got[rung]) for name, got in scored.items() if rung in got]
        if not at:
            break
        who = (("both" if len(at) == 2 else "all") if len(at) == before
               else f"the better {_NUMBERS.get(len(at), len(at))}")
        before = len(at)
        scores = ", ".join(f"{candidate_name(name, spec=i == 0)} "
                           + (f"{v:.3f}" if isinstance(v, (int, float)) else f"({status.get(name)})") for name, v in at)
        plural = "s" if rung != 1 else ""
        parts.append(f"each for its first {rung} evaluation{plural}{minutes}: validation bits/char {scores}" if i == 0
                     else f"then {who} on to their {_ordinal(rung)} evaluation: {scores}")
    return "; ".join(parts)


_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def candidate_name(name: str, spec: bool = False) -> str:
    """A race candidate in the report's words (`spec`: with the spec's table that names it)."""
    if name == CHOSEN:
        return "the study's configuration"
    if name == BASELINE:
        return "the hand-picked baseline" + (" (the spec's final.baseline)" if spec else "")
    return f"the hand-picked alternative {name}" + (f" (final.alternatives.{name})" if spec else "")


def _beat(rows: list[dict], name: str) -> bool:
    """Whether candidate `name` scored better than the chosen configuration in the race, at the last rung both raced
    to (a candidate that raced on has a later score than one dropped before it)."""
    scored = {r["candidate"]: {int(e): v for e, v in (r.get("scores") or [[0, r.get("best_val_bpc")]])}
              for r in rows}
    mine, theirs = scored.get(name) or {}, scored.get(CHOSEN) or {}
    both = sorted(set(mine) & set(theirs))
    a = mine[both[-1]] if both else next(iter(mine.values()), None)
    b = theirs[both[-1]] if both else None
    return isinstance(a, (int, float)) and (not isinstance(b, (int, float)) or a < b)


def _trained_on(run: RunData, fm: FinalModel) -> list[Block]:
    """What the final model trained on and why (study.json `final`, written by the study), and whether it ended
    better on validation than the search trial it came from."""
    final = run.study.get("final") or {}
    out: list[Block] = []
    if isinstance(final.get("train_chars"), int):
        start = final.get("started_from")
        out.append(Para(f"It trained on the whole training text ({final['train_chars']:,} characters)"
                        + (f", with search trial {start}'s weights as the model to beat (scored first, kept "
                           "unless beaten)" if start else "")
                        + (f": {final['why']}" if isinstance(final.get("why"), str) else "") + "."))
    budget = _budget_words(final)
    if budget:
        out.append(Para(budget))
    trials = run.trials.set_index("trial_id")
    if fm.source_trial in trials.index:
        trial_val = _float(trials.loc[fm.source_trial, "best_val_bpc"])
        if math.isfinite(trial_val) and math.isfinite(fm.best_val_bpc) and fm.best_val_bpc > trial_val:
            out.append(Para(f"On validation the final model ({fm.best_val_bpc:.3f}, on its own validation "
                            f"characters) is not better than trial {fm.source_trial} ({trial_val:.3f}, on the "
                            "search's shorter validation text): it did not improve on the weights it started "
                            "from, or it could not start from them."))
    return out


def _budget_words(final: dict) -> str:
    """How the final model's budget was decided under a time limit (study.json `final`, written by the final stage):
    once at its start, replayed from another study's plan, or remembered from an earlier study of the same run on
    this machine; whether a markedly slower machine cut it, or the time ran out before it. '' for a budget given in
    characters, or a run that predates the record."""
    chars, source, rate = final.get("budget_chars"), final.get("budget_from"), final.get("decided_chars_per_s")
    if not isinstance(chars, int) or source not in ("fitted", "replayed", "remembered"):
        return ""
    at = f" at {rate:,.0f} chars/s" if isinstance(rate, (int, float)) else ""
    if source == "replayed":
        words = [f"Its budget, {chars:,} characters, is the one decided by the study whose plan this one replays."]
    elif source == "remembered":
        words = [f"Its budget, {chars:,} characters, is the one an earlier study of the same configuration decided "
                 f"on this machine{at} for about the same time (remembered, so that the study repeats; "
                 "study.machine)."]
    else:
        words = [f"Its budget, {chars:,} characters, was decided once, at its start, to fit the time the study had "
                 f"left{at} (the speed its first seconds measured)."]
    moves = [(m, pace, verb) for m, pace, verb in ((final.get("extended"), "faster", "extended"),
                                                   (final.get("refit"), "slower", "cut"))
             if isinstance(m, dict) and isinstance(m.get("why"), str)]
    for m, pace, verb in sorted(moves, key=lambda move: move[0].get("at_chars") or 0):
        words.append(f"It then trained markedly {pace} than that, so its budget was {verb} once: {m['why']}.")
    if isinstance(final.get("stopped_at"), int):
        words.append(f"The time ran out at {final['stopped_at']:,} characters, before the end of its budget.")
    return " ".join(words)


def _fmt(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in ("validation", "test"):
        out[col] = [f"{v:.3f}" if math.isfinite(v) else "" for v in out[col]]
    return out.rename(columns={"validation": "validation, bits/char", "test": "test, bits/char"})


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _value(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return f"{int(v):,}"
    return f"{v:.3g}" if isinstance(v, float) else str(v)
