from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# A study cache of the session's own for whatever copies the environment outside a test (a module's cluster, started
# before any test's own cache is set): no test writes into the user's ~/.cache.
os.environ["CHARRNN_STUDY_CACHE"] = tempfile.mkdtemp(prefix="charrnn-study-cache-")
atexit.register(shutil.rmtree, os.environ["CHARRNN_STUDY_CACHE"], True)

REPO = Path(__file__).resolve().parents[1]

PROSE = (
    "To Sherlock Holmes she is always the woman. I have seldom heard him mention her under any other name. "
    "In his eyes she eclipses and predominates the whole of her sex. It was not that he felt any emotion akin "
    "to love for Irene Adler. All emotions, and that one particularly, were abhorrent to his cold, precise but "
    "admirably balanced mind. He was, I take it, the most perfect reasoning and observing machine that the "
    "world has seen, but as a lover he would have placed himself in a false position.\n"
)


@pytest.fixture(scope="session")
def shared_baselines(tmp_path_factory) -> Path:
    """Where the compressor baselines the session's studies scored are kept between tests: a pure function of the
    corpus (10 s of xz and PPMd for the canon, in each of some thirty studies otherwise)."""
    return tmp_path_factory.mktemp("shared-cache") / "baselines.json"


@pytest.fixture(autouse=True)
def own_speed_cache(tmp_path_factory, monkeypatch, shared_baselines):
    """Every test its own study cache (study.machine): a speed or budget remembered by one test, or by the user's
    own studies, never plans another's. Only the baselines, which no plan reads, carry over between tests."""
    from study.machine import BASELINES_FILE

    cache = tmp_path_factory.mktemp("study-cache")
    monkeypatch.setenv("CHARRNN_STUDY_CACHE", str(cache))
    if shared_baselines.exists():
        shutil.copyfile(shared_baselines, cache / BASELINES_FILE)
    yield
    if (cache / BASELINES_FILE).exists():
        shutil.copyfile(cache / BASELINES_FILE, shared_baselines)


@pytest.fixture
def tiny_text() -> str:
    """About 20k characters of repetitive English: learnable in a second by a tiny model."""
    return PROSE * 40


@pytest.fixture
def sherlock_path() -> Path:
    """The Sherlock Holmes canon bundled with the package (no data beside the repository needed)."""
    from charrnn.corpora import BUNDLED_DIR

    return BUNDLED_DIR / "sherlock.txt"
