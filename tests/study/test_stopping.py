"""A study's stop reasons are its own: a SIGTERM or a refused write in one study is never seen by another."""
from __future__ import annotations

import io
import os
import pickle
import signal
import time

import optuna
import pytest
from optuna.distributions import FloatDistribution

from study.progress import Progress
from study.results import ResultsWriter
from study.rundir import RunDirWriteError
from study.search import StudySearch
from study.stopping import Interrupted, StudyStop, sigterm_as_sigint


def _writer(run_dir, stop: StudyStop) -> ResultsWriter:
    return ResultsWriter(run_dir, ["lr"], progress=Progress(io.StringIO(), live=False), stop=stop)


def test_two_studies_in_one_process_keep_their_own_write_failures(tmp_path):
    (tmp_path / "full").write_text("a file where the run directory should be: every write into it fails")
    (tmp_path / "fine").mkdir()
    stop_a, stop_b = StudyStop(), StudyStop()
    a, b = _writer(tmp_path / "full", stop_a), _writer(tmp_path / "fine", stop_b)
    for writer in (a, b):
        writer.table.start("t1", {"lr": 0.1})
        writer.write()
    assert isinstance(stop_a.write_failure, RunDirWriteError) and stop_b.write_failure is None
    b.on_step_end(0, [])  # the study whose disk is fine goes on
    with pytest.raises(RunDirWriteError, match="cannot write"):
        a.on_step_end(0, [])
    assert StudyStop().write_failure is None  # a later study starts clean


def test_a_searchers_storage_failure_stops_its_own_study_only(tmp_path):
    stop_a, stop_b = StudyStop(), StudyStop()
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    searcher = StudySearch({"lr": FloatDistribution(1e-3, 1e-1, log=True)}, metric="best_val_bpc", mode="min",
                           sampler=optuna.samplers.RandomSampler(seed=0), study_name="s", storage=storage,
                           stop=stop_a)
    with searcher._storage_errors():
        raise optuna.exceptions.StorageInternalError("database or disk is full")
    assert "database or disk is full" in str(stop_a.write_failure) and stop_b.write_failure is None


@pytest.fixture
def sigint_handler():
    """Set SIGINT's handler for one test, whatever the process started with (a background job of a shell starts
    with SIGINT ignored) or an earlier test left (Tune leaves its own installed); put the old one back after."""
    before = signal.getsignal(signal.SIGINT)
    yield lambda handler: signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGINT, before)


def _sigterm_and_wait() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(200):
        time.sleep(0.01)


@pytest.mark.parametrize("sigint", [signal.default_int_handler, signal.SIG_IGN, signal.SIG_DFL],
                         ids=["python-default", "ignored", "os-default"])
def test_sigterm_is_noted_in_its_own_study_only(sigint_handler, sigint):
    """Outside Tune's handler SIGTERM interrupts as Ctrl-C does, even where SIGINT is ignored (a study started
    with `nohup ... &`), and leaves as Interrupted("SIGTERM")."""
    sigint_handler(sigint)
    stop_a, stop_b = StudyStop(), StudyStop()
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as err:
        with sigterm_as_sigint(stop_a):
            _sigterm_and_wait()
    assert err.value.signal_name == "SIGTERM"
    assert stop_a.terminated and not stop_b.terminated and not StudyStop().terminated
    assert signal.getsignal(signal.SIGTERM) is before and signal.getsignal(signal.SIGINT) == sigint


def test_sigterm_is_handed_to_tunes_sigint_handler_which_is_not_left_behind(sigint_handler):
    """While Tune runs, SIGTERM goes to its SIGINT handler (which saves the experiment and returns); Tune leaves
    that handler installed, and the study puts back the one it found."""
    sigint_handler(signal.SIG_IGN)
    seen, stop = [], StudyStop()
    with sigterm_as_sigint(stop):
        signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))  # as tune.run does
        _sigterm_and_wait()
    assert seen == [signal.SIGINT] and stop.terminated
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_ctrl_c_is_not_taken_for_sigterm(sigint_handler):
    sigint_handler(signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_sigint(StudyStop()):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(200):
                time.sleep(0.01)


def test_a_pickled_stop_comes_back_empty():
    """Tune pickles the searcher, and with it its stop, into tuner.pkl: a resumed driver starts with none of the
    reasons the killed one saw, and hands the restored searcher its own (study.driver)."""
    stop = StudyStop()
    stop.terminate()
    stop.note_write_failure(RunDirWriteError(28, "cannot write x: No space left on device"))
    again = pickle.loads(pickle.dumps(stop))
    assert not again.terminated and again.write_failure is None


def test_a_refused_write_ends_the_study_when_ray_does_not_stop_in_time(tmp_path, capsys):
    """After the run directory refuses a write, the study ends within its grace whatever Ray's teardown does: the
    one line, then exit status 1 (here `exit` records the status instead of ending pytest's process)."""
    ended = []
    stop = StudyStop(tmp_path / "run", grace_s=0.05, exit=ended.append)
    stop.note_write_failure(RunDirWriteError(28, "cannot write x: No space left on device"))
    stop.note_write_failure(RunDirWriteError(28, "cannot write y: No space left on device"))  # one deadline
    deadline = time.monotonic() + 10
    while not ended and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert ended == [1]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write x: No space left on device; the study stopped")
    assert f"--resume {tmp_path / 'run'}" in err[0]
    assert not stop.disarm()  # too late: the deadline ended the study


def test_a_study_that_stops_in_time_is_not_ended_by_the_deadline(tmp_path, capsys):
    ended = []
    stop = StudyStop(tmp_path / "run", grace_s=0.2, exit=ended.append)
    stop.note_write_failure(RunDirWriteError(28, "cannot write x: No space left on device"))
    assert stop.disarm()
    time.sleep(0.4)
    assert ended == [] and capsys.readouterr().err == ""
    assert StudyStop(grace_s=0.01).disarm()  # no run directory, no deadline: nothing to disarm but the lock
