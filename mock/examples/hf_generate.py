#!/usr/bin/env python3
"""E2E run of transformers' own model: ``generate()`` of a random Llama or DeepSeek-V3.2, as users profile it.

Nothing here is ours but the NVTX ranges: align.annotate.nvtx_modules puts ``layers.{i}``,
``layers.{i}.self_attn`` and ``layers.{i}.mlp`` around the modules, and no range says which phase
runs (prefill and decode are told apart by what they launch). ``generate()`` decodes eagerly on
its DynamicCache, so the KV length grows by one every step, as in a real run.

``--engine-steps`` runs the model step by step instead, each step in an NVTX range shaped as
TensorRT-LLM's executor writes it (``[Executor] _forward_step N: X ctx reqs, Y gen reqs``): a
context step, generation steps, and one mixed step in which a new request's prefill joins the
batch's decode. ``--procs N`` runs N worker processes (as a server's ranks do), each its own
generate() on GPU ``i % device_count``; with ``--distributed`` they form a torch.distributed NCCL
group and all-reduce every layer's attention output, as tensor-parallel ranks do.

``--markers ENGINE`` writes the NVTX ranges as that engine's layer-wise switch does instead
(align.annotate.layerwise_markers: dict-string texts on every module, the engine's root prefix,
output markers for vLLM and SGLang). ``--compile`` runs ``generate()`` as transformers compiles it:
a static cache, the decode steps through ``torch.compile`` (Inductor, ``reduce-overhead``: CUDA
graphs); module hooks push nothing inside the compiled program, so each compiled step is one range
around the compiled call, named as vLLM names it (``Torch Compiled Module (input):CLASS``).

A warm-up ``generate()`` of two tokens runs first, before the hooks, as a server warms up; with
``--compile`` a whole generate() of the same shapes, hooks on, so the measured one neither compiles
nor records graphs (``--profiler-api`` keeps the warm-up out of a cudaProfilerApi capture).
"""

from __future__ import annotations

import argparse
import json

import torch

import hf_models
from align.annotate import MARKER_STYLES, cuda_profiler, layerwise_markers, marker_text, nvtx_modules, nvtx_range, \
    synchronize

STEP = "[Executor] _forward_step {step}: {ctx} ctx reqs, {gen} gen reqs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = hf_models.parser(__doc__)
    p.add_argument("--layers", type=int, default=4, help="decoder layers")
    p.add_argument("--prompt", type=int, default=512, help="prompt tokens per request")
    p.add_argument("--new-tokens", type=int, default=16, help="generated tokens per request")
    p.add_argument("--engine-steps", action="store_true", help="step loop with TensorRT-LLM-shaped step ranges")
    p.add_argument("--procs", type=int, default=1, help="worker processes, each running the whole generation")
    p.add_argument("--distributed", action="store_true",
                   help="with --procs: join the workers in a torch.distributed NCCL group and all-reduce each "
                        "layer's attention output across them, as tensor-parallel ranks do after o_proj")
    p.add_argument("--markers", choices=sorted(MARKER_STYLES),
                   help="NVTX ranges as this engine's layer-wise switch writes them (default: align's short names)")
    p.add_argument("--compile", action="store_true",
                   help="static cache and torch.compile'd decode steps (Inductor, reduce-overhead), as "
                        "transformers compiles generate()")
    p.add_argument("--experts-impl", help="MoE models: transformers' experts implementation (default: the model's "
                                          "pick, grouped_mm)")
    p.add_argument("--profiler-api", action="store_true", help="cudaProfilerStart/Stop around the measured generate()")
    p.add_argument("--record-inputs", action="store_true",
                   help="print what layers.0.self_attn receives at the first prefill and decode call")
    return p.parse_args(argv)


def record_inputs(model: torch.nn.Module) -> tuple[list, object]:
    """Signatures of the first two calls of the first layer's attention (prefill, first decode)."""
    seen: list = []
    attn = model.model.layers[0].self_attn

    def hook(_mod, args, kwargs):
        if len(seen) < 2:
            seen.append(hf_models.signature({**kwargs, **{f"arg{i}": a for i, a in enumerate(args)}}))

    return seen, attn.register_forward_pre_hook(hook, with_kwargs=True)


def engine_steps(model, prompt: torch.Tensor, new_tokens: int) -> list[str]:
    """Prefill, decode steps, and one mixed step; each step one executor range, as TensorRT-LLM marks them."""
    from transformers import DynamicCache

    batch = prompt.shape[0]
    cache = DynamicCache(config=model.config)
    steps = []

    def forward(ids, past):
        out = model(input_ids=ids, past_key_values=past, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].argmax(-1, keepdim=True)

    text = STEP.format(step=0, ctx=batch, gen=0)
    with nvtx_range(text):
        tokens = forward(prompt, cache)
    steps.append(text)
    for step in range(1, new_tokens):
        joining = step == new_tokens // 2
        text = STEP.format(step=step, ctx=1 if joining else 0, gen=batch)
        with nvtx_range(text):
            if joining:  # a new request's prefill runs in the same step as the batch's decode
                forward(prompt[:1], DynamicCache(config=model.config))
            tokens = forward(tokens, cache)
        steps.append(text)
    synchronize()
    return steps


