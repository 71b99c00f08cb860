"""Why a study stops before its trials are done: a signal, or a write its run directory refused.

One `StudyStop` per study: the driver makes it and hands it to whatever sees a reason to stop (the SIGTERM handler,
the results writer, the Optuna searcher); the driver raises the reason once Tune returns control. Nothing here is
a process global, so two studies in one process never see each other's signal or failed write, and a study never
sees one left by an earlier study. Imports nothing of Ray.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from study.rundir import RunDirWriteError


class Interrupted(Exception):
    """The study was stopped by SIGINT/SIGTERM; finished trials are saved and it can be resumed."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


# Once the run directory has refused a write, the study ends within this many seconds, whether or not Ray's
# teardown (stopping trial actors, saving Tune's state, ray.shutdown) returns by then.
STOP_GRACE_S = 60.0


def write_failure_message(exc: RunDirWriteError, run_dir: str | Path) -> str:
    """The one line a study stopped by a refused write ends with."""
    return (f"error: {exc}; the study stopped, with the tables as last written intact. Free the space, then "
            f"continue with: python -m study.run --resume {run_dir}")


class StudyStop:
    """The reasons one study has to stop: SIGTERM received, and the writes the run directory (or Optuna's storage
    in it) refused.

    A write failure is noted where it cannot stop the study itself (inside Tune's hooks, which log an exception and
    go on, or turn it into a trial's crash); the study stops at the end of Tune's step (study.results) with the
    first one noted.

    With `run_dir` given, the first failure also arms a deadline: if the study has not ended `grace_s` seconds
    later (`disarm` not called: Ray's teardown is stuck), the process prints the same one line and exits with
    status 1 without waiting. Nothing is lost by that: every table was written atomically before the failure,
    and Tune saves its state at every step, so `--resume` continues from there as after a kill.
    """

    def __init__(self, run_dir: str | Path | None = None, grace_s: float = STOP_GRACE_S,
                 exit: Callable[[int], None] | None = None) -> None:
        self._terminated = threading.Event()  # set from a signal handler
        self._write_failures: list[RunDirWriteError] = []
        self._run_dir, self._grace_s, self._exit = run_dir, grace_s, exit
        self._deadline: threading.Timer | None = None
        self._settled = threading.Lock()  # held by whichever ends the study: disarm() or the deadline

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
        if len(self._write_failures) == 1 and self._run_dir is not None:
            self._deadline = threading.Timer(self._grace_s, self._overdue, args=(exc,))
            self._deadline.daemon = True
            self._deadline.start()

    def _overdue(self, exc: RunDirWriteError) -> None:
        if not self._settled.acquire(blocking=False):
            return  # the study ended in time
        print(f"{write_failure_message(exc, self._run_dir)} (Ray had not stopped {self._grace_s:.0f} s after the "
              "refused write; ended without waiting for it)", file=sys.stderr, flush=True)
        if self._exit is None:
            from study._compat import exit_without_teardown as end  # flushes, then ends without teardown
        else:
            end = self._exit
        end(1)

    def disarm(self) -> bool:
        """The study has ended (its caller says why): the deadline no longer applies. False if it already fired."""
        if not self._settled.acquire(blocking=False):
            return False
        if self._deadline is not None:
            self._deadline.cancel()
        return True

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
    is noted in `stop` so that the driver says which signal it was.

    SIGTERM is handed to whatever handles SIGINT now: Tune's handler while it runs. Where nothing does (SIGINT
    ignored, as in a background job of a non-interactive shell, or left at its default) it raises
    KeyboardInterrupt, as Python's own handler would. Such an interruption leaves as `Interrupted("SIGTERM")`.
    SIGINT's handler is put back too: Tune installs its own and leaves it there, where it would swallow the next
    Ctrl-C after the experiment ended.
    """
    def on_term(signum, frame):
        stop.terminate()
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    main = threading.current_thread() is threading.main_thread()
    previous_int = signal.getsignal(signal.SIGINT) if main else None
    previous = signal.signal(signal.SIGTERM, on_term) if main else None
    try:
        yield
    except KeyboardInterrupt:
        if stop.terminated:
            raise Interrupted("SIGTERM") from None
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
