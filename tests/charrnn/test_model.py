from __future__ import annotations

import pytest
import torch

from charrnn.model import CELLS, CharRNN, ModelConfig, detach_hidden, flops_per_char


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_output_shapes_for_every_cell(cell, num_layers):
    model = CharRNN(ModelConfig(vocab_size=11, embedding_dim=5, hidden_size=7, num_layers=num_layers, cell=cell,
                                dropout=0.1))
    x = torch.randint(0, 11, (3, 13))
    logits, hidden = model(x)
    assert logits.shape == (3, 13, 11)
    states = hidden if isinstance(hidden, tuple) else (hidden,)
    assert len(states) == (2 if cell == "lstm" else 1)
    assert all(h.shape == (num_layers, 3, 7) for h in states)
    # The carried state continues the sequence: two halves with the state passed on equal one pass.
    model.eval()
    full, _ = model(x)
    first, h = model(x[:, :6])
    second, _ = model(x[:, 6:], detach_hidden(h))
    torch.testing.assert_close(torch.cat([first, second], dim=1), full)


def test_relu_and_tanh_are_different_nonlinearities():
    relu = CharRNN(ModelConfig(vocab_size=5, cell="rnn_relu", hidden_size=4, num_layers=1, embedding_dim=3))
    tanh = CharRNN(ModelConfig(vocab_size=5, cell="rnn_tanh", hidden_size=4, num_layers=1, embedding_dim=3))
    assert relu.rnn.nonlinearity == "relu" and tanh.rnn.nonlinearity == "tanh"


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="cell"):
        ModelConfig(vocab_size=5, cell="transformer")
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(vocab_size=5, dropout=1.0)


def test_flops_per_char_of_the_lab_model():
    cfg = ModelConfig(vocab_size=99, embedding_dim=100, hidden_size=512, num_layers=3, cell="rnn_relu")
    macs = 512 * (100 + 512) + 2 * 512 * (512 + 512) + 512 * 99
    assert flops_per_char(cfg) == 2 * macs
    lstm = ModelConfig(vocab_size=99, embedding_dim=100, hidden_size=512, num_layers=1, cell="lstm")
    assert flops_per_char(lstm) == 2 * (4 * 512 * (100 + 512) + 512 * 99)
