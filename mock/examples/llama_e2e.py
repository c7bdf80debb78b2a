#!/usr/bin/env python3
"""E2E reference for attention_mock.py: a small random-weight LlamaForCausalLM, prefill then decode.

Run like an inference engine, to be profiled with nsys.

One prefill of B x S tokens (range ``prefill``), then T greedy decode steps (ranges ``decode_step``)
on a StaticCache. The whole-model decode step is captured once in a CUDA graph (range
``capture_decode_graph``) and replayed, as TensorRT-LLM replays its decode graph; ``--eager`` runs it
eagerly instead, and so does a failed capture. align.annotate.nvtx_modules adds ``layers.{i}``,
``layers.{i}.self_attn`` and ``layers.{i}.mlp``; with a graph those exist at capture time only, since
a replay runs no Python. Warm-up (one prefill and W decode steps) happens before those hooks and
outside all ranges; ``--profiler-api`` puts only the measured parts and the capture in the profile.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import LlamaForCausalLM, StaticCache

try:
    import align  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from align.annotate import cuda_profiler, nvtx_modules, nvtx_range, synchronize
from align.timing import capture_graph, warm_up

from tiny_llama import device_and_dtype, make_config, seed


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4, help="decoder layers (L)")
    p.add_argument("--batch", type=int, default=2, help="requests (B)")
    p.add_argument("--seq", type=int, default=256, help="prompt tokens per request (S)")
    p.add_argument("--steps", type=int, default=8, help="measured decode steps (T)")
    p.add_argument("--warmup", type=int, default=2, help="decode warm-up steps before the measured run (W)")
    p.add_argument(
        "--cache-len", type=int, default=0,
        help="StaticCache slots, read by every decode step; default: S + max(T, W) rounded up to 256 (512 for the "
        "defaults, the mock's default --kv-len)",
    )
    p.add_argument("--eager", action="store_true", help="decode eagerly, no CUDA graph")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profiler-api", action="store_true", help="cudaProfilerStart/Stop around the measured parts")
    args = p.parse_args()
    needed = args.seq + max(args.steps, args.warmup)
    args.cache_len = args.cache_len or -(-needed // 256) * 256
    if args.cache_len < needed:
        p.error(f"--cache-len must be >= seq + max(steps, warmup) = {needed}")
    return args


def main() -> None:
    args = parse_args()
    seed(args.seed)
    device, dtype = device_and_dtype()
    model = LlamaForCausalLM(make_config(layers=args.layers)).to(device=device, dtype=dtype).eval()
    cache = StaticCache(config=model.config, max_cache_len=args.cache_len)
    prompt = torch.randint(model.config.vocab_size, (args.batch, args.seq), device=device)
    tokens = torch.zeros(args.batch, 1, dtype=torch.long, device=device)

    def forward(input_ids: torch.Tensor) -> None:
        """One model step on the cache; its greedy next tokens go to ``tokens``, the next decode input."""
        logits = model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        tokens.copy_(logits[:, -1].argmax(-1, keepdim=True))

    def decode_step() -> None:
        forward(tokens)

    with torch.no_grad():
        forward(prompt)
        warm_up(decode_step, args.warmup)
        cache.reset()
        remove_hooks = nvtx_modules(model)
        with cuda_profiler(args.profiler_api):
            with nvtx_range("prefill"):
                forward(prompt)
                synchronize()
            if args.eager:
                run, status = decode_step, "eager (--eager)"
            else:
                with nvtx_range("capture_decode_graph"):
                    run, status = capture_graph(decode_step)
            print(f"cuda_graph: {status}")
            for _ in range(args.steps):
                with nvtx_range("decode_step"):
                    run()
            synchronize()
        remove_hooks()
    summary = {
        "script": "llama_e2e",
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "layers": args.layers,
        "batch": args.batch,
        "seq": args.seq,
        "decode_steps": args.steps,
        "warmup": args.warmup,
        "cache_len": args.cache_len,
        "cuda_graph": status,
        "profiler_api": args.profiler_api,
        "cache_tokens": int(cache.get_seq_length()),
        "last_tokens": tokens[:, 0].tolist(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
