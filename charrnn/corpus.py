"""Reading, validating, encoding and splitting a text corpus.

The vocabulary is the sorted set of characters of the whole file, so held-out text is always
encodable. The split is contiguous: the last 10% is held out, its first half for validation and
its second half as a test text the search never sees.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HELD_OUT_FRACTION = 0.10


class CorpusError(ValueError):
    """A corpus the user supplied cannot be used; the message is one line for the CLI."""


@dataclass(frozen=True)
class Vocab:
    chars: str  # sorted, unique

    def __post_init__(self) -> None:
        if list(self.chars) != sorted(set(self.chars)):
            raise ValueError("vocabulary must be sorted unique characters")

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if len(self.chars) <= 256 else np.dtype(np.int32)

    def encode(self, text: str) -> np.ndarray:
        """Text -> integer ids. Raises KeyError on a character outside the vocabulary."""
        index = {c: i for i, c in enumerate(self.chars)}
        if len(self.chars) <= 256:
            # Fast path: translate to one byte per character, then view as uint8.
            table = {ord(c): i for c, i in index.items()}
            missing = set(text) - set(self.chars)
            if missing:
                raise KeyError(f"characters not in vocabulary: {sorted(missing)[:5]!r}")
            return np.frombuffer(text.translate(table).encode("latin-1"), dtype=np.uint8).copy()
        return np.array([index[c] for c in text], dtype=self.dtype)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def decode_array(self, ids: np.ndarray) -> str:
        """Fast decode of a long id array (the inverse of `encode`)."""
        ids = np.asarray(ids)
        if len(self.chars) <= 256:
            table = {i: ord(c) for i, c in enumerate(self.chars)}
            return ids.astype(np.uint8).tobytes().decode("latin-1").translate(table)
        return "".join(np.array(list(self.chars))[ids])


@dataclass(frozen=True)
class Corpus:
    """An encoded corpus split into contiguous train / validation / test parts."""

    name: str
    path: str
    sha256: str
    vocab: Vocab
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def chars(self) -> int:
        return len(self.train) + len(self.val) + len(self.test)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "chars": self.chars,
            "vocab_size": len(self.vocab),
            "train_chars": len(self.train),
            "val_chars": len(self.val),
            "test_chars": len(self.test),
        }


def split_text(text: str, held_out: float = HELD_OUT_FRACTION) -> tuple[str, str, str]:
    """Contiguous split: (train, validation, test); held-out text is the last `held_out` share."""
    n_held = int(len(text) * held_out)
    n_train = len(text) - n_held
    n_val = n_held // 2
    return text[:n_train], text[n_train : n_train + n_val], text[n_train + n_val :]


def from_text(text: str, name: str = "text", path: str = "", sha256: str = "") -> Corpus:
    """Build a corpus from an in-memory string (used by tests and by `load_corpus`)."""
    vocab = Vocab.from_text(text)
    train, val, test = split_text(text)
    sha = sha256 or hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Corpus(name, path, sha, vocab, vocab.encode(train), vocab.encode(val), vocab.encode(test))


def read_text(path: str | Path, encoding: str = "utf-8") -> tuple[str, str]:
    """Read and validate a corpus file; returns (text, sha256 of the bytes).

    Raises CorpusError with a one-line message for a missing, unreadable, empty, binary or
    undecodable file.
    """
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"corpus not found: {path}")
    if path.is_dir():
        raise CorpusError(f"corpus is a directory, not a text file: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"cannot read corpus {path}: {exc.strerror or exc}") from None
    if not raw.strip():
        raise CorpusError(f"corpus is empty: {path}")
    if b"\x00" in raw[: 1 << 16] and not encoding.lower().replace("-", "").startswith("utf16"):
        raise CorpusError(f"corpus looks binary (it contains NUL bytes), not text: {path}")
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise CorpusError(f"unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise CorpusError(
            f"corpus is not valid {encoding}: byte {exc.start} (line {line}, column {col}) "
            f"is {raw[exc.start:exc.start + 1]!r}; pass --encoding (e.g. latin-1) if the file uses another"
        ) from None
    controls = sum(1 for c in text[:65536] if ord(c) < 32 and c not in "\n\r\t\f\v")
    if controls > 0.01 * min(len(text), 65536):
        raise CorpusError(f"corpus looks binary ({controls} control characters in its first 64k), not text: {path}")
    return text, hashlib.sha256(raw).hexdigest()


def load_corpus(path: str | Path, name: str | None = None, encoding: str = "utf-8") -> Corpus:
    """Read, validate, encode and split a corpus file; a bundled corpus must match its pinned sha256."""
    from charrnn.corpora import check_bundled  # imported here: charrnn.corpora imports this module

    path = Path(path)
    text, sha = read_text(path, encoding)
    check_bundled(path, sha)
    return from_text(text, name=name or path.stem, path=str(path.resolve()), sha256=sha)
