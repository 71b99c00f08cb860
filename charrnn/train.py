"""Training: the lab's teacher-forced loop, batched over parallel streams, with truncated BPTT.

The training text is cut into `batch_size` contiguous streams; each step takes the next `seq_len`
characters of every stream and carries the hidden state over from the previous chunk, exactly as
the lab's batch-1 loop does for its single stream. The budget is counted in training characters.
At `evals_per_trial` evenly spaced points the trainer scores bits/char on the validation text,
samples some text and hands an `EvalRecord` to `report`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.checkpoint import MODEL_FILE, STATE_FILE, atomic_torch_save, model_payload
from charrnn.config import TrainConfig
from charrnn.corpus import Vocab
from charrnn.metrics import LN2, lr_at
from charrnn.model import CharRNN, detach_hidden
from charrnn.sample import sample

EVAL_STREAMS = 64
EVAL_CHUNK = 256
# Steps between host syncs to check the loss. Each check costs a device sync, which is free on CPU.
CHECK_EVERY = {"cpu": 1, "cuda": 25}


@dataclass
class EvalRecord:
    """What the trainer reports at each evaluation."""

    chars_seen: int
    wall_s: float
    train_bpc: float  # mean over the steps since the previous evaluation
    val_bpc: float
    best_val_bpc: float
    lr: float
    sample: str
    sample_temperature: float
    is_best: bool
    done: bool = False  # the last record of a trial
    diverged: bool = False
    final_samples: dict[float, str] = field(default_factory=dict)  # from the best weights, on the last record
    eval_s: float = 0.0  # time spent evaluating so far
    save: Callable[[Path], None] | None = field(default=None, repr=False)  # writes model.pt + state.pt


@dataclass
class TrainResult:
    status: str  # "completed" or "diverged"
    best_val_bpc: float
    best_chars_seen: int
    chars_seen: int
    wall_s: float
    eval_s: float
    num_params: int
    device: str
    records: list[EvalRecord]
    peak_gpu_mem_bytes: int = 0

    @property
    def chars_per_s(self) -> float:
        return self.chars_seen / max(self.wall_s - self.eval_s, 1e-9)


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def as_streams(ids: torch.Tensor, n_streams: int) -> torch.Tensor:
    """Cut a 1-D id tensor into `n_streams` equal contiguous rows (the tail that does not fit is dropped)."""
    length = len(ids) // n_streams
    return ids[: n_streams * length].view(n_streams, length)


@torch.inference_mode()
def evaluate_bpc(model: CharRNN, ids: torch.Tensor, bf16: bool = False) -> float:
    """Bits per character of `model` predicting `ids` (each char from the ones before it).

    The text is scored as EVAL_STREAMS contiguous streams in chunks with the hidden state carried,
    so every trial is scored on the same characters with the same context.
    """
    was_training = model.training
    model.eval()
    n_streams = max(1, min(EVAL_STREAMS, (len(ids) - 1) // 2))
    streams = as_streams(ids, n_streams)
    total = torch.zeros((), dtype=torch.float64, device=ids.device)
    count = 0
    hidden = None
    for start in range(0, streams.shape[1] - 1, EVAL_CHUNK):
        x = streams[:, start : start + EVAL_CHUNK].long()
        y = streams[:, start + 1 : start + EVAL_CHUNK + 1].long()
        x = x[:, : y.shape[1]]
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits, hidden = model(x, hidden)
        total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
        count += y.numel()
    model.train(was_training)
    return float(total) / count / LN2


def train(
    config: TrainConfig,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    vocab: Vocab,
    report: Callable[[EvalRecord], object] = lambda record: None,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """Train one CharRNN for `config.budget_chars` characters; returns a `TrainResult`.

    Args:
        config: the trial's configuration.
        train_ids: the encoded training text; its first `config.train_chars` characters are used.
        val_ids: the encoded validation text; its first `config.val_chars` characters are scored.
        vocab: the corpus vocabulary (saved with checkpoints).
        report: called with an `EvalRecord` at each evaluation; `record.save(dir)` writes a checkpoint.
        resume_from: a directory holding a `state.pt` written by `record.save`, to continue from.

    A loss that turns NaN/inf or explodes ends training with status "diverged" (reported with
    `diverged=True` and a NaN val_bpc); it does not raise.
    """
    t_start = time.perf_counter()
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(config.threads)
    gen = np.random.default_rng(config.seed)

    n_train = config.train_chars or len(train_ids)
    n_train = min(n_train, len(train_ids))
    # A private copy: arrays from Ray's object store are read-only.
    streams = as_streams(torch.from_numpy(np.array(train_ids[:n_train])).to(device), config.batch_size)
    if streams.shape[1] < config.seq_len + 1:
        raise ValueError(
            f"train_chars={n_train} is too short for batch_size={config.batch_size} x seq_len={config.seq_len}"
        )
    val = torch.from_numpy(np.array(val_ids[: config.val_chars or len(val_ids)])).to(device)
    if len(val) < 2:
        raise ValueError("validation text is too short to score")

    model = CharRNN(config.model_config(len(vocab))).to(device)
    optimizer = make_optimizer(model, config)
    vocab_size = len(vocab)
    explode_nats = 3.0 * math.log(max(vocab_size, 2))  # three times worse than guessing uniformly

    chars_seen, pos, wall_offset, eval_s = 0, 0, 0.0, 0.0
    best_val, best_chars, best_state = math.inf, 0, None
    if resume_from is not None:
        state = torch.load(Path(resume_from) / STATE_FILE, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        chars_seen, pos = int(state["chars_seen"]), int(state["pos"])
        wall_offset, eval_s = float(state["wall_s"]), float(state["eval_s"])
        best_val, best_chars = float(state["best_val_bpc"]), int(state["best_chars_seen"])
        best_state = state["best_model"]
        gen = np.random.default_rng([config.seed, chars_seen])
        torch.manual_seed(config.seed + chars_seen)

    def elapsed() -> float:
        return wall_offset + time.perf_counter() - t_start

    def save(directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = dict(chars_seen=best_chars, val_bpc=best_val)
        atomic_torch_save(
            model_payload(model.config, vocab, best_state or model.state_dict(), config.to_dict(), **meta),
            directory / MODEL_FILE,
        )
        atomic_torch_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "chars_seen": chars_seen,
                "pos": pos,
                "wall_s": elapsed(),
                "eval_s": eval_s,
                "best_val_bpc": best_val,
                "best_chars_seen": best_chars,
                "best_model": best_state or model.state_dict(),
            },
            directory / STATE_FILE,
        )

    records: list[EvalRecord] = []
    check_every = CHECK_EVERY.get(device.type, 25)
    step_losses = torch.zeros(check_every, device=device)
    loss_sum, loss_steps, pending = 0.0, 0, 0
    chars_per_step = config.batch_size * config.seq_len
    next_eval = (chars_seen // config.eval_every + 1) * config.eval_every
    hidden = None
    lr = lr_at(chars_seen, config.budget_chars, config.lr, config.lr_schedule)
    model.train()
    status = "completed"
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=config.bf16)

    def report_eval(done: bool) -> None:
        nonlocal best_val, best_chars, best_state, eval_s, loss_sum, loss_steps
        t_eval = time.perf_counter()
        val_bpc = evaluate_bpc(model, val, config.bf16)
        is_best = val_bpc < best_val
        if is_best:
            best_val, best_chars = val_bpc, chars_seen
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        seed = config.seed * 1_000_003 + chars_seen
        text = sample(model, vocab, config.prime, config.sample_chars, config.sample_temperature, seed)
        finals = {}
        if done and best_state is not None:
            best_model = CharRNN(model.config).to(device)
            best_model.load_state_dict(best_state)
            finals = {
                t: sample(best_model, vocab, config.prime, config.final_sample_chars, t, config.seed)
                for t in config.final_temperatures
            }
        model.train()
        eval_s += time.perf_counter() - t_eval
        train_bpc = loss_sum / loss_steps / LN2 if loss_steps else math.nan
        loss_sum, loss_steps = 0.0, 0
        record = EvalRecord(chars_seen, elapsed(), train_bpc, val_bpc, best_val, lr, text,
                            config.sample_temperature, is_best, done=done, final_samples=finals,
                            eval_s=eval_s, save=save)
        records.append(record)
        report(record)

    while chars_seen < config.budget_chars:
        if pos + config.seq_len + 1 > streams.shape[1]:
            # A new pass over the text: start at a random offset, as the lab does, with a fresh state.
            pos, hidden = int(gen.integers(0, config.seq_len)), None
        x = streams[:, pos : pos + config.seq_len].long()
        y = streams[:, pos + 1 : pos + config.seq_len + 1].long()
        with torch.autocast(**amp):
            logits, hidden = model(x, hidden)
        loss = F.cross_entropy(logits.float().reshape(-1, vocab_size), y.reshape(-1))
        hidden = detach_hidden(hidden)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        if config.lr_schedule != "constant":
            lr = lr_at(chars_seen, config.budget_chars, config.lr, config.lr_schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
        optimizer.step()
        pos += config.seq_len
        chars_seen += chars_per_step
        step_losses[pending] = loss.detach()
        pending += 1

        at_eval = chars_seen >= next_eval or chars_seen >= config.budget_chars
        if pending == check_every or at_eval:
            losses = step_losses[:pending].tolist()  # the one host sync per `check_every` steps
            pending = 0
            bad = [i for i, v in enumerate(losses) if not math.isfinite(v) or v > explode_nats]
            if bad:
                chars_seen -= (len(losses) - bad[0] - 1) * chars_per_step  # the step where it happened
                status = "diverged"
                record = EvalRecord(chars_seen, elapsed(), math.nan, math.nan, best_val, lr, "",
                                    config.sample_temperature, False, done=True, diverged=True,
                                    eval_s=eval_s, save=save)
                records.append(record)
                report(record)
                break
            loss_sum += sum(losses)
            loss_steps += len(losses)

        if at_eval:
            report_eval(done=chars_seen >= config.budget_chars)
            next_eval += config.eval_every

    if status == "completed" and not records:
        # Resumed from a checkpoint taken at the very end (the driver died before it heard of it):
        # report the final evaluation again so that the trial still ends with its results.
        report_eval(done=True)

    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return TrainResult(status, best_val, best_chars, chars_seen, elapsed(), eval_s, model.num_params(),
                       str(device), records, peak)
