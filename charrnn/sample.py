"""Temperature sampling from a trained CharRNN.

    python -m charrnn.sample --checkpoint RUN/.../model.pt --length 500 --temperature 0.8 --prime "Holmes"
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from charrnn.corpus import Vocab
from charrnn.model import CharRNN


@torch.inference_mode()
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
    if not prime:
        raise ValueError("prime must not be empty")
    missing = sorted(set(prime) - set(vocab.chars))
    if missing:
        raise ValueError(f"prime has characters outside the model's vocabulary: {missing!r}")
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.as_tensor(vocab.encode(prime), dtype=torch.long, device=device).unsqueeze(0)
    logits, hidden = model(ids)
    last = logits[0, -1].float().cpu()
    out = []
    for _ in range(length):
        if temperature == 0:
            nxt = int(last.argmax())
        else:
            probs = torch.softmax(last / temperature, dim=-1)
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        out.append(nxt)
        logits, hidden = model(torch.tensor([[nxt]], device=device), hidden)
        last = logits[0, -1].float().cpu()
    model.train(was_training)
    return vocab.decode(out)


def main(argv: list[str] | None = None) -> int:
    from charrnn.checkpoint import load_model

    p = argparse.ArgumentParser(prog="python -m charrnn.sample", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a trial's model.pt, or the directory holding it")
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
    path = Path(args.checkpoint)
    if not path.exists():
        print(f"error: checkpoint not found: {path}", file=sys.stderr)
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
    sys.stdout.write(prime + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
