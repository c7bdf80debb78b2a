#!/usr/bin/env python3
"""Mock layer from the framework's own attention class: transformers' LlamaAttention or DeepseekV32Attention.

DeepseekV32Attention is built by align_mock.frameworks' transformers adapter (one code path with
``align bench --framework transformers`` and ``align collect --framework transformers``), from the
E2E model's config; LlamaAttention (no collectable op) is built here the same way by hand.

The class is built standalone (seed 000, way A) with transformers' own DynamicCache, rotary
embedding and ``create_causal_mask``, fed as ``generate()`` feeds it (position ids from the cumulative
sum of a padding mask of ones, which generate() then drops), and compared with hf_generate.py's ``layers.{i}.self_attn``
ranges. Context: B x S prompt tokens on an empty cache, each iteration in an NVTX range
``mock_context``. Generation: one token per request after ``kv_len - 1`` cached ones (default:
the middle of hf_generate.py's decode), each iteration in ``mock_generation``; the cache is copied
from a filled one before each iteration, outside the range, so every step appends to the same
length. Both run eagerly, as ``generate()`` does.

``--compile`` (Llama) builds it as a compiled ``generate()`` runs it: transformers' StaticCache in both
phases, the context step eager (generate() prefills eagerly), the generation step through
``torch.compile`` with transformers' own CompileConfig (Inductor, ``reduce-overhead``: CUDA graphs).

Planted faults for align verdict's tests: ``--dtype fp32`` (another dtype), ``--attn-impl eager``
(another attention implementation), ``--plant missing`` (a sub-op left out: Llama without its
rotary embedding, DSA without its indexer, whose top-k indices are then fixed in advance), and a
wrong shape through ``--seq``/``--batch``.
"""

from __future__ import annotations

import argparse
import copy
import json
from typing import Any

import torch

import hf_models
from align.annotate import nvtx_range, synchronize
from align.timing import warm_up

