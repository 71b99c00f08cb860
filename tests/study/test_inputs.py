"""Bad input gets one clear line and exit status 2, before Ray starts."""
from __future__ import annotations

import json

import pytest

from study.run import main

SMOKE = ["--spec", "smoke", "--trials", "2"]


def _run(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.fixture
def files(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 50)
    (tmp_path / "latin1.txt").write_bytes("Holmes said ".encode() * 10 + "caf\xe9".encode("latin-1"))
    (tmp_path / "short.txt").write_text("Elementary, my dear Watson. " * 20)
    (tmp_path / "bad.toml").write_text('name = "bad"\ncolour = "red"\n[search.lr]\ntype="float"\nlow=1\nhigh=2\n')
    (tmp_path / "range.toml").write_text('name = "r"\n[search.lr]\ntype="float"\nlow=0.1\nhigh=0.01\n')
    study = tmp_path / "old"
    study.mkdir()
    (study / "study.json").write_text(json.dumps({"schema_version": 1, "name": "x"}))
    return tmp_path


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--corpus", "{d}/missing.txt"], "corpus not found"),
        (["--corpus", "nosuchcorpus"], "not found as nosuchcorpus.txt"),
        (["--corpus", "{d}/empty.txt"], "corpus is empty"),
        (["--corpus", "{d}/binary.bin"], "binary"),
        (["--corpus", "{d}/latin1.txt"], "not valid utf-8: byte 123"),
        (["--corpus", "{d}/short.txt"], "too short"),
        (["--spec", "{d}/bad.toml"], "unknown key(s) colour"),
        (["--spec", "{d}/range.toml"], "low (0.1) is greater than high (0.01)"),
        (["--spec", "{d}/nope.toml"], "spec not found"),
        (["--spec", "nosuchspec"], "neither a file nor a bundled spec (shakespeare, sherlock, smoke)"),
        (["--trials", "0"], "--trials must be >= 1"),
        (["--minutes", "-1"], "--minutes must be >= 0"),
        (["--minutes", "0.05", "--trials", "50"], "minutes cannot hold 50 trials of at least 10 optimizer steps"),
        (["--max-concurrent", "0"], "--max-concurrent must be >= 1"),
        (["--gpus-per-trial", "1"], "no CUDA GPU"),
        (["--out", "{d}/old"], "already holds a study"),
        (["--resume", "{d}"], "not a run directory"),
        (["--resume", "{d}/old"], "its tables are schema 1, this version writes schema 2"),
        (["--trials", "many"], "invalid int value"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, files, argv, message):
    argv = [a.format(d=files) for a in argv]
    code, err = _run(capsys, SMOKE + argv)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert message.lower() in err.lower(), err
    import ray

    assert not ray.is_initialized()


def test_other_encoding_is_accepted_with_encoding_flag(files):
    from study.inputs import resolve_corpus
    from charrnn.corpus import load_corpus

    name, path = resolve_corpus(str(files / "latin1.txt"))
    assert "é" in load_corpus(path, encoding="latin-1").vocab.chars


def test_named_corpus_lookup_order(tmp_path, monkeypatch):
    from study.inputs import resolve_corpus

    (tmp_path / "mine.txt").write_text("x")
    monkeypatch.setenv("CHARRNN_DATA", str(tmp_path))
    assert resolve_corpus("mine") == ("mine", tmp_path / "mine.txt")
    name, path = resolve_corpus("sherlock")
    assert name == "sherlock" and path.name == "sherlock.txt" and path.exists()


def test_bundled_specs_resolve_by_name_from_any_directory(tmp_path, monkeypatch):
    from study.inputs import SPECS_DIR, resolve_spec

    monkeypatch.chdir(tmp_path)
    assert resolve_spec(None).name == "sherlock"
    for name in ("sherlock", "shakespeare", "smoke"):
        spec = resolve_spec(name)
        assert spec.name == name and spec.path == str(SPECS_DIR / f"{name}.toml")


def test_a_spec_path_still_wins_over_a_bundled_name(tmp_path, monkeypatch):
    from study.inputs import SPECS_DIR, resolve_spec

    mine = tmp_path / "mine.toml"
    mine.write_text((SPECS_DIR / "smoke.toml").read_text().replace('name = "smoke"', 'name = "mine"'))
    monkeypatch.chdir(tmp_path)
    assert resolve_spec("mine.toml").name == "mine"
    assert resolve_spec(str(mine)).name == "mine"


def test_a_damaged_bundled_corpus_is_one_line_and_exit_2(capsys, monkeypatch, tmp_path):
    from charrnn import corpora

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHARRNN_DATA", raising=False)
    monkeypatch.setattr(corpora, "pinned_sha256", lambda: {"sherlock": "0" * 64, "shakespeare": "0" * 64})
    code, err = _run(capsys, SMOKE)
    assert code == 2 and len(err.splitlines()) == 1 and "bundled corpus" in err and "damaged" in err, err
