"""What a person watching a study sees: one live status line on a terminal, plain lines in a log.

The status is computed first (`Tally`, `remaining_s`, `status_text`: pure, tested without Ray) and drawn
second, by tqdm on a terminal or as a prefix of plain lines when the stream is not one (CI logs):

    search  [#####     ] 21/50 done (1 failed), 2 running | best val_bpc 2.1869 | 6:12 elapsed, about 8:34 left

The estimate of the time left covers the whole study: for the stage running now, the time per finished trial
so far (finished since this driver started the stage, so a resumed study does not count the trials an earlier
driver finished) times the trials not yet finished, less what the running ones have trained since the last
finished, or, until a trial has finished (and for the final model,
one trial with a time limit), what the stage was planned to take; plus what the later stages are planned to
take (`Progress.expect`, from the study's time plan). Without a plan it says "estimating…" until a trial has
finished.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Callable, TextIO

from tqdm import tqdm

ESTIMATING = "estimating…"
HEARTBEAT_S = 60.0   # a plain log gets a status line at least this often while trials run
REFRESH_S = 1.0      # the live line's elapsed time is redrawn at most this often


@dataclass(frozen=True)
class Tally:
    """Where a stage of the study stands. `done` counts every finished trial, `failed` (diverged or
    crashed) included; `best` is the best val_bpc so far (inf when none): of the search's trials in the search
    and the repeats, of the stage's own in the local design and the final model (study.rundir.TrialTable.tally)."""

    stage: str
    total: int
    done: int
    running: int
    failed: int = 0
    best: float = math.inf


def remaining_s(elapsed_s: float, finished_here: int, left: int, since_finish_s: float = 0.0) -> float | None:
    """Seconds until `left` more trials finish, at the pace of the `finished_here` that had finished
    `since_finish_s` before `elapsed_s`, less what the running ones have trained since (at most one trial's pace:
    measured up to now, the pace of a long trial run alone would grow with its own time, and the estimate twice as
    fast); None while nothing has finished (no honest pace yet)."""
    if left <= 0:
        return 0.0
    since = min(max(since_finish_s, 0.0), elapsed_s)
    if finished_here <= 0 or elapsed_s - since <= 0:
        return None
    pace = (elapsed_s - since) / finished_here
    return pace * left - min(since, pace)


def format_duration(seconds: float) -> str:
    """4:05, 1:02:03."""
    s = max(0, int(round(seconds)))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def status_text(tally: Tally, elapsed_s: float, eta_s: float | None) -> str:
    """The status without the bar: counts, best val_bpc, elapsed time and the estimate of the time left."""
    counts = f"{tally.done}/{tally.total} done" + (f" ({tally.failed} failed)" if tally.failed else "")
    counts += f", {tally.running} running"
    best = f"best val_bpc {tally.best:.4f}" if math.isfinite(tally.best) else "no val_bpc yet"
    left = ESTIMATING if eta_s is None else f"about {format_duration(eta_s)} left"
    return f"{counts} | {best} | {format_duration(elapsed_s)} elapsed, {left}"


class Progress:
    """Draws the status of the current stage; a stage starts when a tally names a new one.

    Args:
        stream: where to draw (default stderr).
        live: a live tqdm line (default: when `stream` is a terminal) or plain lines.
        clock: seconds, monotonic (tests pass a fake one).
        write: instead of a stream, a function that takes each plain line (e.g. `list.append`).
    """

    def __init__(self, stream: TextIO | None = None, live: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, write: Callable[[str], None] | None = None):
        self._stream = stream
        self._write = write
        self.live = False if write else _is_terminal(self.stream) if live is None else live
        self.clock = clock
        self.tally: Tally | None = None
        self._started = 0.0
        self._done_at_start = 0
        self._finished_at = 0.0  # when a trial of this stage last finished (or it started)
        self._last_line = -math.inf
        self._last_draw = -math.inf
        self._drawn: Tally | None = None
        self._bar: tqdm | None = None
        self._stage_s: float | None = None  # what the current stage was planned to take
        self._after_s = 0.0  # what the stages after it are planned to take

    def expect(self, stage_s: float | None, after_s: float = 0.0) -> None:
        """The plan for the stage that starts next: its own seconds (None: unknown) and the later stages'."""
        self._stage_s, self._after_s = stage_s, after_s

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks (and so this) with the experiment; a stream or a live bar does not pickle.
        return {**self.__dict__, "_stream": None, "_bar": None}

    # ---- what the results writer calls ----------------------------------------------------------------
    def update(self, tally: Tally, note: str | None = None) -> None:
        """New counts. `note` (e.g. a new best) is a line in a plain log; the live line shows it already."""
        self._enter(tally)
        if self.live:
            self._draw()
        elif note is not None:
            self._plain(note)
        elif tally.running and self.clock() - self._last_line >= HEARTBEAT_S:
            self._plain("")

    def log(self, text: str, tally: Tally | None = None) -> None:
        """A line that stays: above the live line, or a plain line prefixed with the status."""
        if tally is not None:
            self._enter(tally)
        if self.live:
            tqdm.write(text, file=self.stream)
            if self.tally is not None:
                self._draw()
        else:
            self._plain(text, with_status=tally is not None)

    def tick(self) -> None:
        """Time passed: redraw the elapsed time (at most every REFRESH_S) or write a heartbeat line."""
        if self.tally is not None:
            self.update(self.tally)

    def close(self) -> None:
        """End the stage: its last status stays on screen; the next tally starts a new one (idempotent)."""
        if self._bar is not None:
            self._draw(force=True)
            self._bar.close()
            self._bar = None
        self.tally = None

    # ---- drawing ----------------------------------------------------------------------------------------
    def status(self) -> str:
        tally = self.tally
        elapsed = self.clock() - self._started
        eta = remaining_s(elapsed, tally.done - self._done_at_start, tally.total - tally.done,
                          self.clock() - self._finished_at)
        if self._stage_s is not None and (eta is None or tally.total == 1):
            eta = max(self._stage_s - elapsed, 0.0)
        if eta is not None and self._stage_s is not None:
            eta += self._after_s
        return status_text(tally, elapsed, eta)

    def _enter(self, tally: Tally) -> None:
        if self.tally is None or tally.stage != self.tally.stage:
            self.close()
            self._started, self._done_at_start = self.clock(), tally.done
            self._finished_at = self._started
        elif tally.done > self.tally.done:
            self._finished_at = self.clock()
        self.tally = tally

    def _plain(self, text: str, with_status: bool = True) -> None:
        line = f"[{self.tally.stage} {self.status()}] {text}".rstrip() if with_status else text
        if self._write is not None:
            self._write(line)
        else:
            print(line, file=self.stream, flush=True)
        self._last_line = self.clock()

    def _draw(self, force: bool = False) -> None:
        now = self.clock()
        if self._bar is None:
            self._bar = tqdm(total=max(self.tally.total, 1), desc=self.tally.stage, file=self.stream, leave=True)
        elif not force and now - self._last_draw < REFRESH_S and self._drawn == self.tally:
            return
        # The width is read at every draw (a resized window), with a fallback where a terminal reports none.
        self._bar.ncols, self._bar.nrows = shutil.get_terminal_size((120, 24))
        self._bar.n = self.tally.done
        self._bar.total = max(self.tally.total, self.tally.done, 1)
        self._bar.bar_format = "{desc} {bar:20} " + self.status().replace("{", "{{").replace("}", "}}")
        self._bar.refresh()
        self._last_draw, self._drawn = now, self.tally


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False
