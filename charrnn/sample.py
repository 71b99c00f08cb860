"""Temperature sampling from a trained CharRNN.

    python -m charrnn.sample --run RUN_DIR --length 500 --temperature 0.8 --prime "Holmes"
    python -m charrnn.sample --checkpoint RUN/.../model.pt
"""
from __future__ import annotations

import argparse
import sys
import unicodedata
from pathlib import Path

import torch

from charrnn.corpus import Vocab
from charrnn.model import CharRNN


@torch.inference_mode()
def sample_many(
    model: CharRNN,
    vocab: Vocab,
    prime: str,
    length: int,
    temperatures: list[float] | tuple[float, ...],
    seed: int = 0,
) -> list[str]:
    """Generate `length` characters after `prime` at each temperature, all in one batch.

    One forward pass per character serves every temperature (a row each), and the drawn characters stay on
    the model's device until the end: no host sync per character, which on a GPU costs more than the step.
    Characters of `prime` outside the vocabulary raise ValueError. Temperature 0 means greedy.
    """
    if not prime:
        raise ValueError("prime must not be empty")
    missing = sorted(set(prime) - set(vocab.chars))
    if missing:
        raise ValueError(f"prime has characters outside the model's vocabulary: {missing!r}")
    if any(t < 0 for t in temperatures):
        raise ValueError("temperature must be >= 0")
    if not temperatures:
        return []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    temps = torch.tensor([float(t) for t in temperatures], device=device).unsqueeze(1)
    greedy = temps == 0
    rows = len(temperatures)
    ids = torch.as_tensor(vocab.encode(prime), dtype=torch.long, device=device).unsqueeze(0).expand(rows, -1)
    logits, hidden = model(ids)
    out = torch.empty(rows, length, dtype=torch.long, device=device)
    for i in range(length):
        last = logits[:, -1].float()
        probs = torch.softmax(last / torch.where(greedy, 1.0, temps), dim=-1)
        drawn = torch.multinomial(probs, 1, generator=gen)
        nxt = torch.where(greedy, last.argmax(dim=-1, keepdim=True), drawn)
        out[:, i] = nxt[:, 0]
        logits, hidden = model(nxt, hidden)
    model.train(was_training)
    return [vocab.decode(row) for row in out.cpu().tolist()]


def sample(
    model: CharRNN,
    vocab: Vocab,
    prime: str,
    length: int,
    temperature: float = 0.8,
    seed: int = 0,
) -> str:
    """Generate `length` characters after `prime` (which is not included in the result).

    Characters of `prime` outside the vocabulary raise ValueError. temperature 0 means greedy.
    """
    return sample_many(model, vocab, prime, length, [temperature], seed)[0]


def printable(text: str) -> str:
    """`text` with every control character but newline and tab shown escaped (ESC as `\\x1b`), and the
    Unicode controls that reorder or hide text (bidirectional overrides, zero-width) as `\\u202e`: a model's
    vocabulary comes from whatever text it was trained on, and a terminal obeys escape sequences."""
    return "".join(ch if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf") else _escaped(ch)
                   for ch in text)


def _escaped(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def main(argv: list[str] | None = None) -> int:
    from charrnn.checkpoint import FINAL_MODEL_FILE, load_model

    p = argparse.ArgumentParser(prog="python -m charrnn.sample", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a run directory: sample from its final model (RUN/final_model.pt)")
    src.add_argument("--checkpoint", help="a trial's model.pt, or the directory holding it")
    p.add_argument("--length", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--prime", default=None, help="text to start from (default: the prime the trial sampled with)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.length < 1:
        p.error("--length must be >= 1")
    if args.temperature < 0:
        p.error("--temperature must be >= 0")
    path = Path(args.checkpoint) if args.checkpoint else Path(args.run) / FINAL_MODEL_FILE
    if not path.exists():
        print(f"error: checkpoint not found: {path}" if args.checkpoint else
              f"error: {args.run} has no final model: {path} is written when a study's final stage ends "
              "(--final-chars 0 skips it)", file=sys.stderr)
        return 2
    try:
        model, vocab, payload = load_model(path, args.device)
    except Exception as exc:  # a user's file that is not ours: say so in one line
        print(f"error: cannot load checkpoint {path}: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    prime = args.prime if args.prime is not None else payload.get("train_config", {}).get("prime", "\n")
    try:
        text = sample(model, vocab, prime, args.length, args.temperature, args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(printable(prime + text) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
