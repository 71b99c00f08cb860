"""The bundled corpora: pinned hashes, the name lookup order, and a damaged copy refused at load."""
from __future__ import annotations

import hashlib

import pytest

from charrnn import corpora
from charrnn.corpus import CorpusError, load_corpus


def test_both_corpora_are_bundled_and_match_their_pins():
    pins = corpora.pinned_sha256()
    assert sorted(pins) == corpora.bundled_names() == ["shakespeare", "sherlock"]
    for name, sha in pins.items():
        assert hashlib.sha256((corpora.BUNDLED_DIR / f"{name}.txt").read_bytes()).hexdigest() == sha


def test_lookup_order_is_charrnn_data_then_dot_data_then_bundled(tmp_path, monkeypatch):
    env, cwd = tmp_path / "env", tmp_path / "cwd"
    (cwd / "data").mkdir(parents=True)
    env.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("CHARRNN_DATA", raising=False)
    assert corpora.find("sherlock") == corpora.BUNDLED_DIR / "sherlock.txt"
    (cwd / "data" / "sherlock.txt").write_text("local")
    assert corpora.find("sherlock") == cwd / "data" / "sherlock.txt"
    monkeypatch.setenv("CHARRNN_DATA", str(env))
    assert corpora.find("sherlock") == cwd / "data" / "sherlock.txt"  # not in $CHARRNN_DATA: next place
    (env / "sherlock.txt").write_text("mine")
    assert corpora.find("sherlock") == env / "sherlock.txt"


def test_unknown_name_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARRNN_DATA", str(tmp_path / "env"))
    with pytest.raises(CorpusError) as exc:
        corpora.find("mynovel")
    message = str(exc.value)
    assert "\n" not in message
    assert str(tmp_path / "env") in message and str(tmp_path / "data") in message
    assert "bundled: shakespeare, sherlock" in message


@pytest.fixture
def fake_bundle(tmp_path, monkeypatch):
    """A bundled directory holding tiny.txt, pinned to the hash of other text."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "tiny.txt").write_text("Elementary. " * 200)
    monkeypatch.setattr(corpora, "BUNDLED_DIR", bundle)
    monkeypatch.setattr(corpora, "SOURCES", bundle / "SOURCES.md")
    return bundle


def _pin(bundle, sha: str) -> None:
    (bundle / "SOURCES.md").write_text(f"# Bundled\n\n## tiny.txt\n\n- Bytes: 2,400\n- sha256: `{sha}`\n")


def test_a_damaged_bundled_corpus_is_one_clear_error(fake_bundle):
    _pin(fake_bundle, hashlib.sha256(b"something else").hexdigest())
    with pytest.raises(CorpusError, match="bundled corpus .*tiny.txt is damaged") as exc:
        load_corpus(corpora.find("tiny"))
    assert "\n" not in str(exc.value)


def test_an_intact_bundled_corpus_loads_and_copies_elsewhere_are_not_pinned(fake_bundle, tmp_path):
    raw = (fake_bundle / "tiny.txt").read_bytes()
    _pin(fake_bundle, hashlib.sha256(raw).hexdigest())
    assert load_corpus(corpora.find("tiny")).sha256 == hashlib.sha256(raw).hexdigest()
    _pin(fake_bundle, "0" * 64)
    own = tmp_path / "tiny.txt"  # a user's own file of the same name is theirs to change
    own.write_text("Elementary, my dear Watson. " * 100)
    assert load_corpus(own).name == "tiny"
