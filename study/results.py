"""Tune's side of the results: a callback that turns trial events into rows of the run directory's tables.

`ResultsWriter` runs in the driver: workers report through Tune, the driver writes the tables, so a cluster needs
no shared file system. It only translates: what a row holds and how an event changes it is
`study.rundir.TrialTable`, and the files are `study.rundir.RunDir`'s.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.fs
from ray.tune import Callback

from study.progress import Progress
from study.rundir import RunDir, RunDirWriteError, TextIndex, TrialTable, _finite
from study.stopping import StudyStop

__all__ = ["ResultsWriter", "TextIndex", "error_summary", "summarize_error"]


def error_summary(trial) -> str:
    """One line naming why a trial failed, from Tune's error file."""
    text = ""
    try:
        if trial.error_file and Path(trial.error_file).exists():
            text = Path(trial.error_file).read_text(errors="replace")
    except OSError:
        pass
    return summarize_error(text)


def summarize_error(text: str) -> str:
    """The innermost "SomeError: message" line of a traceback; a CUDA out-of-memory and a worker process that died
    (killed, or out of host memory) are named as such."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    candidates = [ln for ln in lines if _names_an_exception(ln)]
    if candidates:
        line = candidates[-1]
    elif "worker process has died" in text or "actor died unexpectedly" in text:
        pid = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("pid:")), "?")
        line = f"the trial's worker process (pid {pid}) died: killed, out of memory, or crashed"
    else:
        line = (lines or ["unknown error"])[-1]
    if "CUDA out of memory" in text or "OutOfMemoryError" in text:
        return f"CUDA out of memory: {line}"[:1000]
    return line[:1000]


def _names_an_exception(line: str) -> bool:
    """"pkg.mod.SomeError: ..." or "SomeError: ...", not "ip: 10.0.0.1"."""
    name = line.split(":", 1)[0]
    return ":" in line and name.replace(".", "").isidentifier() and name.rsplit(".", 1)[-1][:1].isupper()


def checkpoint_exists(checkpoint) -> bool:
    """Whether a Tune checkpoint's directory is still there (retention deletes it once the study is over)."""
    return checkpoint.filesystem.get_file_info(checkpoint.path).type == pyarrow.fs.FileType.Directory


def delete_trial_checkpoints(storage: str, trial_ids: set[str]) -> int:
    """Retention, once a study is over: delete the checkpoints of its trials (`STORAGE/tune*/trial_ID/checkpoint_*`
    for each id in `trial_ids`, on whichever file system: a path, s3://...); returns how many. Only this study's
    trials: a run written before studies got a storage directory of their own may share `STORAGE/tune`.

    While the study runs they stay: Tune resumes trials in flight from them, and the final model starts from its
    search trial's weights. After it, nothing reads them: the report reads the tables, `charrnn.sample --run` reads
    RUN/final_model.pt. Tune's own small files (experiment state, each trial's results and error file) stay.
    """
    fs, root = pyarrow.fs.FileSystem.from_uri(storage) if "://" in storage else (pyarrow.fs.LocalFileSystem(), storage)

    def entries(path: str) -> list:
        return fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))

    gone = 0
    for experiment in entries(root):
        if experiment.type != pyarrow.fs.FileType.Directory or not experiment.base_name.startswith("tune"):
            continue
        for trial in entries(experiment.path):
            if trial.type != pyarrow.fs.FileType.Directory or trial.base_name.removeprefix("trial_") not in trial_ids:
                continue
            for ckpt in entries(trial.path):
                if ckpt.type == pyarrow.fs.FileType.Directory and ckpt.base_name.startswith("checkpoint_"):
                    fs.delete_dir(ckpt.path)
                    gone += 1
    return gone


def _checkpoint_path(trial) -> str | None:
    ckpt = getattr(trial, "checkpoint", None)
    return getattr(ckpt, "path", None) if ckpt is not None else None


