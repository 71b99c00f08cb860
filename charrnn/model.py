"""The CharRNN: embedding -> RNN -> linear decoder, as in the lab."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

CELLS = ("rnn_tanh", "rnn_relu", "gru", "lstm")

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    embedding_dim: int = 100
    hidden_size: int = 512
    num_layers: int = 3
    cell: str = "rnn_relu"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        for name in ("vocab_size", "embedding_dim", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


class CharRNN(nn.Module):
    """Embedding -> multi-layer RNN -> linear decoder over the vocabulary.

    Input and output are batch-first: tokens (B, T) -> logits (B, T, vocab_size).
    Dropout is applied to the embeddings, between RNN layers and before the decoder, so
    it regularises single-layer models too.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        rnn_kwargs = dict(
            input_size=config.embedding_dim,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        if config.cell == "gru":
            self.rnn = nn.GRU(**rnn_kwargs)
        elif config.cell == "lstm":
            self.rnn = nn.LSTM(**rnn_kwargs)
        else:
            nonlinearity = "relu" if config.cell == "rnn_relu" else "tanh"
            self.rnn = nn.RNN(nonlinearity=nonlinearity, **rnn_kwargs)
        self.drop = nn.Dropout(config.dropout)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, tokens: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """Return (logits (B, T, V), the final hidden state, still attached to the graph)."""
        x = self.drop(self.embedding(tokens))
        out, hidden = self.rnn(x, hidden)
        return self.decoder(self.drop(out)), hidden

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def detach_hidden(hidden: Hidden | None) -> Hidden | None:
    """Cut the graph between truncated-BPTT chunks while keeping the state's values."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)
    return hidden.detach()


def flops_per_char(config: ModelConfig) -> int:
    """Forward multiply-adds x 2 per character (embedding lookups are free)."""
    gates = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}[config.cell]
    macs = 0
    for layer in range(config.num_layers):
        inp = config.embedding_dim if layer == 0 else config.hidden_size
        macs += gates * config.hidden_size * (inp + config.hidden_size)
    macs += config.hidden_size * config.vocab_size
    return 2 * macs