NEW_TOKENS = 16  # hf_generate.py's default --new-tokens: the mock decodes in the middle of them


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = hf_models.parser(__doc__)
    p.add_argument("--seq", type=int, default=512, help="prompt tokens per request (S)")
    p.add_argument("--kv-len", type=int, default=0,
                   help=f"KV length of the generation step, new token included (default S + {NEW_TOKENS // 2})")
    p.add_argument("--iters", type=int, default=5, help="measured iterations per phase")
    p.add_argument("--warmup", type=int, default=3, help="warm-up iterations per phase, outside all ranges")
    p.add_argument("--dtype", choices=sorted(hf_models.DTYPES), help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--attn-impl", choices=("sdpa", "eager"), default="sdpa", help="transformers attention backend")
    p.add_argument("--plant", choices=("none", "missing"), default="none",
                   help="missing: leave a sub-op out (Llama: rotary embedding; DSA: the indexer)")
    p.add_argument("--compile", action="store_true",
                   help="llama: static cache, generation step torch.compile'd as transformers compiles generate()")
    p.add_argument("--record-inputs", action="store_true", help="print the attention's input signatures")
    args = p.parse_args(argv)
    args.kv_len = args.kv_len or args.seq + NEW_TOKENS // 2
    if args.kv_len < 2:
        p.error("--kv-len must be >= 2")
    return args


class FixedIndices(torch.nn.Module):
    """Stands in for DeepseekV32Indexer: the top-k indices are made before the measured call."""

    def __init__(self, topk: int):
        super().__init__()
        self.topk = topk
        self.made: dict[tuple, torch.Tensor] = {}

    def forward(self, hidden_states, q_resid, position_embeddings, attention_mask, position_ids, past_key_values=None):
        b, s, _ = hidden_states.shape
        t = attention_mask.shape[-1]
        key = (b, s, t)
        if key not in self.made:  # first seen in a warm-up call, outside every range
            k = min(self.topk, t)
            self.made[key] = torch.arange(k, device=hidden_states.device, dtype=torch.int32).expand(b, s, k).contiguous()
        return self.made[key]


def plant_missing(model: str, attn: torch.nn.Module, module) -> None:
    if model == "llama":
        module.apply_rotary_pos_emb = lambda q, k, cos, sin, *a, **kw: (q, k)
    else:
        attn.indexer = FixedIndices(attn.indexer.index_topk)


def layer_inputs(model: str, config, rotary, cache, batch: int, past: int, q_len: int, device, dtype) -> dict:
    """What the decoder layer passes to ``self_attn`` under ``generate()`` for q_len new tokens after ``past``."""
    from transformers.masking_utils import create_causal_mask

    hidden = torch.randn(batch, q_len, config.hidden_size, device=device, dtype=dtype)
    mask2d = torch.ones(batch, past + q_len, dtype=torch.long, device=device)
    position_ids = (mask2d.cumsum(-1) - 1)[:, -q_len:].contiguous()
    extra = {"allow_is_causal_skip": False} if model == "dsa" else {}
    # generate() drops an all-ones padding mask before the model sees it: the model builds the causal mask alone
    mask = create_causal_mask(config=config, inputs_embeds=hidden, attention_mask=None, past_key_values=cache,
                              position_ids=position_ids, **extra)
    return {"hidden_states": hidden, "attention_mask": mask, "position_ids": position_ids, "past_key_values": cache,
            "use_cache": True, "position_embeddings": rotary(hidden, position_ids)}


def main() -> None:
    import transformers
    from transformers import DynamicCache

    args = parse_args()
    torch.manual_seed(args.seed)
    device, dtype = hf_models.device_and_dtype(args.dtype)
    config = hf_models.make_config(args.model, 1, small=args.small, tp=args.tp, attn_implementation=args.attn_impl)
    if args.model == "dsa":
        return main_adapter(args, config, device, dtype)
    if args.compile and args.model != "llama":
        raise SystemExit("--compile is built for --model llama")
    attn_cls, rotary_cls, module = hf_models.attention_parts(args.model)
    torch.set_default_dtype(dtype)
    with device:
        attn = attn_cls(config, layer_idx=0).eval()
        rotary = rotary_cls(config)
    torch.set_default_dtype(torch.float32)
    if args.plant == "missing":
        plant_missing(args.model, attn, module)
    seen: list[Any] = []
    with torch.no_grad():
        # context: B x S tokens on an empty cache, a fresh cache per iteration
        holder = {}

        def new_cache():
            if not args.compile:
                return DynamicCache(config=config)
            from transformers import StaticCache

            # generate()'s static cache holds the prompt and every new token
            return StaticCache(config=config, max_cache_len=args.seq + NEW_TOKENS)

        def fresh_context() -> None:
            holder["cache"] = new_cache()
            holder["kwargs"] = layer_inputs(args.model, config, rotary, holder["cache"], args.batch, 0, args.seq,
                                            device, dtype)

        def context_step() -> None:
            attn(**holder["kwargs"])

        # generation: one token after kv_len - 1 cached, on a copy of a filled cache per iteration
        # (compiled: one static cache, its position put back in place before every step)
        filled = new_cache()
        past = args.kv_len - 1
        attn(**layer_inputs(args.model, config, rotary, filled, args.batch, 0, past, device, dtype))
        step_inputs = layer_inputs(args.model, config, rotary, filled, args.batch, past, 1, device, dtype)
        step = context_step
        if args.compile:
            from transformers import CompileConfig

            compiled = torch.compile(attn, **CompileConfig().to_dict())
            holder["kwargs"] = step_inputs

            def fresh_generation() -> None:
                for layer in filled.layers:
                    layer.cumulative_length.fill_(past)

            def step() -> None:
                compiled(**step_inputs)
        else:
            def fresh_generation() -> None:
                cache = copy.deepcopy(filled)
                holder["kwargs"] = {**step_inputs, "past_key_values": cache}

        for fresh, step, name in ((fresh_context, context_step, "mock_context"),
                                  (fresh_generation, step, "mock_generation")):
            warm_up(step, args.warmup, before=fresh)
            if args.record_inputs:
                fresh()
                seen.append(hf_models.signature(holder["kwargs"]))
            for _ in range(args.iters):
                fresh()
                synchronize()
                with nvtx_range(name):
                    step()
            synchronize()
    print(json.dumps({"script": "hf_attention_mock", "device": str(device), "torch": torch.__version__,
                      "transformers": transformers.__version__, "model": args.model, "class": attn_cls.__name__,
                      "dtype": str(dtype).removeprefix("torch."), "attn_impl": args.attn_impl, "plant": args.plant,
                      "compile": args.compile, "batch": args.batch, "seq": args.seq, "kv_len": args.kv_len,
                      "iters": args.iters, "attention_inputs": seen}))


def main_adapter(args: argparse.Namespace, config, device, dtype) -> None:
    """DSA through align_mock.frameworks (the adapter ``align bench --framework`` and ``align collect
    --framework`` use): transformers' DeepseekV32Attention built standalone from the E2E model's
    config, with a DynamicCache as generate() runs it; reset before each iteration, outside the range."""
    import transformers

    from align_mock.frameworks import Case, get_adapter

    adapter = get_adapter("transformers")
    name = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}[dtype]
    phases = (("mock_context", Case("dsa", "context", batch=args.batch, seq=args.seq, kv_len=0, dtype=name,
                                    device=str(device), cache="dynamic", seed=args.seed)),
              ("mock_generation", Case("dsa", "generation", batch=args.batch, kv_len=args.kv_len - 1, dtype=name,
                                       device=str(device), cache="dynamic", seed=args.seed)))
    seen: list[Any] = []
    cls = None
    with torch.no_grad():
        for range_name, case in phases:
            built = adapter.build(case, config=config)
            cls = type(built.module).__name__
            if args.plant == "missing":
                built.module.indexer = FixedIndices(built.module.indexer.index_topk)
            warm_up(built.call, args.warmup, before=built.reset)
            if args.record_inputs:
                seen.append(built.inputs)
            for _ in range(args.iters):
                built.reset()
                synchronize()
                with nvtx_range(range_name):
                    built.call()
            synchronize()
    print(json.dumps({"script": "hf_attention_mock", "device": str(device), "torch": torch.__version__,
                      "transformers": transformers.__version__, "model": args.model, "class": cls,
                      "built_by": "align_mock.frameworks (transformers adapter)",
                      "dtype": str(dtype).removeprefix("torch."), "attn_impl": args.attn_impl, "plant": args.plant,
                      "batch": args.batch, "seq": args.seq, "kv_len": args.kv_len, "iters": args.iters,
                      "attention_inputs": seen}))


if __name__ == "__main__":
    main()
