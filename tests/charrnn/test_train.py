from __future__ import annotations

import math

import pytest
import torch

from charrnn.config import TrainConfig
from charrnn.corpus import from_text
from charrnn.metrics import unigram_entropy_bits
from charrnn.train import evaluate_bpc, train
from charrnn.model import CharRNN, ModelConfig

TINY = dict(embedding_dim=16, hidden_size=48, num_layers=1, cell="gru", seq_len=32, batch_size=8, lr=1e-2,
            evals_per_trial=8, val_chars=0, sample_chars=40, final_sample_chars=60)


def test_short_run_beats_the_unigram_entropy_of_its_text(tiny_text):
    corpus = from_text(tiny_text)
    records = []
    result = train(TrainConfig(budget_chars=60_000, **TINY), corpus.train, corpus.val, corpus.vocab,
                   report=records.append)
    unigram = unigram_entropy_bits(corpus.val, len(corpus.vocab))
    assert result.status == "completed"
    assert result.best_val_bpc < unigram - 0.5, (result.best_val_bpc, unigram)
    assert len(records) == 8 and records[-1].done and not records[0].done
    assert [r.chars_seen for r in records] == sorted(r.chars_seen for r in records)
    assert all(len(r.sample) == 40 for r in records)
    assert set(records[-1].final_samples) == {0.5, 0.8}
    assert records[-1].train_bpc < records[0].train_bpc


def test_exploding_loss_ends_as_diverged_without_raising(tiny_text):
    corpus = from_text(tiny_text)
    records = []
    cfg = TrainConfig(budget_chars=60_000, **{**TINY, "cell": "rnn_relu", "optimizer": "sgd", "lr": 50.0,
                                                 "grad_clip": 0.0})
    result = train(cfg, corpus.train, corpus.val, corpus.vocab, report=records.append)
    assert result.status == "diverged"
    assert records[-1].diverged and records[-1].done and math.isnan(records[-1].val_bpc)
    assert result.chars_seen < 60_000


def test_evaluation_is_exact_cross_entropy_on_short_text(tiny_text):
    corpus = from_text(tiny_text)
    model = CharRNN(ModelConfig(vocab_size=len(corpus.vocab), embedding_dim=4, hidden_size=8, num_layers=1))
    ids = torch.as_tensor(corpus.val[:65]).long()
    bpc = evaluate_bpc(model, ids)
    # An untrained model is close to uniform over the vocabulary.
    assert abs(bpc - math.log2(len(corpus.vocab))) < 0.5


def test_resume_continues_from_the_saved_state(tiny_text, tmp_path):
    corpus = from_text(tiny_text)
    cfg = TrainConfig(budget_chars=40_000, **TINY)
    seen = []

    def save_at_half(record):
        seen.append(record.chars_seen)
        if len(seen) == 4:
            record.save(tmp_path)
            raise KeyboardInterrupt  # stands in for a crash half-way

    with pytest.raises(KeyboardInterrupt):
        train(cfg, corpus.train, corpus.val, corpus.vocab, report=save_at_half)
    resumed = []
    result = train(cfg, corpus.train, corpus.val, corpus.vocab, report=resumed.append, resume_from=tmp_path)
    assert resumed[0].chars_seen > seen[3]
    assert len(resumed) == 4 and result.chars_seen >= 40_000
    assert result.best_val_bpc <= min(r.val_bpc for r in resumed)


def test_too_little_training_text_is_an_error(tiny_text):
    corpus = from_text(tiny_text)
    with pytest.raises(ValueError, match="too short"):
        train(TrainConfig(budget_chars=1000, train_chars=100, **TINY), corpus.train, corpus.val, corpus.vocab)


def test_config_from_flat_rejects_unknown_keys_and_normalises_types():
    import numpy as np

    cfg = TrainConfig.from_flat({"hidden_size": np.int64(64), "lr": np.float32(0.01), "cell": np.str_("lstm")})
    assert type(cfg.hidden_size) is int and type(cfg.lr) is float and cfg.cell == "lstm"
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_flat({"hiden_size": 64})
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig.from_flat({"optimizer": "adagrad"})


def test_bf16_autocast_trains_as_well(tiny_text):
    corpus = from_text(tiny_text)
    cfg = TrainConfig(budget_chars=30_000, precision="bf16", **TINY)
    assert cfg.bf16
    result = train(cfg, corpus.train, corpus.val, corpus.vocab)
    assert result.best_val_bpc < unigram_entropy_bits(corpus.val, len(corpus.vocab)) - 0.5


def test_auto_precision_follows_the_hardware(monkeypatch):
    import charrnn.config as config_module

    monkeypatch.setattr(config_module, "bf16_is_native", lambda device: True)
    assert TrainConfig(precision="auto").bf16
    monkeypatch.setattr(config_module, "bf16_is_native", lambda device: False)
    assert not TrainConfig(precision="auto").bf16
    assert not TrainConfig(precision="fp32").bf16
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
