"""Baselines on tiny texts with values checked by hand."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from charrnn.baselines import compute_baselines, conditional_bpc, unigram_bpc


def test_unigram_is_the_add_one_cross_entropy_of_the_training_frequencies():
    # train "aab": counts a=2, b=1, plus one each -> p(a) = 3/5, p(b) = 2/5.
    got = unigram_bpc(np.array([0, 0, 1]), np.array([0, 1]), vocab_size=2)
    assert got == pytest.approx(-(math.log2(3 / 5) + math.log2(2 / 5)) / 2)
    # A character never seen in training still has a finite cost: 1 / (3 + 2).
    assert unigram_bpc(np.array([0, 0, 1]), np.array([2]), vocab_size=3) == pytest.approx(-math.log2(1 / 6))


@pytest.mark.parametrize("method", ["xz", "ppmd"])
def test_compressors_charge_little_for_text_they_have_seen_and_much_for_noise(method):
    rng = random.Random(0)
    context = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(20_000))
    repeated = context[5_000:9_000]
    noise = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(4_000))
    seen = conditional_bpc(method, context, repeated)
    fresh = conditional_bpc(method, context, noise)
    assert seen < 0.2, seen
    # Uniform over 27 symbols is log2(27) = 4.75 bits/char; a compressor cannot do better on fresh noise.
    assert 4.5 < fresh < 6.5, fresh


def test_compute_baselines_rows_on_a_text_that_repeats_itself(tiny_text):
    text = tiny_text + "".join(reversed(tiny_text))
    n = len(text)
    train, val, test = text[: int(n * 0.9)], text[int(n * 0.9): int(n * 0.95)], text[int(n * 0.95):]
    vocab = "".join(sorted(set(text)))
    rows = compute_baselines(train, val, test, vocab)
    assert [(r["method"], r["split"]) for r in rows] == [
        ("unigram", "val"), ("unigram", "test"), ("xz", "val"), ("xz", "test"), ("ppmd", "val"), ("ppmd", "test")]
    bpc = {(r["method"], r["split"]): r["bpc"] for r in rows}
    for split in ("val", "test"):
        # The text repeats one paragraph: a compressor that has seen it pays almost nothing, context-free
        # character frequencies pay their entropy (about 4 bits/char of English).
        assert bpc[("ppmd", split)] < 0.3 and bpc[("xz", split)] < 0.3
        assert 3.5 < bpc[("unigram", split)] < 5
