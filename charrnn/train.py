"""Training: the lab's teacher-forced loop, batched over parallel streams, with truncated BPTT.

The training text is cut into `batch_size` contiguous streams; each step takes the next `seq_len`
characters of every stream and carries the hidden state over from the previous chunk, exactly as
the lab's batch-1 loop does for its single stream. The budget is counted in training characters.
At the configured evaluation points (`TrainConfig.eval_points`) the trainer scores bits/char on the
validation text, samples some text, writes a checkpoint (when given a directory) and hands an
`EvalRecord` to `report`. Under a time limit (`TrainConfig.time_limit_s`) a `charrnn.pacer.Pacer` decides the budget
once, early, and the loop asks it after every step how far it may go.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.checkpoint import MODEL_FILE, STATE_FILE, atomic_torch_save, model_payload
from charrnn.config import TrainConfig
from charrnn.corpus import Vocab
from charrnn.metrics import LN2, lr_at
from charrnn.model import CharRNN, ModelConfig, detach_hidden
from charrnn.pacer import BudgetDecision, Pacer
from charrnn.sample import sample_many

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
    val_bpc: float  # this evaluation
    best_val_bpc: float  # the best evaluation so far
    lr: float
    sample: str
    sample_temperature: float
    is_best: bool
    budget_chars: int = 0  # the budget the lr schedule spans (decided to fit a time limit, if one is set)
    budget_decision: BudgetDecision | None = None  # what the time limit made of the budget (None without one)
    done: bool = False  # the last record of a trial
    diverged: bool = False
    stopped_early: bool = False  # done because `patience` evaluations brought no new best
    final_samples: dict[float, str] = field(default_factory=dict)  # from the best weights, on the last record
    test_bpc: float = math.nan  # the best weights on the test text, on the last record when a test text is given
    eval_s: float = 0.0  # time spent evaluating so far
    steps: int = 0  # optimizer steps taken (chars_seen / characters per step)


@dataclass
class TrainState:
    """The trainer's progress: everything `state.pt` holds besides the model and optimizer."""

    budget_chars: int
    chars_seen: int = 0
    pos: int = 0  # position in the training streams
    wall_s: float = 0.0  # wall time of earlier attempts (before a resume)
    eval_s: float = 0.0
    best_val_bpc: float = math.inf
    best_chars_seen: int = 0
    evals_since_best: int = 0  # for early stopping
    last_eval_s: float = 0.0  # the cost of the latest evaluation
    budget_decision: BudgetDecision | None = None  # the time limit's decision (`Pacer.decision`), once made

    def add_evaluation(self, val_bpc: float, min_delta: float) -> bool:
        """Count an evaluation at `chars_seen` toward the best so far and early stopping; returns whether it is
        the best (`min_delta` applies to early stopping only)."""
        self.evals_since_best = 0 if is_new_best(val_bpc, self.best_val_bpc, min_delta) else self.evals_since_best + 1
        if val_bpc < self.best_val_bpc:
            self.best_val_bpc, self.best_chars_seen = val_bpc, self.chars_seen
            return True
        return False


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
    test_bpc: float = math.nan
    budget_chars: int = 0
    budget_decision: BudgetDecision | None = None

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


def is_new_best(value: float, best: float, min_delta: float) -> bool:
    """Whether an evaluation counts as an improvement for early stopping."""
    return math.isfinite(value) and value < best - min_delta


def should_stop_early(evals_since_best: int, patience: int, chars_seen: int = 0, budget_chars: int = 0) -> bool:
    """Early stopping: `patience` evaluations in a row without a new best (patience 0 never stops), once half the
    budget is behind. In the first half of a cosine schedule the learning rate is still near its peak, and a model
    that has stopped improving there usually improves as it decays."""
    return patience > 0 and evals_since_best >= patience and 2 * chars_seen >= budget_chars


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


