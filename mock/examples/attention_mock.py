#!/usr/bin/env python3
"""Mock layer: one Llama attention block (transformers' LlamaAttention) run standalone.

Profiled with nsys and compared with the ``layers.{i}.self_attn`` ranges of llama_e2e.py.

Context (prefill): B x S tokens, causal, writing a static KV cache that is rewound before every
iteration; each measured iteration in an NVTX range ``mock_context``. Generation (decode): one token
per request attending over a static KV cache of ``kv_len`` slots (kv_len - 1 past tokens plus the new
one); one step is captured in a CUDA graph and replayed, each replay in a range ``mock_generation``.
Outer ranges ``context`` / ``generation`` hold each phase's measured part.

The attention's inputs are built as LlamaModel builds them for its layers (position ids from the
cache, rotary cos/sin, the sdpa mask from ``create_causal_mask``, a StaticCache as llama_e2e.py uses),
so the block takes the same code path, and launches the same kernels, as inside the E2E model.
Warm-up and capture happen first; only the measured parts are inside the ``--profiler-api`` window.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import LlamaConfig, StaticCache
from transformers.masking_utils import create_causal_mask
from transformers.models.llama import modeling_llama
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

try:
    import align  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from align.annotate import cuda_profiler, nvtx_range, synchronize
from align.timing import capture_graph, warm_up

from tiny_llama import device_and_dtype, make_config, seed


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PLANTS = ("none", "extra", "missing", "count")


def planted(attn: LlamaAttention, kwargs: dict[str, Any], plant: str) -> Callable[[], object]:
    """The block's step, with the requested misalignment built in (captured into the graph too)."""
    if plant == "missing":
        # skip rotary embedding: its neg/cat kernels vanish from the block
        modeling_llama.apply_rotary_pos_emb = lambda q, k, cos, sin, *a, **kw: (q, k)

    def step() -> object:
        out = attn(**kwargs)
        if plant == "extra":
            torch.nn.functional.gelu(out[0])
        elif plant == "count":
            attn.o_proj(out[0])
        return out

    return step


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2, help="requests (B)")
    p.add_argument("--seq", type=int, default=256, help="context tokens per request (S)")
    p.add_argument("--kv-len", type=int, default=512, help="static KV cache slots, >= seq; decode reads all of them")
    p.add_argument("--iters", type=int, default=5, help="measured iterations per phase (N)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up iterations per phase, outside all ranges (W)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profiler-api", action="store_true", help="cudaProfilerStart/Stop around the measured parts")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="run the block in this dtype (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--plant", choices=PLANTS, default="none",
                   help="plant a misalignment for align verdict's tests: an extra kernel (gelu), a missing one "
                        "(no rotary embedding), or a count mismatch (o_proj applied twice)")
    args = p.parse_args()
    if args.kv_len < args.seq:
        p.error("--kv-len must be >= --seq (the context phase writes its S tokens into a cache of kv-len slots)")
    return args


def static_cache(config: LlamaConfig, max_cache_len: int) -> StaticCache:
    """A StaticCache whose write position is a device tensor (``cumulative_length``), as
    ``set_cache_length`` needs; transformers versions without one are refused with a clear message."""
    cache = StaticCache(config=config, max_cache_len=max_cache_len)
    if not all(isinstance(getattr(layer, "cumulative_length", None), torch.Tensor) for layer in cache.layers):
        sys.exit(
            f"transformers {transformers.__version__}: StaticCache layers have no tensor `cumulative_length`; "
            "this script follows the cache layout of transformers 5.17 to 5.23"
        )
    return cache


def set_cache_length(cache: StaticCache, length: int) -> None:
    """Move the cache's write position to ``length``. Every update advances it on the device (inside a
    replayed graph too), so rewinding before each step keeps all measured steps identical."""
    for layer in cache.layers:
        layer.cumulative_length.fill_(length)


