#!/usr/bin/env python3
"""Mock layer: one DeepSeek-V3.2 DSA attention layer (align_mock MLAAttention + indexer) run standalone.

Profiled with nsys and compared with the ``layers.{i}.self_attn`` ranges of dsa_e2e.py, whose
defaults it shares (config ``demo``: V3.2's per-head shapes with 16 heads; ``--small`` for CPU).
The layer is built from the config alone, with the TP split of ``--tp`` (heads // tp).

Context (prefill): B x S tokens from position 0, causal and top-k sparse, writing a static cache
of ``kv_len`` slots; every iteration rewrites the same slots, so no rewind is needed. Each measured
iteration is in an NVTX range ``mock_context``. Generation (decode): one token per request at
position ``kv_len - 1`` over a cache whose earlier slots hold random data, reading all ``kv_len``
slots with the position in a device tensor, exactly as the E2E decode step calls it; the step is
captured in a CUDA graph and replayed (eager when capture fails or without CUDA), each replay in a
range ``mock_generation``. Outer ranges ``context`` / ``generation`` hold each phase's measured
part; warm-up and capture come first, outside the ``--profiler-api`` window.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import torch

import dsa_common  # first: makes align and align_mock importable from a bare checkout
from align.annotate import cuda_profiler, nvtx_range, synchronize
from align.timing import capture_graph, warm_up
from align_mock.config import named_config
from align_mock.dsa import KVCache, MLAAttention, precompute_freqs_cis

# defaults shared with dsa_e2e.py: kv_len = seq + max(steps, warmup) of the E2E, rounded up to 64
DEFAULTS = {"config": "demo", "batch": 2, "seq": 2048, "kv_len": 2112}
SMALL = {"config": "small", "batch": 2, "seq": 48, "kv_len": 64}


def parse_args() -> argparse.Namespace:
    p = dsa_common.parser(__doc__, DEFAULTS, SMALL, "context tokens per request")
    p.add_argument("--kv-len", type=int, help=f"static cache slots, >= seq; decode reads all of them "
                                              f"(default {DEFAULTS['kv_len']}, dsa_e2e.py's default cache)")
    p.add_argument("--index-scores", choices=("bf16", "fp32"), default="bf16",
                   help="indexer scoring precision (fp32: as transformers scores)")
    p.add_argument("--rms-norm", choices=("fused", "unfused"), default="fused",
                   help="RMSNorm kernel (unfused: pow, mean, rsqrt, mul, as transformers writes it)")
    p.add_argument("--iters", type=int, default=5, help="measured iterations per phase (N)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up iterations per phase, outside all ranges (W)")
    args = dsa_common.parse(p, DEFAULTS, SMALL)
    if args.kv_len < args.seq:
        p.error("--kv-len must be >= --seq (the context phase writes its S tokens into a cache of kv-len slots)")
    return args


def measure(outer: str, inner: str, run: Callable[[], object], iters: int) -> None:
    """``iters`` steps, each in range ``inner``, all in range ``outer``."""
    with nvtx_range(outer):
        for _ in range(iters):
            with nvtx_range(inner):
                run()
        synchronize()


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    device, dtype = dsa_common.device_and_dtype(args)
    try:
        cfg = named_config(args.config, tp_size=args.tp, index_score_dtype=args.index_scores, rms_norm=args.rms_norm)
        heads = cfg.local_heads
    except ValueError as exc:
        sys.exit(f"dsa_mock: {exc}")
    if args.kv_len > cfg.max_seq_len:
        sys.exit(f"dsa_mock: --kv-len {args.kv_len} exceeds max_seq_len {cfg.max_seq_len}")
    use_indexer = args.attention == "dsa"
    attn = MLAAttention(cfg, use_indexer=use_indexer, device=device, dtype=dtype).eval().requires_grad_(False)
    freqs = precompute_freqs_cis(cfg, args.kv_len).to(device)
    batch, seq, kv_len = args.batch, args.seq, args.kv_len

    with torch.no_grad():
        context_cache = KVCache(cfg, batch, kv_len, device=device, dtype=dtype, indexer=use_indexer)
        context_x = torch.randn(batch, seq, cfg.dim, device=device, dtype=dtype)

        def context() -> object:
            return attn(context_x, 0, context_cache, freqs[:seq])

        warm_up(context, args.warmup)

        position = kv_len - 1
        decode_cache = KVCache(cfg, batch, kv_len, device=device, dtype=dtype, indexer=use_indexer)
        decode_cache.fill_random_(position)
        decode_x = torch.randn(batch, 1, cfg.dim, device=device, dtype=dtype)
        pos = torch.full((1,), position, dtype=torch.long, device=device)
        freqs_row = freqs[position: position + 1]

        def generation() -> object:
            return attn(decode_x, pos, decode_cache, freqs_row)

        warm_up(generation, args.warmup)
        generation_run, status = capture_graph(generation)
        print(f"cuda_graph: {status}")
        with cuda_profiler(args.profiler_api):
            measure("context", "mock_context", context, args.iters)
            measure("generation", "mock_generation", generation_run, args.iters)

    common: dict[str, Any] = {"dtype": str(dtype).removeprefix("torch."), "kv_cache_len": kv_len, "local_heads": heads}

    def topk(keys: int) -> int | None:
        return min(cfg.index_topk, keys) if use_indexer else None

    summary = {
        "script": "dsa_mock",
        "device": str(device),
        "torch": torch.__version__,
        "config": args.config,
        "attention": args.attention,
        "tp": args.tp,
        "iters": args.iters,
        "warmup": args.warmup,
        "profiler_api": args.profiler_api,
        "phases": [
            {"phase": "context", "range": "mock_context", "hidden_states": [batch, seq, cfg.dim], **common,
             "index_topk": topk(seq)},
            {"phase": "generation", "range": "mock_generation", "hidden_states": [batch, 1, cfg.dim],
             "position": position, **common, "index_topk": topk(kv_len), "cuda_graph": status},
        ],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
