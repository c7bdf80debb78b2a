"""A tiny decoder-shaped model for ``align trace modules`` tests: builds it, runs forwards, prints.

The model needs no tracing code: the tracer finds it from outside. ``--fail`` raises after the
forwards, to test that a failing program still yields its trace and a non-zero exit.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm(x))
        return x + self.mlp(x)


class Tiny(nn.Module):
    def __init__(self, n_layers: int, dim: int = 16, vocab: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(Block(dim) for _ in range(n_layers))
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        for layer in self.layers:
            h = layer(h)
        return self.head(h)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--forwards", type=int, default=1)
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args()
    model = Tiny(args.layers).eval()
    tokens = torch.randint(0, 32, (1, 4))
    with torch.no_grad():
        for _ in range(args.forwards):
            logits = model(tokens)
    print("logits", tuple(logits.shape))
    if args.fail:
        raise RuntimeError("failing on purpose")


if __name__ == "__main__":
    main()
