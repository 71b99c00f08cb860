"""One frozen configuration per trial, built once from a flat dict (the Tune config)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from charrnn.model import CELLS, ModelConfig
from runcontract import batch_size_for

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
LR_SCHEDULES = ("constant", "cosine")
# Each optimizer's usual learning rate for a char-RNN. A study that searches `lr_scale` trains with
# lr = lr_scale x BASE_LR[optimizer], so one range is fair to every optimizer: SGD with momentum needs rates
# 10-100x Adam's, and a range chosen for Adam leaves SGD near uniform guessing (see the study's report).
BASE_LR = {"adam": 2e-3, "adamw": 2e-3, "rmsprop": 1e-3, "sgd": 0.3}
PRECISIONS = ("fp32", "bf16", "auto")  # auto: bf16 autocast where the hardware runs bf16 natively

# Names a spec may search over or fix: the lab's hyperparameters plus a few standard ones.
HYPERPARAMETERS = (
    "train_chars",
    "embedding_dim",
    "hidden_size",
    "num_layers",
    "cell",
    "dropout",
    "lr",
    "lr_scale",
    "optimizer",
    "seq_len",
    "batch_size",
    "step_chars",
    "grad_clip",
    "weight_decay",
    "lr_schedule",
    "precision",
)


@dataclass(frozen=True)
class TrainConfig:
    # Hyperparameters. Defaults are the lab's model, batched.
    train_chars: int = 0  # prefix of the training text to use; 0 = all of it
    embedding_dim: int = 100
    hidden_size: int = 512
    num_layers: int = 3
    cell: str = "rnn_relu"
    dropout: float = 0.0
    lr: float = 1e-3
    lr_scale: float = 0.0  # > 0: lr = lr_scale x BASE_LR[optimizer] (and `lr` is derived from it)
    optimizer: str = "adam"
    seq_len: int = 50
    batch_size: int = 64
    # > 0: characters per optimizer step; batch_size = step_chars / seq_len (rounded, at least 1). A study that
    # fixes it compares every trial after the same number of steps at any budget in characters, whatever its
    # seq_len: a model learns per step, and a budget in characters would favour the settings that step more often.
    step_chars: int = 0
    grad_clip: float = 5.0  # max gradient norm; 0 disables clipping
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    # How the trial runs.
    budget_chars: int = 1_000_000  # training characters a full trial sees; the lr schedule spans it
    evals_per_trial: int = 10  # evenly spaced evaluations, unless `eval_at` lists them
    eval_at: tuple[int, ...] = ()  # character counts to evaluate at (the last evaluation is at the end anyway)
    stop_chars: int = 0  # end training here (0 = budget_chars); the lr schedule still spans budget_chars
    patience: int = 0  # early stopping: end after this many evaluations without a new best (0 = never)
    min_delta: float = 0.0  # bits/char an evaluation must gain to count as a new best for `patience`
    time_limit_s: float = 0.0  # > 0: the budget is decided once, early, to fit in this many seconds (charrnn.pacer)
    # > 0 with a time limit: budget_chars is a decision already made at this training rate (a replayed plan): it is
    # trained as given, and cut only if this machine is markedly slower.
    decided_chars_per_s: float = 0.0
    val_chars: int = 50_000  # validation characters scored at each evaluation (0 = all)
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    precision: str = "fp32"  # "bf16" = bf16 autocast on the forward pass; "auto" = bf16 where native
    sample_chars: int = 320
    sample_temperature: float = 0.8
    final_temperatures: tuple[float, ...] = (0.5, 0.8)
    final_sample_chars: int = 600
    prime: str = "\n"

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        positive = ("embedding_dim", "hidden_size", "num_layers", "seq_len", "batch_size", "budget_chars",
                    "evals_per_trial", "threads", "sample_chars", "final_sample_chars")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.lr_scale < 0:
            raise ValueError(f"lr_scale must be > 0, got {self.lr_scale}")
        if self.step_chars < 0:
            raise ValueError(f"step_chars must be >= 0, got {self.step_chars}")
        if self.step_chars > 0:
            object.__setattr__(self, "batch_size", batch_size_for(self.step_chars, self.seq_len))
        if self.lr_scale > 0:  # the rate the study searched is relative to the optimizer's usual one
            object.__setattr__(self, "lr", self.lr_scale * BASE_LR[self.optimizer])
        if any(b <= a for a, b in zip(self.eval_at, self.eval_at[1:])) or any(c < 1 for c in self.eval_at):
            raise ValueError(f"eval_at must be increasing positive character counts, got {self.eval_at}")
        for name in ("train_chars", "val_chars", "grad_clip", "weight_decay", "stop_chars", "patience",
                     "min_delta", "time_limit_s", "decided_chars_per_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.prime:
            raise ValueError("prime must not be empty")

    @classmethod
    def from_flat(cls, flat: dict) -> TrainConfig:
        """Build from a flat dict; unknown keys are errors, missing keys take defaults."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(flat) - set(known))
        if unknown:
            raise ValueError(f"unknown training config keys: {unknown}")
        values = {}
        for key, value in flat.items():
            default = known[key].default
            # Tune and Optuna hand back numpy scalars and lists; normalise to the declared type.
            if isinstance(default, bool):
                value = bool(value)
            elif isinstance(default, int):
                value = int(value)
            elif isinstance(default, float):
                value = float(value)
            elif key == "eval_at":
                value = tuple(int(v) for v in value)
            elif isinstance(default, tuple):
                value = tuple(float(v) for v in value)
            elif isinstance(default, str):
                value = str(value)
            values[key] = value
        return cls(**values)

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size,
            embedding_dim=self.embedding_dim,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            cell=self.cell,
            dropout=self.dropout,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["final_temperatures"] = list(self.final_temperatures)
        d["eval_at"] = list(self.eval_at)
        return d

    @property
    def bf16(self) -> bool:
        """Whether this trial trains under bf16 autocast ("auto" resolved for its device)."""
        if self.precision == "auto":
            return bf16_is_native(self.device)
        return self.precision == "bf16"

    @property
    def end_chars(self) -> int:
        """Where training ends: `stop_chars` when set, else the budget."""
        return min(self.stop_chars or self.budget_chars, self.budget_chars)

    def eval_points(self, budget_chars: int | None = None) -> list[int]:
        """The character counts at which the trainer evaluates, ending with the end of training.

        `eval_at` when given (ASHA's rungs are among them, so every trial is scored at the same points),
        else `evals_per_trial` evenly spaced points. An evaluation happens at the first step past each point.
        """
        budget = budget_chars or self.budget_chars
        end = min(self.stop_chars or budget, budget)
        if self.eval_at:
            points = [c for c in self.eval_at if c < end]
        else:
            every = max(1, budget // self.evals_per_trial)
            points = list(range(every, end, every))
        return points + [end]


def bf16_is_native(device: str) -> bool:
    """Whether `device` multiplies bf16 matrices natively, so that bf16 autocast is faster than fp32.

    On CUDA that is what torch reports; on x86 CPUs the AVX512-BF16 or AMX-BF16 instructions, on ARM
    the BF16 extension (read from /proc/cpuinfo; elsewhere, e.g. macOS, the answer is no).
    """
    if device.startswith("cuda"):
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
