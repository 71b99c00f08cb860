"""Character-level RNN language models: corpus, model, training and sampling.

Nothing in this package knows about Ray or Optuna; `study/` drives it.
"""
from __future__ import annotations

from charrnn.config import TrainConfig
from charrnn.corpus import Corpus, CorpusError, Vocab, load_corpus
from charrnn.model import CELLS, CharRNN, ModelConfig
from charrnn.train import EvalRecord, TrainResult, train

__all__ = [
    "CELLS",
    "CharRNN",
    "Corpus",
    "CorpusError",
    "EvalRecord",
    "ModelConfig",
    "TrainConfig",
    "TrainResult",
    "Vocab",
    "load_corpus",
    "train",
]