def all_reduce_attention(model: torch.nn.Module) -> list:
    """Tensor-parallel ranks all-reduce the attention output after o_proj: here every rank holds
    the whole layer, so the sum over ranks is divided by their number (values unchanged, NCCL's
    kernels and their wait as a TP run has them). Hooks registered after the NVTX ones: the
    collective runs after the attention range closes, inside the layer's."""
    import torch.distributed as dist

    def hook(_mod, _args, out):
        t = out[0] if isinstance(out, tuple) else out
        dist.all_reduce(t)
        t.div_(dist.get_world_size())
        return out

    return [layer.self_attn.register_forward_hook(hook) for layer in model.model.layers]


def compiled_step_ranges(model: torch.nn.Module, engine: str | None, compile_config) -> None:
    """Compile the model's call as generate() would (``get_compiled_call``), wrapped in one range per
    call: vLLM's marker around a compiled module, or ``decode_step`` with align's names."""
    compiled = torch.compile(model.__call__, **compile_config.to_dict())
    style = MARKER_STYLES.get(engine or "")
    name = f"Torch Compiled Module (input):{type(model).__name__}"

    def call(*args, **kwargs):
        text = marker_text(style, name, model, args, kwargs if style.kwargs else None) if style else "decode_step"
        with nvtx_range(text):
            out = compiled(*args, **kwargs)
        if style and style.outputs:
            with nvtx_range(marker_text(style, name.replace("(input)", "(output)"), model,
                                        output=getattr(out, "logits", None))):
                pass
        return out

    model._compiled_call = call
    model._last_compile_config = compile_config


def run(args: argparse.Namespace, rank: int = 0) -> dict:
    torch.manual_seed(args.seed)
    device, dtype = hf_models.device_and_dtype()
    if device.type == "cuda":
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if args.distributed:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=args.procs,
                                device_id=device if device.type == "cuda" else None)
    config = hf_models.make_config(args.model, args.layers, small=args.small, tp=args.tp)
    torch.set_default_dtype(dtype)
    if args.experts_impl:
        config._experts_implementation = args.experts_impl
    with device:
        model = hf_models.causal_lm(args.model, config).eval()
    torch.set_default_dtype(torch.float32)
    gen = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    if args.compile:
        from transformers import CompileConfig

        gen.update(cache_implementation="static", compile_config=CompileConfig())
        compiled_step_ranges(model, args.markers, gen["compile_config"])
    prompt = torch.randint(3, config.vocab_size, (args.batch, args.prompt), device=device)
    mask = torch.ones_like(prompt)
    measured = dict(attention_mask=mask, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, **gen)
    with torch.no_grad():
        if not args.compile:
            model.generate(prompt[:, :8], attention_mask=mask[:, :8], max_new_tokens=2, min_new_tokens=2, **gen)
        seen, handle = record_inputs(model) if args.record_inputs else ([], None)
        remove = layerwise_markers(model, args.markers) if args.markers else nvtx_modules(model)
        reduce_hooks = all_reduce_attention(model) if args.distributed else []
        if args.compile:  # compiled and graphs recorded with the hooks on, as the measured call runs
            model.generate(prompt, **measured)
            synchronize()
        with cuda_profiler(args.profiler_api):
            if args.engine_steps:
                steps = engine_steps(model, prompt, args.new_tokens)
                out_len = None
            else:
                out = model.generate(prompt, **measured)
                synchronize()
                steps, out_len = None, int(out.shape[1])
        remove()
        for h in reduce_hooks:
            h.remove()
        if handle is not None:
            handle.remove()
    if args.distributed:
        torch.distributed.destroy_process_group()
    return {"script": "hf_generate", "rank": rank, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
            "model": args.model, "class": type(model).__name__, "markers": args.markers, "compile": args.compile,
            "experts_implementation": getattr(config, "_experts_implementation", None),
            "layers": args.layers, "batch": args.batch,
            "prompt": args.prompt, "new_tokens": args.new_tokens, "output_len": out_len,
            "engine_steps": steps, "attention_inputs": seen}


def _worker(rank: int, args: argparse.Namespace) -> None:
    print(json.dumps(run(args, rank)), flush=True)


def main() -> None:
    import transformers

    args = parse_args()
    print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__, "procs": args.procs,
                      "distributed": args.distributed}))
    if args.distributed:
        if args.procs < 2:
            raise SystemExit("--distributed needs --procs 2 or more")
        import os

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29517")
    if args.procs > 1:
        torch.multiprocessing.spawn(_worker, args=(args,), nprocs=args.procs, join=True)
    else:
        _worker(0, args)


if __name__ == "__main__":
    main()
