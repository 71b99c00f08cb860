from __future__ import annotations

import numpy as np
import pytest

from charrnn.corpus import CorpusError, Vocab, from_text, load_corpus, split_text


def test_split_is_contiguous_90_5_5(tiny_text):
    train, val, test = split_text(tiny_text)
    assert train + val + test == tiny_text
    n = len(tiny_text)
    assert len(val) + len(test) == int(n * 0.1)
    assert abs(len(val) - len(test)) <= 1


def test_vocab_is_sorted_set_of_whole_file_so_held_out_text_encodes():
    text = "abc" * 100 + "xyz!"  # the last characters appear only in the held-out part
    corpus = from_text(text)
    assert corpus.vocab.chars == "".join(sorted(set(text)))
    assert corpus.vocab.decode(corpus.test) == split_text(text)[2]


def test_encode_decode_roundtrip(tiny_text):
    vocab = Vocab.from_text(tiny_text)
    ids = vocab.encode(tiny_text)
    assert ids.dtype == np.uint8
    assert vocab.decode(ids[:100]) == tiny_text[:100]
    assert vocab.decode_array(ids) == tiny_text


def test_wide_vocab_uses_int32():
    text = "".join(chr(0x4E00 + i) for i in range(300)) * 3
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    assert ids.dtype == np.int32 and vocab.decode_array(ids) == text


def test_encode_rejects_unknown_character():
    with pytest.raises(KeyError):
        Vocab.from_text("abc").encode("abd")


def test_load_real_corpus_figures(sherlock_path):
    corpus = load_corpus(sherlock_path)
    d = corpus.describe()
    assert d["chars"] == 3_010_866 and d["vocab_size"] == 99  # the figures in charrnn/corpora/SOURCES.md
    assert d["sha256"] == "dc830e0866bd57bc42d8b3b76fc9616aa5fc2dce11b7decb2d2169d82c03d99f"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        (b"", "empty"),
        (b"  \n\n ", "empty"),
        (b"\x7fELF\x02\x01\x00\x00\x00\x00binary", "binary"),
        (b"caf\xe9 au lait\nline two \xff", "not valid utf-8: byte 3 (line 1, column 4)"),
    ],
)
def test_bad_corpus_files_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_corpus(path)


def test_other_encoding_is_allowed(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café au lait. ".encode("latin-1") * 50)
    assert "é" in load_corpus(path, encoding="latin-1").vocab.chars


def test_directory_is_not_a_corpus(tmp_path):
    with pytest.raises(CorpusError, match="directory"):
        load_corpus(tmp_path)
