"""A competing process for the GPU: large bf16 GEMMs back to back for ``--seconds``, so that an E2E
run profiled beside it (not traced: nsys follows only its own process tree) shares the GPU with
work its own profile does not show. Writes ``--ready FILE`` once its first GEMMs ran."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=120.0, help="how long to keep the GPU busy")
    p.add_argument("--size", type=int, default=8192, help="square GEMM size")
    p.add_argument("--ready", type=Path, help="file written once the GPU is busy")
    a = p.parse_args()
    x = torch.randn(a.size, a.size, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(a.size, a.size, device="cuda", dtype=torch.bfloat16)
    end = time.monotonic() + a.seconds
    first = True
    while time.monotonic() < end:
        for _ in range(8):
            x = (x @ y) * 1e-4
        torch.cuda.synchronize()
        if first and a.ready:
            a.ready.write_text("busy\n")
            first = False


if __name__ == "__main__":
    main()
