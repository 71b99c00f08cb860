"""One frozen configuration per trial, built once from a flat dict (the Tune config)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from charrnn.model import CELLS, ModelConfig

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
LR_SCHEDULES = ("constant", "cosine")
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
    "optimizer",
    "seq_len",
    "batch_size",
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
    optimizer: str = "adam"
    seq_len: int = 50
    batch_size: int = 64
    grad_clip: float = 5.0  # max gradient norm; 0 disables clipping
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    # How the trial runs.
    budget_chars: int = 1_000_000  # training characters a full trial sees
    evals_per_trial: int = 10
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
        for name in ("train_chars", "val_chars", "grad_clip", "weight_decay"):
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
        return d

    @property
    def bf16(self) -> bool:
        """Whether this trial trains under bf16 autocast ("auto" resolved for its device)."""
        if self.precision == "auto":
            return bf16_is_native(self.device)
        return self.precision == "bf16"

    @property
    def eval_every(self) -> int:
        """Training characters between evaluations; the last evaluation lands on the budget."""
        return max(1, self.budget_chars // self.evals_per_trial)


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