class ResultsWriter(Callback):
    """Keeps RUN's tables up to date from Tune's trial events, and the progress line with them.

    Rows already in the run directory (from an interrupted driver) are read back first, so a resumed study
    appends to them instead of starting over. Every write is atomic. A write that fails (a full disk) is noted in
    the study's `stop` (as Optuna's storage errors are by study.search) and no further write is tried; it is raised
    at the end of Tune's step, which stops the study with the tables as last written (Tune logs, and goes on after,
    an exception raised in some of its hooks).
    """

    def __init__(self, run_dir: Path, search_params: list[str], text_index: TextIndex | None = None,
                 progress: Progress | None = None, stop: StudyStop | None = None):
        self.run_dir = RunDir(run_dir)
        self.stop = stop or StudyStop()
        self.table = TrialTable(search_params, text_index, self.run_dir.read_tables())
        self.progress = progress or Progress()
        self.echo = self.progress.log
        self._reconciled = False

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks into tuner.pkl. What this writer knows is in the run directory's tables, so
        # it pickles as where they are: not the rows, nor the corpus index (20 MB of 20-gram hashes of the
        # training text). A writer unpickled (Tuner.restore) reads the tables again; the driver replaces it
        # with its own anyway (study._compat.set_restored_callbacks).
        return {"run_dir": str(self.run_dir.path), "search_params": list(self.table.search_params)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(Path(state["run_dir"]), state["search_params"])

    def stage(self, role: str, total: int, expect: tuple[float | None, float] = (None, 0.0), **extra) -> None:
        """The trials Tune runs from now on are `role` (search, repeat, final), `total` of them; `expect` is the
        seconds this stage and the later ones are planned to take, for the progress line's estimate."""
        self.table.stage(role, total, **extra)
        self.progress.expect(*expect)
        self._reconciled = False

    # ---- Tune callback hooks ------------------------------------------------------------------------
    def on_step_begin(self, iteration, trials, **info):
        if not self._reconciled:  # the first step of an experiment: Tune knows every trial it will resume
            self._reconciled = True
            self._reconcile(trials)

    def _reconcile(self, trials) -> None:
        """Make the rows an interrupted driver left agree with the state Tune saved (study.rundir.TrialTable)."""
        ghosts = self.table.drop_unknown_running({t.trial_id for t in trials})
        if ghosts:
            self.echo(f"dropped {len(ghosts)} trial(s) an interrupted driver had started but never saved "
                      f"({', '.join(ghosts)}); their places run again")
        caught_up = [t.trial_id for t in trials if self.table.catch_up(
            t.trial_id, t.config, t.last_result,
            ended={"TERMINATED": "completed", "ERROR": "failed"}.get(t.status),
            error=error_summary(t) if t.status == "ERROR" else None)]
        if caught_up:
            self.echo(f"brought {len(caught_up)} row(s) up to the state Tune saved ({', '.join(caught_up)})")
        if ghosts or caught_up:
            self.write()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.table.start(trial.trial_id, trial.config)
        self.table.order([t.trial_id for t in trials])
        self.write()
        self.progress.update(self.table.tally())

    def on_trial_recover(self, iteration, trials, trial, **info):
        if trial.trial_id in self.table.finished:
            return
        error = error_summary(trial)
        self.table.retry(trial.trial_id, trial.config, error)
        self.echo(f"trial {trial.trial_id} crashed ({error}); retrying from its last checkpoint")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        new_best = self.table.result(trial.trial_id, trial.config, result, _checkpoint_path(trial))
        best = self.table.best_val_bpc()
        note = (f"new best val_bpc {best:.4f} (trial {trial.trial_id}, {int(result['chars_seen']):,} chars)"
                if new_best else None)
        self.progress.update(self.table.tally(), note=note)
        # Every result is written before Tune saves its own state at the end of this step (about 20 ms for a
        # 50-trial study): a driver killed after that save loses no evaluation.
        self.write()

    def on_trial_complete(self, iteration, trials, trial, **info):
        rerun = trial.trial_id in self.table.finished  # by a resume, from its last checkpoint: only that moves
        self.table.complete(trial.trial_id, trial.config, trial.last_result, _checkpoint_path(trial))
        self.write()
        if rerun:
            return
        row = self.table.trials[trial.trial_id]
        score = f", best val_bpc {row['best_val_bpc']:.4f}" if _finite(row.get("best_val_bpc")) else ""
        self.progress.log(f"trial {trial.trial_id} {row['status']}{score}", self.table.tally())

    def on_trial_error(self, iteration, trials, trial, **info):
        if trial.trial_id in self.table.finished:
            return
        error = error_summary(trial)
        self.table.fail(trial.trial_id, trial.config, error)
        self.write()
        self.progress.log(f"trial {trial.trial_id} failed: {error}", self.table.tally())

    def on_step_end(self, iteration, trials, **info):
        self.stop.raise_write_failure()
        self.progress.tick()

    def on_experiment_end(self, trials, **info):
        self.progress.close()
        self.write()

    # ---- tables -------------------------------------------------------------------------------------
    def write(self) -> None:
        """Rewrite the tables atomically; after a failed write, nothing."""
        if self.stop.write_failure is not None:
            return
        try:
            self.run_dir.write_tables(self.table)
        except RunDirWriteError as exc:
            self.stop.note_write_failure(exc)
