#!/usr/bin/env python3
"""Mock layer from the framework's own MoE block: transformers' DeepseekV3MoE or Qwen3MoeSparseMoeBlock.

The block is built standalone from the E2E model's config (hf_models.make_config, the dims
hf_generate.py's ``--model moe|qwen3moe`` runs) with random weights, and fed what the decoder layer
feeds it: B x S hidden states after the post-attention norm. Its experts run as ``generate()`` runs
them (``--experts-impl generate``): the implementation the model picks at init (grouped_mm) for the
prompt, and ``batched_mm`` for the decode steps on a GPU, where ``generate()`` switches to it
(GenerationMixin._optimize_model_for_decode in transformers 5.23; align verdict found it: a mock on
grouped_mm in both phases launches a grouped GEMM the E2E decode never runs). Context: the prompt's S tokens per request (``mock_context``);
generation: one token per request (``mock_generation``). An MoE block keeps no cache, so a decode
step is B tokens. Both run eagerly, as ``generate()`` does.

Planted faults for align verdict's tests: ``--dtype fp32`` (another dtype), ``--experts-impl eager``
(the experts run one by one in a Python loop instead of one grouped GEMM), ``--top-k N`` (another
``num_experts_per_tok``), ``--batch N`` (more requests than the E2E run has).
"""

from __future__ import annotations

import argparse
import json

import torch

import hf_models
from align.annotate import nvtx_range, synchronize
from align.timing import warm_up
from align_mock.frameworks.hf import _init_weights


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = hf_models.parser(__doc__)
    p.set_defaults(model="moe")
    p.add_argument("--seq", type=int, default=512, help="prompt tokens per request (S)")
    p.add_argument("--iters", type=int, default=5, help="measured iterations per phase")
    p.add_argument("--warmup", type=int, default=3, help="warm-up iterations per phase, outside all ranges")
    p.add_argument("--dtype", choices=sorted(hf_models.DTYPES), help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--experts-impl", default="generate",
                   help="transformers' experts implementation in both phases, or generate: as generate() runs "
                        "them (grouped_mm for the prompt, batched_mm to decode on a GPU)")
    p.add_argument("--top-k", type=int, default=0, help="num_experts_per_tok (default: the model's)")
    p.add_argument("--record-inputs", action="store_true", help="print the block's input signature")
    return p.parse_args(argv)


def main() -> None:
    import transformers

    args = parse_args()
    torch.manual_seed(args.seed)
    device, dtype = hf_models.device_and_dtype(args.dtype)
    config = hf_models.make_config(args.model, 2, small=args.small, tp=args.tp)
    if args.top_k:
        config.num_experts_per_tok = args.top_k
    impl = {"mock_context": args.experts_impl, "mock_generation": args.experts_impl}
    if args.experts_impl == "generate":
        impl = {"mock_context": "grouped_mm", "mock_generation": "grouped_mm" if device.type == "cpu" else "batched_mm"}
    config._experts_implementation = impl["mock_context"]
    block_cls = hf_models.moe_block(args.model)
    torch.set_default_dtype(dtype)
    with device:
        block = block_cls(config).eval().requires_grad_(False)
    torch.set_default_dtype(torch.float32)
    _init_weights(block, args.seed)
    gen = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    seen = []
    with torch.no_grad():
        for name, q_len in (("mock_context", args.seq), ("mock_generation", 1)):
            x = torch.randn(args.batch, q_len, config.hidden_size, generator=gen).to(device=device, dtype=dtype)
            config._experts_implementation = impl[name]  # the experts read it at every call
            warm_up(lambda: block(x), args.warmup)
            if args.record_inputs:
                seen.append(hf_models.signature({"hidden_states": x}))
            for _ in range(args.iters):
                synchronize()
                with nvtx_range(name):
                    block(x)
            synchronize()
    print(json.dumps({"script": "hf_moe_mock", "device": str(device), "torch": torch.__version__,
                      "transformers": transformers.__version__, "model": args.model, "class": block_cls.__name__,
                      "dtype": str(dtype).removeprefix("torch."), "experts_implementation": impl,
                      "num_experts_per_tok": config.num_experts_per_tok, "batch": args.batch, "seq": args.seq,
                      "iters": args.iters, "inputs": seen}))


if __name__ == "__main__":
    main()
