"""study.cluster's start-up of a local Ray: loopback only, a private token file, floors past known holes.

The sockets of a real local study are checked in tests/study/test_run_e2e.py (test_a_local_study_listens_on_
loopback_only); these are the parts that need no Ray.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.version import Version

from study.cluster import LOCAL_ONLY_ENV, private_token_file
from tests.conftest import REPO


def test_a_missing_token_file_is_made_private(tmp_path):
    path = private_token_file(tmp_path / ".ray" / "auth_token")
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / ".ray").stat().st_mode & 0o077 == 0
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    assert private_token_file(path).read_text() == token  # an existing token is kept


def test_a_world_readable_token_file_is_narrowed(tmp_path):
    path = tmp_path / "auth_token"
    path.write_text("a" * 64)
    path.chmod(0o644)
    private_token_file(path)
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text() == "a" * 64


def test_a_token_symlink_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("x")
    target.chmod(0o644)
    (tmp_path / "auth_token").symlink_to(target)
    private_token_file(tmp_path / "auth_token")
    assert target.stat().st_mode & 0o777 == 0o644 and target.read_text() == "x"


def test_local_only_is_set_before_ray_is_imported_and_only_for_a_local_study(tmp_path):
    """study.run switches Ray to its single-machine mode before importing the driver, and not for --address."""
    code = ("import os, sys; from study.cluster import local_only; local_only(); "
            "import ray._private.ray_constants as c; print(c.ENABLE_RAY_CLUSTER)")
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop(LOCAL_ONLY_ENV, None)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
    run = (REPO / "study" / "run.py").read_text()
    assert run.index("local_only()") < run.index("from study.driver import")
    assert "if plan.address is None:\n        local_only()" in run


def test_dependency_floors_are_past_known_holes():
    floors = {"torch": "2.6",      # CVE-2025-32434: torch.load(weights_only=True) could run code
              "ray": "2.52",       # the first release with token authentication
              "tqdm": "4.66.3",    # CVE-2024-34062
              "scikit-learn": "1.5"}  # CVE-2024-5206
    deps = {Requirement(d).name: Requirement(d) for d in
            tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    for name, floor in floors.items():
        lows = [Version(s.version) for s in deps[name].specifier if s.operator == ">="]
        assert lows and min(lows) >= Version(floor), (name, deps[name])
