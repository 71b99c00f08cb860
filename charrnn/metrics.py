"""Pure functions: bits per character, the learning-rate schedule, and sample-text statistics."""
from __future__ import annotations

import math
import re

import numpy as np

LN2 = math.log(2.0)
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")


def unigram_entropy_bits(ids: np.ndarray, vocab_size: int) -> float:
    """Entropy (bits/char) of the character frequencies of `ids`: what a model without context scores."""
    counts = np.bincount(np.asarray(ids, dtype=np.int64), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def lr_at(step_chars: int, budget_chars: int, base_lr: float, schedule: str, warmup_frac: float = 0.02) -> float:
    """Learning rate after `step_chars` training characters.

    "constant" is the lab's schedule. "cosine" warms up linearly over the first `warmup_frac` of
    the budget, then decays to a tenth of `base_lr` at the budget.
    """
    if schedule == "constant":
        return base_lr
    if schedule != "cosine":
        raise ValueError(f"unknown lr schedule {schedule!r}")
    warmup = max(1.0, warmup_frac * budget_chars)
    if step_chars < warmup:
        return base_lr * (step_chars + 1) / warmup
    progress = min(1.0, (step_chars - warmup) / max(1.0, budget_chars - warmup))
    return base_lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def known_word_frac(text: str, vocabulary: set[str]) -> float:
    """Share of the words in `text` (case-folded) found in `vocabulary`; NaN when there are none."""
    ws = words(text)
    if not ws:
        return float("nan")
    return sum(w.lower() in vocabulary for w in ws) / len(ws)


def corpus_words(text: str) -> set[str]:
    return {w.lower() for w in words(text)}


def ngram_hashes(ids: np.ndarray, n: int = 20) -> np.ndarray:
    """Sorted unique 64-bit polynomial hashes of every length-n window of `ids` (an index for `copied_frac`).

    Vectorised over the array, so indexing a 3M-character corpus takes about a second.
    """
    return np.unique(_window_hashes(ids, n))


def copied_frac(ids: np.ndarray, index: np.ndarray, n: int = 20) -> float:
    """Share of the length-n windows of `ids` whose hash is in `index` (see `ngram_hashes`).

    NaN when the text is shorter than n. Hash collisions are possible but negligible at 64 bits.
    """
    if len(ids) < n:
        return float("nan")
    h = _window_hashes(ids, n)
    pos = np.searchsorted(index, h)
    pos[pos == len(index)] = 0
    return float(np.mean(index[pos] == h)) if len(index) else 0.0


def _window_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.uint64)
    if len(ids) < n:
        return np.zeros(0, dtype=np.uint64)
    base = np.uint64(1_000_003)
    h = np.zeros(len(ids) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = h * base + ids[k : len(ids) - n + 1 + k] + np.uint64(1)
    return h