def save_checkpoint(directory: str | Path, config: TrainConfig, vocab: Vocab, model: CharRNN,
                    optimizer: torch.optim.Optimizer, state: TrainState, best_model: dict | None,
                    wall_s: float) -> None:
    """Write `model.pt` (the best weights, for sampling) and `state.pt` (everything to resume from)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    best = best_model or model.state_dict()
    atomic_torch_save(
        model_payload(model.config, vocab, best, config.to_dict(), chars_seen=state.best_chars_seen,
                      val_bpc=state.best_val_bpc),
        directory / MODEL_FILE,
    )
    atomic_torch_save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "best_model": best,
         **asdict(state), "wall_s": wall_s},
        directory / STATE_FILE,
    )


class CheckpointError(RuntimeError):
    """A `state.pt` that cannot be resumed from (missing, truncated, corrupt or of another model)."""


def load_checkpoint(directory: str | Path, model: CharRNN, optimizer: torch.optim.Optimizer,
                    device: torch.device) -> tuple[TrainState, dict]:
    """Restore model and optimizer from `state.pt`; returns the trainer state and the best weights.

    Raises CheckpointError, naming the file, when it cannot be resumed from.
    """
    path = Path(directory) / STATE_FILE
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        names = {f.name for f in fields(TrainState)}
        state = TrainState(**{k: v for k, v in saved.items() if k in names})
        if state.budget_decision is not None:
            state.budget_decision = BudgetDecision.from_dict(state.budget_decision)
        return state, saved["best_model"]
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"cannot resume from {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc


def end_chars(config: TrainConfig, budget_chars: int) -> int:
    """Where training ends: at `stop_chars` if set, else at the budget."""
    return min(config.stop_chars or budget_chars, budget_chars)


def next_eval_after(config: TrainConfig, budget_chars: int, chars: int, last_eval: int = 0) -> int:
    """The first evaluation point past `chars` (the end of training, once past the last one).

    Evenly spaced points stay at least half their spacing past the previous evaluation, `last_eval`: a budget
    cut to a time limit after an evaluation (`charrnn.pacer`) moves the grid, and its next point could otherwise
    fall a few steps behind it (a final model evaluated 15 times in 6 minutes instead of 10 in 8.5).
    """
    points = config.eval_points(budget_chars)
    if not config.eval_at:
        chars = max(chars, last_eval + max(1, budget_chars // config.evals_per_trial) // 2)
    return next((p for p in points if p > chars), points[-1])


def train_step(model: CharRNN, optimizer: torch.optim.Optimizer, chunk: torch.Tensor, hidden, config: TrainConfig,
               lr: float) -> tuple[torch.Tensor, object]:
    """One step on `chunk` (streams x seq_len+1); returns the loss, still on the device, and the detached state."""
    x, y = chunk[:, :-1].long(), chunk[:, 1:].long()
    with torch.autocast(chunk.device.type, dtype=torch.bfloat16, enabled=config.bf16):
        logits, hidden = model(x, hidden)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    return loss.detach(), detach_hidden(hidden)


def evaluate(model: CharRNN, val: torch.Tensor, vocab: Vocab, config: TrainConfig,
             chars_seen: int) -> tuple[float, str]:
    """Bits/char on the validation text and a sample (seeded by the point in training); returns both."""
    val_bpc = evaluate_bpc(model, val, config.bf16)
    seed = config.seed * 1_000_003 + chars_seen
    text = sample_many(model, vocab, config.prime, config.sample_chars, [config.sample_temperature], seed)[0]
    model.train()
    return val_bpc, text


def final_evaluation(best_model: dict, model_config: ModelConfig, vocab: Vocab, config: TrainConfig,
                     test_ids: np.ndarray | None, device: torch.device) -> tuple[dict[float, str], float]:
    """The final samples from the best weights and, given a test text, their test bits/char (else NaN)."""
    best = CharRNN(model_config).to(device)
    best.load_state_dict(best_model)
    temps = list(config.final_temperatures)
    finals = dict(zip(temps, sample_many(best, vocab, config.prime, config.final_sample_chars, temps, config.seed)))
    if test_ids is None:
        return finals, math.nan
    return finals, evaluate_bpc(best, torch.from_numpy(np.array(test_ids)).to(device), config.bf16)


def train(
    config: TrainConfig,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    vocab: Vocab,
    report: Callable[[EvalRecord], object] = lambda record: None,
    resume_from: str | Path | None = None,
    test_ids: np.ndarray | None = None,
    checkpoint_dir: str | Path | None = None,
    init_weights: dict | None = None,
) -> TrainResult:
    """Train one CharRNN for `config.budget_chars` characters; returns a `TrainResult`.

    Args:
        config: the trial's configuration.
        train_ids: the encoded training text; its first `config.train_chars` characters are used.
        val_ids: the encoded validation text; its first `config.val_chars` characters are scored.
        vocab: the corpus vocabulary (saved with checkpoints).
        report: called with an `EvalRecord` at each evaluation (and once on divergence).
        resume_from: a checkpoint directory (written through `checkpoint_dir`) to continue from.
        test_ids: an encoded test text, scored once with the best weights when training ends
            (`TrainResult.test_bpc` and the last record's `test_bpc`); None during a search.
        checkpoint_dir: where to write `model.pt` and `state.pt` (`save_checkpoint`) before each report, so that
            the files there always match the record being reported; None writes nothing.
        init_weights: a state dict of this configuration's model to beat (a search trial's best weights): scored on
            the validation text before the first step, they count as the best so far, so the weights this run
            hands back are never worse on it than those. Training itself starts from a fresh initialization:
            restarting a trial's weights at the schedule's peak rate undid its progress (BENCHMARKS.md, "The final
            stage alone"). Ignored on a resume.

    A loss that turns NaN/inf or explodes, or a validation score half a bit/char worse than a uniform guess, ends
    training with status "diverged" (reported with `diverged=True` and a NaN val_bpc); it does not raise.
    """
    loop = _start(config, train_ids, val_ids, vocab, resume_from, init_weights)
    records: list[EvalRecord] = []
    while True:
        # Step, unless a resume starts at the end: its last report may never have reached the driver, so the
        # last evaluation is made and reported again.
        if loop.state.chars_seen < end_chars(config, loop.state.budget_chars):
            _step(loop, config)
            if loop.pacer is not None and loop.pacer.starts_over:
                loop = _start_over(loop, config, train_ids, val_ids, vocab, init_weights)
                continue
        at_end = loop.state.chars_seen >= end_chars(config, loop.state.budget_chars)
        at_eval = loop.state.chars_seen >= loop.next_eval or at_end
        if loop.pending < loop.check_every and not at_eval:
            continue
        if _check(loop):
            record = _divergence(loop, config)
        elif at_eval:
            record = _evaluate(loop, config, vocab, at_end, test_ids)
        else:
            continue
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, config, vocab, loop.model, loop.optimizer, loop.state, loop.best_model,
                            record.wall_s)
        records.append(record)
        report(record)
        if record.done:
            break
        loop.last_eval = loop.state.chars_seen
        loop.next_eval = next_eval_after(config, loop.state.budget_chars, loop.state.chars_seen, loop.last_eval)
        _restart_point(loop, config)
    return _result(loop, records)


def _start_over(loop: _Loop, config: TrainConfig, train_ids: np.ndarray, val_ids: np.ndarray, vocab: Vocab,
                init_weights: dict | None) -> _Loop:
    """The warm-up has decided the budget (charrnn.pacer): begin again from the initial weights, data order and
    model to beat, with that budget, exactly as a run given it does; the clock and the evaluations' time go on."""
    decision, pacer = loop.state.budget_decision, loop.pacer
    fresh = _start(replace(config, budget_chars=decision.budget_chars, time_limit_s=0.0), train_ids, val_ids, vocab,
                   None, init_weights)
    fresh.state.budget_decision, fresh.pacer, fresh.t_zero = decision, pacer, loop.t_zero
    fresh.state.eval_s += loop.state.eval_s
    pacer.started_over(time.perf_counter() - fresh.t_zero, fresh.state.eval_s)
    return fresh


def _restart_point(loop: _Loop, config: TrainConfig) -> None:
    """Go on from a checkpoint exactly as a resume from it would: the data order's and torch's generators seeded
    by the point in training, and a fresh hidden state. So a trial killed and resumed from its checkpoint trains on
    as the uninterrupted one did, bit for bit on one machine."""
    loop.gen = np.random.default_rng([config.seed, loop.state.chars_seen])
    torch.manual_seed(config.seed + loop.state.chars_seen)
    loop.hidden = None


@dataclass
class _Loop:
    """What the training loop carries from one phase to the next, besides `TrainState` (which a checkpoint holds)."""

    model: CharRNN
    optimizer: torch.optim.Optimizer
    streams: torch.Tensor  # the training text as `batch_size` rows
    val: torch.Tensor
    state: TrainState
    best_model: dict | None
    gen: np.random.Generator  # where a new pass over the text starts
    device: torch.device
    t_zero: float  # perf_counter at the run's start; the wall time counts the attempts before a resume
    chars_per_step: int
    check_every: int
    step_losses: torch.Tensor  # the losses of the steps since the last check, still on the device
    lr: float
    last_eval: int  # chars_seen at the latest evaluation
    next_eval: int
    explode_nats: float  # a loss above this is divergence: three times worse than guessing uniformly
    # A model scored half a bit/char worse than a uniform guess on the validation text has diverged too, though its
    # loss is finite: an untrained model scores a uniform guess plus at most ~0.25 (its logits' init variance),
    # and one that learned and then blew up (SGD at 5-8x its usual rate scored 7.5 to 17 bits/char) is not a result
    # to compare with others.
    useless_bpc: float
    pacer: Pacer | None = None  # under a time limit: how far training may go
    hidden: object = None
    pending: int = 0  # steps since the last check
    loss_sum: float = 0.0  # over the steps since the last evaluation
    loss_steps: int = 0


def _start(config: TrainConfig, train_ids: np.ndarray, val_ids: np.ndarray, vocab: Vocab,
           resume_from: str | Path | None, init_weights: dict | None) -> _Loop:
    """Seed, put the texts on the device, build the model and optimizer, and resume or score the model to beat."""
    t_start = time.perf_counter()
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(config.threads)
    gen = np.random.default_rng(config.seed)

    n_train = min(config.train_chars or len(train_ids), len(train_ids))
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
    state, best_model = TrainState(budget_chars=config.budget_chars), None
    if resume_from is not None:
        state, best_model = load_checkpoint(resume_from, model, optimizer, device)
        gen = np.random.default_rng([config.seed, state.chars_seen])
        torch.manual_seed(config.seed + state.chars_seen)
    elif init_weights is not None:
        best_model = incumbent(model.config, init_weights, val, config, state, device)
    check_every = CHECK_EVERY.get(device.type, 25)
    pacer = _pacer(config, state)
    loop = _Loop(model=model, optimizer=optimizer, streams=streams, val=val, state=state, best_model=best_model,
                 gen=gen, device=device, t_zero=t_start - state.wall_s,
                 chars_per_step=config.batch_size * config.seq_len, check_every=check_every,
                 step_losses=torch.zeros(check_every, device=device),
                 lr=lr_at(state.chars_seen, state.budget_chars, config.lr, config.lr_schedule),
                 last_eval=state.chars_seen,
                 next_eval=next_eval_after(config, state.budget_chars, state.chars_seen, state.chars_seen),
                 explode_nats=3.0 * math.log(max(len(vocab), 2)), useless_bpc=math.log2(max(len(vocab), 2)) + 0.5,
                 pacer=pacer)
    model.train()
    return loop


def _pacer(config: TrainConfig, state: TrainState) -> Pacer | None:
    """The pacer of a run with a time limit (None without one), with the decision an earlier attempt made or, for
    a replayed plan (`decided_chars_per_s`), the one given: `budget_chars` as decided at that rate."""
    if not config.time_limit_s:
        return None
    given = (BudgetDecision(budget_chars=config.budget_chars, chars_per_s=config.decided_chars_per_s, given=True)
             if config.decided_chars_per_s > 0 else None)
    pacer = Pacer(config.time_limit_s, state.budget_chars, config.batch_size * config.seq_len,
                  decision=state.budget_decision or given, eval_s=state.last_eval_s, cap_chars=config.budget_chars)
    state.budget_decision = pacer.decision
    return pacer


def _step(loop: _Loop, config: TrainConfig) -> None:
    """One optimizer step on the next `seq_len` characters of every stream; then, under a time limit, ask the pacer
    how far training may go."""
    state = loop.state
    if state.pos + config.seq_len + 1 > loop.streams.shape[1]:
        # A new pass over the text: start at a random offset, as the lab does, with a fresh state.
        state.pos, loop.hidden = int(loop.gen.integers(0, config.seq_len)), None
    loop.lr = lr_at(state.chars_seen, state.budget_chars, config.lr, config.lr_schedule)
    chunk = loop.streams[:, state.pos : state.pos + config.seq_len + 1]
    loop.step_losses[loop.pending], loop.hidden = train_step(loop.model, loop.optimizer, chunk, loop.hidden, config,
                                                             loop.lr)
    state.pos += config.seq_len
    state.chars_seen += loop.chars_per_step
    loop.pending += 1
    if loop.pacer is not None:
        _pace(loop, config)


def _pace(loop: _Loop, config: TrainConfig) -> None:
    """The budget the pacer allows after this step; the evenly spaced evaluation points move with it."""
    state = loop.state
    budget = loop.pacer.budget(state.chars_seen, time.perf_counter() - loop.t_zero, state.eval_s)
    state.budget_decision = loop.pacer.decision
    if budget != state.budget_chars:
        state.budget_chars = budget
        loop.next_eval = next_eval_after(config, state.budget_chars, state.chars_seen - 1, loop.last_eval)


def _check(loop: _Loop) -> bool:
    """Bring the pending steps' losses to the host (the one sync per `check_every` steps); True when one of them
    diverged, with `chars_seen` wound back to that step."""
    losses = loop.step_losses[: loop.pending].tolist()
    loop.pending, loop.loss_sum, loop.loss_steps = 0, loop.loss_sum + sum(losses), loop.loss_steps + len(losses)
    bad = [i for i, v in enumerate(losses) if not math.isfinite(v) or v > loop.explode_nats]
    if bad:
        loop.state.chars_seen -= (len(losses) - bad[0] - 1) * loop.chars_per_step
    return bool(bad)


def _divergence(loop: _Loop, config: TrainConfig) -> EvalRecord:
    """The last record of a run that diverged: the step where it happened, with no evaluation."""
    state = loop.state
    return EvalRecord(chars_seen=state.chars_seen, steps=state.chars_seen // loop.chars_per_step,
                      wall_s=time.perf_counter() - loop.t_zero, train_bpc=math.nan, val_bpc=math.nan,
                      best_val_bpc=state.best_val_bpc, lr=loop.lr, sample="",
                      sample_temperature=config.sample_temperature, is_best=False, budget_chars=state.budget_chars,
                      budget_decision=state.budget_decision, done=True, diverged=True, eval_s=state.eval_s)


def _evaluate(loop: _Loop, config: TrainConfig, vocab: Vocab, at_end: bool,
              test_ids: np.ndarray | None) -> EvalRecord:
    """Score, sample and (at the end, or when early stopping ends the run) hand the best weights' final samples
    and test score over; keeps the best weights so far. A useless score (`_Loop.useless_bpc`) ends the run as
    diverged before it counts: it is never the best, and the best weights so far stay. A run that ends with its best
    score no better than a uniform guess learned nothing, and ends as diverged too (its scores stay on record)."""
    state = loop.state
    train_bpc = loop.loss_sum / loop.loss_steps / LN2 if loop.loss_steps else math.nan
    t_eval = time.perf_counter()
    val_bpc, text = evaluate(loop.model, loop.val, vocab, config, state.chars_seen)
    useless = not val_bpc <= loop.useless_bpc  # NaN too: diverged, though its loss is finite
    is_best = not useless and state.add_evaluation(val_bpc, config.min_delta)
    if is_best:
        loop.best_model = {k: v.detach().clone() for k, v in loop.model.state_dict().items()}
    stopped_early = not useless and not at_end and should_stop_early(state.evals_since_best, config.patience,
                                                                     state.chars_seen, state.budget_chars)
    learned_nothing = ((at_end or stopped_early) and not useless
                       and not state.best_val_bpc < math.log2(max(len(vocab), 2)))
    finals, test_bpc = {}, math.nan
    if (at_end or stopped_early) and not useless and not learned_nothing and loop.best_model is not None:
        finals, test_bpc = final_evaluation(loop.best_model, loop.model.config, vocab, config, test_ids, loop.device)
    state.last_eval_s = time.perf_counter() - t_eval
    state.eval_s += state.last_eval_s
    if loop.pacer is not None:  # the evaluations still to come, and the last one's extra work (samples, test text)
        loop.pacer.evaluated(state.last_eval_s,
                             sum(p > state.chars_seen for p in config.eval_points(state.budget_chars)) + 1)
    loop.loss_sum, loop.loss_steps = 0.0, 0
    return EvalRecord(chars_seen=state.chars_seen, steps=state.chars_seen // loop.chars_per_step,
                      wall_s=time.perf_counter() - loop.t_zero, train_bpc=train_bpc,
                      val_bpc=math.nan if useless else val_bpc, best_val_bpc=state.best_val_bpc, lr=loop.lr,
                      sample=text, sample_temperature=config.sample_temperature, is_best=is_best,
                      budget_chars=state.budget_chars, budget_decision=state.budget_decision,
                      done=at_end or stopped_early or useless, diverged=useless or learned_nothing,
                      stopped_early=stopped_early, final_samples=finals, test_bpc=test_bpc, eval_s=state.eval_s)


def _result(loop: _Loop, records: list[EvalRecord]) -> TrainResult:
    state = loop.state
    return TrainResult(
        status="diverged" if records[-1].diverged else "completed", best_val_bpc=state.best_val_bpc,
        best_chars_seen=state.best_chars_seen, chars_seen=state.chars_seen,
        wall_s=time.perf_counter() - loop.t_zero, eval_s=state.eval_s, num_params=loop.model.num_params(),
        device=str(loop.device), records=records,
        peak_gpu_mem_bytes=torch.cuda.max_memory_allocated(loop.device) if loop.device.type == "cuda" else 0,
        test_bpc=records[-1].test_bpc, budget_chars=state.budget_chars, budget_decision=state.budget_decision)


def incumbent(model_config: ModelConfig, weights: dict, val: torch.Tensor, config: TrainConfig, state: TrainState,
              device: torch.device) -> dict:
    """Score `weights` on `val` and count them as the best so far (the model to beat); returns them."""
    model = CharRNN(model_config).to(device)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ValueError(f"the weights to beat do not fit this configuration's model: {exc}".splitlines()[0]) from exc
    t_eval = time.perf_counter()
    state.add_evaluation(evaluate_bpc(model, val, config.bf16), config.min_delta)
    state.eval_s += time.perf_counter() - t_eval
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