def layer_inputs(
    config: LlamaConfig,
    rotary: LlamaRotaryEmbedding,
    cache: StaticCache,
    batch: int,
    q_len: int,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """The keyword arguments LlamaDecoderLayer passes to ``self_attn``, for ``q_len`` new tokens per request
    after what ``cache`` holds; position ids, mask and cos/sin are made as in LlamaModel.forward."""
    hidden = torch.randn(batch, q_len, config.hidden_size, device=device, dtype=dtype)
    position_ids = (torch.arange(q_len, device=device) + cache.get_seq_length()).unsqueeze(0)
    mask = create_causal_mask(
        config=config,
        inputs_embeds=hidden,
        attention_mask=None,
        past_key_values=cache,
        position_ids=position_ids,
    )
    return {
        "hidden_states": hidden,
        "attention_mask": mask,
        "position_ids": position_ids,
        "past_key_values": cache,
        "use_cache": True,
        "position_embeddings": rotary(hidden, position_ids),
    }


def describe(kwargs: dict[str, Any], kv_len: int) -> dict[str, Any]:
    """Shapes and dtypes of the attention inputs, for the summary line."""
    mask = kwargs["attention_mask"]
    cos, _ = kwargs["position_embeddings"]
    return {
        "hidden_states": list(kwargs["hidden_states"].shape),
        "dtype": str(kwargs["hidden_states"].dtype).removeprefix("torch."),
        "cos_sin": list(cos.shape),
        "mask": None if mask is None else f"{str(mask.dtype).removeprefix('torch.')}{list(mask.shape)}",
        "kv_cache_len": kv_len,
    }


def prepare_context(
    attn: LlamaAttention, config: LlamaConfig, rotary: LlamaRotaryEmbedding, args: argparse.Namespace,
    device: torch.device, dtype: torch.dtype,
) -> tuple[Callable[[], object], Callable[[], None], dict[str, Any]]:
    """Context step on an empty cache (sdpa's causal path), warmed up; returns (step, rewind, summary)."""
    cache = static_cache(config, args.kv_len)
    kwargs = layer_inputs(config, rotary, cache, args.batch, args.seq, device, dtype)

    step = planted(attn, kwargs, args.plant)

    def rewind() -> None:
        set_cache_length(cache, 0)

    warm_up(step, args.warmup, before=rewind)
    return step, rewind, describe(kwargs, args.kv_len)


def prepare_generation(
    attn: LlamaAttention, config: LlamaConfig, rotary: LlamaRotaryEmbedding, args: argparse.Namespace,
    device: torch.device, dtype: torch.dtype,
) -> tuple[Callable[[], object], Callable[[], None], dict[str, Any]]:
    """Decode step at position kv_len - 1 of a filled cache, warmed up and captured; returns (run, rewind, summary)."""
    cache = static_cache(config, args.kv_len)
    position = args.kv_len - 1
    attn(**layer_inputs(config, rotary, cache, args.batch, position, device, dtype))
    kwargs = layer_inputs(config, rotary, cache, args.batch, 1, device, dtype)

    step = planted(attn, kwargs, args.plant)

    def rewind() -> None:
        set_cache_length(cache, position)

    warm_up(step, args.warmup, before=rewind)
    rewind()
    run, status = capture_graph(step)
    return run, rewind, {**describe(kwargs, args.kv_len), "cuda_graph": status}


def measure(outer: str, inner: str, run: Callable[[], object], rewind: Callable[[], None], iters: int) -> None:
    """``iters`` steps, each in range ``inner`` after a rewind outside it, all in range ``outer``."""
    with nvtx_range(outer):
        for _ in range(iters):
            rewind()
            with nvtx_range(inner):
                run()
        synchronize()


def main() -> None:
    args = parse_args()
    seed(args.seed)
    device, dtype = device_and_dtype()
    if args.dtype:
        dtype = DTYPES[args.dtype]
    config = make_config(layers=1)
    attn = LlamaAttention(config, layer_idx=0).to(device=device, dtype=dtype).eval()
    rotary = LlamaRotaryEmbedding(config).to(device=device, dtype=dtype)
    with torch.no_grad():
        context, context_rewind, context_info = prepare_context(attn, config, rotary, args, device, dtype)
        generation, generation_rewind, generation_info = prepare_generation(attn, config, rotary, args, device, dtype)
        print(f"cuda_graph: {generation_info['cuda_graph']}")
        with cuda_profiler(args.profiler_api):
            measure("context", "mock_context", context, context_rewind, args.iters)
            measure("generation", "mock_generation", generation, generation_rewind, args.iters)
    summary = {
        "script": "attention_mock",
        "device": str(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "iters": args.iters,
        "warmup": args.warmup,
        "profiler_api": args.profiler_api,
        "plant": args.plant,
        "phases": [
            {"phase": "context", "range": "mock_context", **context_info},
            {"phase": "generation", "range": "mock_generation", **generation_info},
        ],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
