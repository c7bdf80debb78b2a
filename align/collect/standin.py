"""A stand-in op for the collector: one linear layer, small and real, so the whole collection path
(grid, benchmark, writers, locking, resume, aiconfigurator layout) runs on any machine."""

from __future__ import annotations

HIDDEN = 256


def describe(phase: str, size: int, batch: int, tp: int) -> dict:
    return {"model": "standin", "dtype": "float32", "hidden": HIDDEN, "num_heads": 8 // tp, "batch_size": batch,
            "isl": size if phase == "context" else 1, "tp_size": 1, "step": 0 if phase == "context" else size}


def estimate(phase: str, size: int, batch: int, tp: int) -> int:
    return 4 * (HIDDEN * HIDDEN + 2 * batch * size * HIDDEN)


def build(phase: str, size: int, batch: int, tp: int, *, device: str = "cpu", dtype=None):
    import torch

    gen = torch.Generator(device="cpu").manual_seed(0)
    width = HIDDEN // tp
    w = torch.randn(HIDDEN, width, generator=gen).to(device)
    x = torch.randn(batch * (size if phase == "context" else 1), HIDDEN, generator=gen).to(device)
    out = torch.empty(x.shape[0], width, device=device)

    def call() -> None:
        torch.matmul(x, w, out=out)

    return call
