"""The only place that reaches past the public APIs of Ray Tune and Optuna.

Each function here works around a gap in a public interface. pyproject.toml bounds ray and optuna to
the versions these were tested with (`TESTED`), and tests/study/test_compat.py fails the day one of
the attributes used here moves. Nothing else in `study/` may use a private attribute of either library.
"""
from __future__ import annotations

from typing import Any

import optuna

# The releases the workarounds below were written against; pyproject.toml carries the same bounds. Ray's floor is
# also the first release with token authentication (study.cluster relies on it for a local study).
TESTED = {"ray": ("2.52", "2.61"), "optuna": ("4.0", "5.1")}


def set_restored_callbacks(tuner: Any, callbacks: list) -> None:
    """Give a `tune.Tuner.restore`d tuner this driver's callbacks.

    The restored run config holds the callbacks pickled by the driver that was interrupted (a known Ray
    gap: `Tuner.restore` takes no run_config); the tuner's internal run config is the only handle.
    """
    tuner._local_tuner.get_run_config().callbacks = list(callbacks)


def restored_searcher(tuner: Any) -> Any:
    """The searcher a `tune.Tuner.restore`d tuner will resume (unwrapped from a ConcurrencyLimiter), or None.

    Tune pickles the searcher with the tuner and resumes the unpickled copy; what the interrupted driver gave it
    (the study's stop reasons, study.stopping) has to be replaced by this driver's, and the tuner's internal tune
    config is the only handle.
    """
    searcher = tuner._local_tuner._tune_config.search_alg
    return getattr(searcher, "searcher", searcher)


def optuna_trial(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> optuna.Trial:
    """The live `optuna.Trial` of trial `number`, to report to and tell after a resumed searcher.

    `study.ask()` is the public way to get one, but only for a new trial; Optuna builds its own from the
    storage's trial id the same way when `Study.tell` is given a number.
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))


def exit_without_teardown(code: int) -> None:
    """End the process with `code` without tearing the interpreter down (os._exit), once Ray is shut down and every
    file is written. Tune objects still alive then (held by reference cycles, e.g. a placement group after a study
    stopped by a full disk) run their __del__ against half-torn-down modules at interpreter exit, and Ray's
    `placement_group.clear` printed a traceback after the study's one-line error."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
