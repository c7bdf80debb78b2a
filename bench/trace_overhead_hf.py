#!/usr/bin/env python3
"""What the top-k tracer costs on an engine we did not write: transformers' own DeepSeek-V3.2 (random
weights), one eager decode step at a time on its DynamicCache, untraced and traced through the indexer
hooks (align.trace.topk.engines), timed in the same run with the modes interleaved round by round.
Reported: median decode-step time and its ratio to the untraced step.

    python bench/trace_overhead_hf.py [--config small|v32] [--device cpu|cuda] [--batch 4] [--prompt 4096]
                                      [--steps 32] [--rounds 3] [--layers 2] [--prefill-chunk 4096]
                                      [--format md|json]
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

from align.trace.topk import TopkTraceConfig, TopkTracer
from align.trace.topk.engines import attach_engine
from align.trace.workload import _transformers_model

MODES = ["none", "topk"]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_round(model, mode: str, args, tmp: Path, round_no: int) -> list[float]:
    """Step times (s) of ``args.steps`` decode steps after one prefill, under ``mode``."""
    from transformers import DynamicCache

    gen = torch.Generator(device=args.device).manual_seed(round_no)
    tokens = torch.randint(3, model.config.vocab_size, (args.batch, args.prompt), device=args.device, generator=gen)
    tracer = TopkTracer(TopkTraceConfig(out_dir=tmp / f"{mode}_{round_no}")) if mode == "topk" else None
    times = []
    with (attach_engine(tracer, model) if tracer else contextlib.nullcontext()), torch.no_grad():
        cache = DynamicCache(config=model.config)
        for a in range(0, args.prompt, args.prefill_chunk):  # the indexer's fp32 scores of one chunk at a time
            out = model(input_ids=tokens[:, a:a + args.prefill_chunk], past_key_values=cache, use_cache=True,
                        logits_to_keep=1)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        if tracer:
            tracer.begin_batch(list(range(args.batch)), args.prompt, args.steps)
        for _ in range(args.steps):
            _sync(args.device)
            t0 = time.perf_counter()
            out = model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            _sync(args.device)
            times.append(time.perf_counter() - t0)
    if tracer:
        tracer.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: bf16 on cuda, fp32 on cpu)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--prefill-chunk", type=int, default=4096, help="prompt tokens per prefill forward")
    ap.add_argument("--format", default="md", choices=["md", "json"])
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if args.device.startswith("cuda")
                                                         else torch.float32)
    torch.manual_seed(0)
    model, cfg = _transformers_model(args.config, args.layers, args.device, dtype)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as d:
        for mode in MODES:  # a warm-up round of each
            run_round(model, mode, args, Path(d), -1)
        for r in range(args.rounds):
            for mode in MODES:
                times[mode] += run_round(model, mode, args, Path(d), r)
    base = statistics.median(times["none"])
    rows = [{"mode": m, "steps": len(t), "median_ms": round(statistics.median(t) * 1e3, 3),
             "ratio": round(statistics.median(t) / base, 2)} for m, t in times.items()]
    import transformers

    head = (f"device={args.device} torch={torch.__version__} transformers={transformers.__version__} "
            f"config={args.config} dtype={dtype} layers={args.layers} batch={args.batch} prompt={args.prompt} "
            f"steps={args.steps} rounds={args.rounds} prefill_chunk={args.prefill_chunk} index_topk={cfg.index_topk} heads={cfg.num_attention_heads}")
    if args.format == "json":
        print(json.dumps({"setup": head, "rows": rows}, indent=2))
        return
    print(head)
    print("| mode | decode steps | median step (ms) | / untraced |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['steps']} | {r['median_ms']} | {r['ratio']:.2f} |")


if __name__ == "__main__":
    main()
