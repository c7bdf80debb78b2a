#!/usr/bin/env python3
"""E2E reference for dsa_mock.py: a small random-weight DeepSeek-V3.2 style model, prefill then decode.

Run like an inference engine, to be profiled with nsys. The model (align_mock Transformer, config
``demo`` by default) has V3.2's real per-head attention shapes (q/kv LoRA 1536/512, q/k 128+64,
v 128, indexer 64 heads x 128 with top-2048) but 16 heads, width 2048, 16 experts and L layers
(the first dense, the rest MoE), so a profile stays small; ``--small`` uses the tiny test config.

One prefill of B x S tokens (range ``prefill``), then T greedy decode steps (ranges
``decode_step``) on static caches of ``--cache-len`` slots that every step reads in full. The decode
step keeps its position in a device tensor, so it is captured once in a CUDA graph (range
``capture_decode_graph``) and replayed; ``--eager`` runs it eagerly instead, and so does a failed
capture. align.annotate.nvtx_modules adds ``layers.{i}``, ``layers.{i}.self_attn`` and
``layers.{i}.mlp``; with a graph those exist at capture time only, since a replay runs no Python.
Warm-up (one prefill and W decode steps) happens before those hooks and outside all ranges;
``--profiler-api`` puts only the measured parts and the capture in the profile.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import dsa_common  # first: makes align and align_mock importable from a bare checkout
from align.annotate import cuda_profiler, nvtx_modules, nvtx_range, synchronize
from align.timing import warm_up
from align_mock.config import named_config
from align_mock.model import DecodeLoop, Transformer

# shared with dsa_mock.py (its --kv-len default is this script's default cache length)
DEFAULTS = {"config": "demo", "layers": 4, "batch": 2, "seq": 2048}
SMALL = {"config": "small", "layers": 2, "batch": 2, "seq": 48}


def parse_args() -> argparse.Namespace:
    p = dsa_common.parser(__doc__, DEFAULTS, SMALL, "prompt tokens per request")
    p.add_argument("--layers", type=int, help=f"decoder layers (L), default {DEFAULTS['layers']}")
    p.add_argument("--steps", type=int, default=8, help="measured decode steps (T)")
    p.add_argument("--warmup", type=int, default=2, help="decode warm-up steps before the measured run (W)")
    p.add_argument("--cache-len", type=int, default=0,
                   help="cache slots, read by every decode step; default: S + max(T, W) rounded up to 64 "
                        "(2112 for the defaults, 64 with --small: dsa_mock.py's default --kv-len)")
    p.add_argument("--eager", action="store_true", help="decode eagerly, no CUDA graph")
    args = dsa_common.parse(p, DEFAULTS, SMALL)
    needed = args.seq + max(args.steps, args.warmup)
    args.cache_len = args.cache_len or -(-needed // 64) * 64
    if args.cache_len < needed:
        p.error(f"--cache-len must be >= seq + max(steps, warmup) = {needed}")
    return args


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    device, dtype = dsa_common.device_and_dtype(args)
    try:
        cfg = named_config(args.config, tp_size=args.tp)
        model = Transformer(cfg, n_layers=args.layers, attention=args.attention, device=device, dtype=dtype)
        model.eval().requires_grad_(False)
        model.setup_caches(args.batch, args.cache_len)
    except ValueError as exc:
        sys.exit(f"dsa_e2e: {exc}")
    prompt = torch.randint(cfg.vocab_size, (args.batch, args.seq), device=device)

    with torch.no_grad():
        first = model.prefill(prompt).argmax(-1, keepdim=True)
        warm_up(DecodeLoop(model, first, args.seq, use_cuda_graph=False).step, args.warmup)
        model.reset_caches()
        remove_hooks = nvtx_modules(model)
        with cuda_profiler(args.profiler_api):
            with nvtx_range("prefill"):
                first = model.prefill(prompt).argmax(-1, keepdim=True)
                synchronize()
            if args.eager:
                loop = DecodeLoop(model, first, args.seq, use_cuda_graph=False)
                status = "eager (--eager)"
            else:
                with nvtx_range("capture_decode_graph"):
                    loop = DecodeLoop(model, first, args.seq, use_cuda_graph=True, warmup=0)
                status = loop.status
            print(f"cuda_graph: {status}")
            for _ in range(args.steps):
                with nvtx_range("decode_step"):
                    loop.step()
            synchronize()
        remove_hooks()
    summary = {
        "script": "dsa_e2e",
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "config": args.config,
        "attention": args.attention,
        "tp": args.tp,
        "local_heads": cfg.local_heads,
        "layers": args.layers,
        "batch": args.batch,
        "seq": args.seq,
        "decode_steps": args.steps,
        "warmup": args.warmup,
        "cache_len": args.cache_len,
        "index_topk": {"context": min(cfg.index_topk, args.seq), "generation": min(cfg.index_topk, args.cache_len)}
        if args.attention == "dsa" else None,
        "cuda_graph": status,
        "profiler_api": args.profiler_api,
        "next_position": int(loop.pos.item()),
        "last_tokens": loop.tokens[:, 0].tolist(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
