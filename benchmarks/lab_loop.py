"""The lab handout's training loop, kept as the speed baseline for `benchmarks.throughput`.

One stream (batch 1) of `seq_len` characters per step, the hidden state carried and detached,
`loss.item()` every step, Adam, no gradient clipping: the loop exactly as the handout writes it,
on our CharRNN (batch-first, so a chunk is (1, seq_len) instead of the handout's (seq_len, 1)).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from charrnn.model import CharRNN, ModelConfig, detach_hidden


def lab_loop_throughput(
    model_config: ModelConfig,
    ids: np.ndarray,
    seq_len: int,
    seconds: float,
    warmup_steps: int = 5,
    device: str = "cpu",
    lr: float = 1e-3,
    seed: int = 0,
) -> tuple[int, float]:
    """Train with the lab's batch-1 loop for about `seconds` after `warmup_steps` untimed steps.

    Returns (characters trained in the timed part, its wall-clock seconds).
    """
    if warmup_steps < 1:
        raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}")
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    data = torch.from_numpy(np.array(ids)).long().to(device)
    if len(data) < seq_len + 102:
        raise ValueError(f"text of {len(data)} chars is too short for the lab loop at seq_len={seq_len}")
    model = CharRNN(model_config).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    loc, hidden, losses = int(gen.integers(100)), None, []
    steps, t0 = 0, None
    while True:
        if loc + seq_len + 1 >= len(data):  # the handout's next epoch
            loc, hidden = int(gen.integers(100)), None
        x = data[loc : loc + seq_len].view(1, -1)
        y = data[loc + 1 : loc + seq_len + 1]
        logits, hidden = model(x, hidden)
        hidden = detach_hidden(hidden)
        loss = loss_fn(logits.squeeze(0), y)
        losses.append(loss.item())  # the per-step host sync the handout has
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loc += seq_len
        steps += 1
        if steps == warmup_steps:
            t0 = time.perf_counter()
        elif t0 is not None and time.perf_counter() - t0 >= seconds:
            return (steps - warmup_steps) * seq_len, time.perf_counter() - t0
