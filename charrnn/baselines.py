"""What a model must beat: bits/char of simple predictors on the same validation and test characters.

- **unigram**: the character frequencies of the training text (add-one smoothed over the vocabulary),
  no context at all.
- **xz** (stdlib `lzma`, preset 9 extreme) and **PPMd** (order 8, 256 MB, through `pyppmd`): general-purpose
  compressors, each conditioned on all the text before the scored part, as a language model is: the cost of
  the scored text is the compressed size of (context + text) minus that of the context alone.

Bits are per character (not per UTF-8 byte), so they compare directly with a model's val_bpc.
"""
from __future__ import annotations

import lzma
import math

import numpy as np

from charrnn.corpus import Vocab

PPMD_ORDER = 8
PPMD_MEM = 256 << 20
XZ_PRESET = 9 | lzma.PRESET_EXTREME


def unigram_bpc(train_ids: np.ndarray, ids: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (bits/char) of `ids` under the add-one smoothed character frequencies of `train_ids`."""
    counts = np.bincount(np.asarray(train_ids, dtype=np.int64), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log2(counts / counts.sum())
    return float(-logp[np.asarray(ids, dtype=np.int64)].mean())


def _xz_size(data: bytes) -> int:
    return len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=XZ_PRESET))


def _ppmd_size(data: bytes) -> int:
    import pyppmd

    encoder = pyppmd.Ppmd8Encoder(PPMD_ORDER, PPMD_MEM, restore_method=pyppmd.PPMD8_RESTORE_METHOD_RESTART)
    return len(encoder.encode(data) + encoder.flush())


COMPRESSORS = {"xz": _xz_size, "ppmd": _ppmd_size}


def conditional_bpc(method: str, context: str, text: str) -> float:
    """Bits/char of `text` by a compressor that has seen `context` first: size(context+text) - size(context)."""
    size = COMPRESSORS[method]
    ctx = context.encode("utf-8")
    extra = size(ctx + text.encode("utf-8")) - (size(ctx) if ctx else 0)
    return 8.0 * extra / max(len(text), 1)


def compute_baselines(train: str, val: str, test: str, vocab_chars: str,
                      methods: tuple[str, ...] = ("unigram", "xz", "ppmd")) -> list[dict]:
    """Rows `{method, split, bpc, detail}` for the validation and the test text.

    The validation text is conditioned on the training text, the test text on training + validation,
    exactly the text that comes before it in the corpus.
    """
    vocab = Vocab(vocab_chars)
    rows = []
    for method in methods:
        for split, context, text in (("val", train, val), ("test", train + val, test)):
            if method == "unigram":
                bpc = unigram_bpc(vocab.encode(train), vocab.encode(text), len(vocab))
                detail = "character frequencies of the training text"
            else:
                bpc = conditional_bpc(method, context, text)
                detail = (f"PPMd order {PPMD_ORDER}, {PPMD_MEM >> 20} MB" if method == "ppmd" else "xz -9e") + (
                    ", conditioned on the text before it")
            rows.append({"method": method, "split": split, "bpc": bpc if math.isfinite(bpc) else math.nan,
                         "detail": detail})
    return rows
