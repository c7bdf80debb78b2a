#!/usr/bin/env python3
"""What the in-process tracers cost: eager decode steps of the mock E2E model (DSA) with no tracing,
with the top-k tracer (align.trace.topk) and with the module tracer (align.trace.modules: hooks;
hooks + NVTX; hooks + torch.profiler), timed in the same run, modes interleaved round by round so
that drift hits them alike. Reported: median step time and its ratio to the untraced step.

    python bench/trace_overhead.py [--config small|demo] [--device cpu|cuda] [--batch 4] [--prompt 256]
                                   [--steps 32] [--rounds 5] [--layers N] [--format md|json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from align.trace.modules import modules
from align.trace.topk import TopkTraceConfig, TopkTracer
from align_mock.config import named_config
from align_mock.model import DecodeLoop, Transformer

MODES = ["none", "topk", "modules", "modules+nvtx", "modules+profiler"]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_round(model: Transformer, mode: str, args, tmp: Path, round_no: int) -> list[float]:
    """Step times (s) of one decode of ``args.steps`` steps under ``mode``."""
    tokens = torch.randint(0, model.cfg.vocab_size, (args.batch, args.prompt), device=args.device,
                           generator=torch.Generator(device=args.device).manual_seed(round_no))
    model.setup_caches(args.batch, args.prompt + args.steps)
    tracer = None
    with contextlib.ExitStack() as stack:
        if mode == "topk":
            tracer = TopkTracer(TopkTraceConfig(out_dir=tmp / f"{mode}{round_no}"))
            stack.enter_context(tracer.attach(model))
        elif mode.startswith("modules"):
            stack.enter_context(modules(model, nvtx=mode.endswith("nvtx"), profiler=mode.endswith("profiler")))
        stack.enter_context(torch.no_grad())
        first = model.prefill(tokens).argmax(-1, keepdim=True)
        if tracer is not None:
            tracer.begin_batch(list(range(args.batch)), args.prompt, args.steps)
        loop = DecodeLoop(model, first, args.prompt, use_cuda_graph=False)
        times = []
        for _ in range(args.steps):
            _sync(args.device)
            t0 = time.perf_counter()
            loop.step()
            _sync(args.device)
            times.append(time.perf_counter() - t0)
    if tracer is not None:
        summary = tracer.close()
        assert summary["writer"]["dropped"] == 0 and summary["writer"]["errors"] == 0, summary["writer"]
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: bf16 on cuda)")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--format", choices=("md", "json"), default="md")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if args.device.startswith("cuda") else None)
    torch.manual_seed(0)
    model = Transformer(named_config(args.config), args.layers, "dsa", device=args.device, dtype=dtype).eval()
    samples: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        run_round(model, "none", args, Path(tmp), -1)  # warm-up: allocator, kernels, caches
        for r in range(args.rounds):
            for mode in MODES:
                samples[mode] += run_round(model, mode, args, Path(tmp), r)
    base = statistics.median(samples["none"])
    rows = [{"mode": m, "steps": len(v), "median_step_ms": 1e3 * statistics.median(v),
             "ratio_to_untraced": statistics.median(v) / base} for m, v in samples.items()]
    env = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
           "torch": torch.__version__, **{k: v for k, v in vars(args).items() if k != "format"},
           "layers_built": len(model.layers), "index_topk": model.cfg.index_topk}
    if args.format == "json":
        print(json.dumps({"env": env, "rows": rows}, indent=1))
        return
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    print("| mode | decode steps | median step (ms) | / untraced |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['mode']} | {row['steps']} | {row['median_step_ms']:.3f} | {row['ratio_to_untraced']:.2f} |")


if __name__ == "__main__":
    main()
