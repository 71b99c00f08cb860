"""Why a study stops before its trials are done: a signal, or a write its run directory refused.

One `StudyStop` per study: the driver makes it and hands it to whatever sees a reason to stop (the SIGTERM handler,
the results writer, the Optuna searcher); the driver raises the reason once Tune returns control. Nothing here is
a process global, so two studies in one process never see each other's signal or failed write, and a study never
sees one left by an earlier study. Imports nothing of Ray.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

from study.rundir import RunDirWriteError


class Interrupted(Exception):
    """The study was stopped by SIGINT/SIGTERM; finished trials are saved and it can be resumed."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


class StudyStop:
    """The reasons one study has to stop: SIGTERM received, and the writes the run directory (or Optuna's storage
    in it) refused.

    A write failure is noted where it cannot stop the study itself (inside Tune's hooks, which log an exception and
    go on, or turn it into a trial's crash); the study stops at the end of Tune's step (study.results) with the
    first one noted.
    """

    def __init__(self) -> None:
        self._terminated = threading.Event()  # set from a signal handler
        self._write_failures: list[RunDirWriteError] = []

    def __getstate__(self) -> dict:
        # Tune pickles the searcher (and with it this) into tuner.pkl; a stop reason belongs to the process that
        # saw it, so it pickles empty. A resumed driver hands its own to what it restores (study.driver).
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def terminate(self) -> None:
        self._terminated.set()

    @property
    def terminated(self) -> bool:
        return self._terminated.is_set()

    def note_write_failure(self, exc: RunDirWriteError) -> None:
        self._write_failures.append(exc)

    @property
    def write_failure(self) -> RunDirWriteError | None:
        """The first write the run directory refused in this study, if any."""
        return self._write_failures[0] if self._write_failures else None

    def raise_write_failure(self) -> None:
        if self._write_failures:
            raise self._write_failures[0]


@contextmanager
def sigterm_as_sigint(stop: StudyStop):
    """SIGTERM stops the study the way Ctrl-C does (Tune saves its state and in-flight trials stay resumable), and
    is noted in `stop` so that the driver says which signal it was."""
    def on_term(signum, frame):
        stop.terminate()
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, on_term) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
