"""Checkpoints that rebuild a model from the file alone (config + vocabulary + weights).

Everything is stored as tensors, strings and numbers, so `torch.load(..., weights_only=True)` loads it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from charrnn.atomic import atomic_write
from charrnn.corpus import Vocab
from charrnn.model import CharRNN, ModelConfig

FORMAT = "charrnn/1"
MODEL_FILE = "model.pt"  # the trial's best weights, for sampling
STATE_FILE = "state.pt"  # the latest training state, for resuming
FINAL_MODEL_FILE = "final_model.pt"  # in a run directory: the study's final model, for `charrnn.sample --run`


def atomic_torch_save(obj, path: str | Path) -> None:
    """torch.save through `charrnn.atomic`: a reader never sees half a file, and the file is on disk."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def model_payload(model_config: ModelConfig, vocab: Vocab, state_dict: dict, train_config: dict, **meta) -> dict:
    return {
        "format": FORMAT,
        "model_config": model_config.to_dict(),
        "vocab": vocab.chars,
        "train_config": train_config,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},  # saved as it is: no copy on a CPU
        **meta,
    }


def load_model(path: str | Path, device: str = "cpu") -> tuple[CharRNN, Vocab, dict]:
    """Load a `model.pt` (or a directory holding one); returns (model in eval mode, vocab, payload)."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    payload = torch.load(path, map_location=device, weights_only=True)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a charrnn checkpoint (format {payload.get('format')!r})")
    model = CharRNN(ModelConfig(**payload["model_config"])).to(device)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, Vocab(payload["vocab"]), payload
