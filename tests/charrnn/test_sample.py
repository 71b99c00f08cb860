from __future__ import annotations

import torch

from charrnn.checkpoint import MODEL_FILE, load_model
from charrnn.config import TrainConfig
from charrnn.corpus import from_text
from charrnn.sample import main, sample
from charrnn.train import train


def _trained_checkpoint(text, directory):
    corpus = from_text(text)
    cfg = TrainConfig(budget_chars=30_000, embedding_dim=16, hidden_size=48, num_layers=1, cell="lstm", seq_len=32,
                      batch_size=8, lr=1e-2, evals_per_trial=4, val_chars=0, sample_chars=30, prime="The ")
    train(cfg, corpus.train, corpus.val, corpus.vocab, checkpoint_dir=directory)
    return corpus


def test_checkpoint_loads_with_weights_only_and_samples(tiny_text, tmp_path):
    corpus = _trained_checkpoint(tiny_text, tmp_path)
    payload = torch.load(tmp_path / MODEL_FILE, weights_only=True)
    assert payload["vocab"] == corpus.vocab.chars and payload["model_config"]["cell"] == "lstm"
    model, vocab, _ = load_model(tmp_path)
    text = sample(model, vocab, "Holmes", 200, temperature=0.8, seed=1)
    assert len(text) == 200 and set(text) <= set(vocab.chars)
    assert text == sample(model, vocab, "Holmes", 200, temperature=0.8, seed=1)  # seeded
    assert sample(model, vocab, "Holmes", 50, temperature=0) == sample(model, vocab, "Holmes", 50, temperature=0)


def test_sample_cli(tiny_text, tmp_path, capsys):
    _trained_checkpoint(tiny_text, tmp_path)
    assert main(["--checkpoint", str(tmp_path / MODEL_FILE), "--length", "120", "--temperature", "0.5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The ") and len(out) >= 120
    assert main(["--checkpoint", str(tmp_path), "--prime", "\u2603", "--length", "5"]) == 2
    assert "outside the model's vocabulary" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2


def test_temperatures_in_one_batch_greedy_rows_and_seeds(tiny_text):
    from charrnn.corpus import from_text
    from charrnn.model import CharRNN, ModelConfig
    from charrnn.sample import sample, sample_many

    corpus = from_text(tiny_text)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(corpus.vocab), embedding_dim=8, hidden_size=16, num_layers=1))
    texts = sample_many(model, corpus.vocab, "The ", 50, [0.0, 0.8, 0.8], seed=3)
    assert [len(t) for t in texts] == [50, 50, 50]
    assert texts[0] == sample(model, corpus.vocab, "The ", 50, 0.0)  # greedy rows do not depend on the draw
    assert texts[1] != texts[2]  # rows draw independently
    assert sample_many(model, corpus.vocab, "The ", 50, [0.0, 0.8, 0.8], seed=3) == texts
    assert sample_many(model, corpus.vocab, "The ", 5, [], seed=3) == []


def test_printable_escapes_what_a_terminal_would_obey():
    from charrnn.sample import printable

    assert printable("Holmes\n\tsaid") == "Holmes\n\tsaid"
    assert printable("a\x1b]0;owned\x07b\r\x00") == "a\\x1b]0;owned\\x07b\\x0d\\x00"
    assert printable("x\u202ey\u200bz\x9b") == "x\\u202ey\\u200bz\\x9b"
    assert printable("é – ü") == "é – ü"
