from __future__ import annotations

import math

import numpy as np
import pytest

from charrnn.metrics import copied_frac, corpus_words, known_word_frac, lr_at, ngram_hashes, unigram_entropy_bits


def test_unigram_entropy():
    assert unigram_entropy_bits(np.array([0, 1, 2, 3]), 4) == pytest.approx(2.0)
    assert unigram_entropy_bits(np.array([1, 1, 1]), 4) == pytest.approx(0.0)


def test_lr_schedules():
    assert lr_at(500, 1000, 0.1, "constant") == 0.1
    assert lr_at(0, 1000, 0.1, "cosine") < 0.1  # warming up
    assert lr_at(20, 1000, 0.1, "cosine") == pytest.approx(0.1)
    assert lr_at(1000, 1000, 0.1, "cosine") == pytest.approx(0.01)
    values = [lr_at(s, 1000, 0.1, "cosine") for s in range(20, 1001, 10)]
    assert values == sorted(values, reverse=True)
    with pytest.raises(ValueError):
        lr_at(0, 10, 0.1, "step")


def test_known_word_fraction():
    vocab = corpus_words("Holmes said to Watson: 'Elementary.'")
    assert known_word_frac("holmes SAID nonsenseword", vocab) == pytest.approx(2 / 3)
    assert math.isnan(known_word_frac("  123 ... ", vocab))


def test_copied_fraction_finds_verbatim_spans():
    rng = np.random.default_rng(0)
    corpus = rng.integers(0, 30, 5000)
    index = ngram_hashes(corpus, 20)
    assert copied_frac(corpus[100:400], index) == 1.0
    fresh = rng.integers(0, 30, 300)
    assert copied_frac(fresh, index) == 0.0
    half = np.concatenate([corpus[1000:1150], fresh[:150]])
    assert 0.3 < copied_frac(half, index) < 0.6
    assert math.isnan(copied_frac(corpus[:10], index))
