"""Fixtures that write the test study's run directories (`benchmarks.synthetic`: the one builder of known-answer
studies, shared with the calibration harness and the scale benchmark)."""

from __future__ import annotations

import pathlib

import pytest

from benchmarks.synthetic import add_local_design, write_run_dir


@pytest.fixture(scope="session")
def make_run(tmp_path_factory):
    """Factory fixture: make_run(**kwargs) writes a fresh synthetic run directory and returns its path."""

    def make(**kwargs) -> pathlib.Path:
        return write_run_dir(tmp_path_factory.mktemp("run"), **kwargs)

    return make


@pytest.fixture(scope="session")
def make_local_run(tmp_path_factory):
    """Factory fixture: make_local_run(run=dict(...), **local) writes a synthetic run with a local design."""

    def make(run: dict | None = None, **local) -> pathlib.Path:
        return add_local_design(write_run_dir(tmp_path_factory.mktemp("local"), **(run or {})), **local)

    return make
