"""Synthetic chat / long-context workload on the mock E2E model, traced with ``TopkTracer``.

Requests (seeded, ``numpy.random.default_rng(seed)``):

* chat, probability ``1 - long_fraction`` (0.8): prompt ~ lognormal with median 300 tokens (sigma
  0.8), clipped to [16, 2048]; output ~ lognormal with median 100 (sigma 0.6), clipped to [8, 512].
* long context, probability ``long_fraction`` (0.2): prompt uniform in [2048, 8192]; output ~
  lognormal with median 200 (sigma 0.5), clipped to [16, 1024].
* every length is multiplied by ``length_scale`` (quick runs), then capped by the model's
  ``max_seq_len``: output <= max_seq_len // 4, prompt <= max_seq_len - output.
* shared prefixes: each request after the first, with probability ``prefix_probability`` (0.3),
  copies the first ``P = U(0.3, 0.9) * min(its prompt, source prompt)`` tokens of a uniformly
  chosen earlier request (a system prompt or an earlier turn). ``requests.jsonl`` keeps both the
  designed ``prefix_len`` and ``shared_prefix_tokens``, the complete blocks a prefix cache would
  share, found from the tokens by ``PrefixIndex`` (so accidental sharing counts too).

Public workloads instead (``dataset``: sharegpt, longbench_v2, ruler, burstgpt): prompt and output
lengths (and, for ShareGPT and BurstGPT, arrival times in ``requests.jsonl``) drawn from their
published statistics, align/trace/datasets.py and align/data/workloads.toml (each number cited);
the same scaling, caps and shared prefixes apply.

Batching: the mock decodes a whole batch at one position (a single position tensor) and prefills
without padding, so only requests with equal prompt lengths can share a batch. Requests join the
open batch of their prompt length in arrival order, up to ``batch_size``; ``length_quantum`` > 1
rounds prompt lengths to a multiple so that batches actually form. A batch decodes as many steps
as its longest output; each row is recorded for its own ``output_len`` steps only. The decode is
eager (``DecodeLoop(..., use_cuda_graph=False)``): the trace hook does not run on graph replays.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from align.trace.topk import PrefixIndex, TopkTraceConfig, TopkTracer
from align_mock.config import named_config
from align_mock.model import DecodeLoop, Transformer


@dataclass
class WorkloadSpec:
    """The request mix; see the module docstring for the distributions."""

    requests: int = 32
    seed: int = 0
    long_fraction: float = 0.2
    chat_prompt_median: float = 300.0
    chat_prompt_sigma: float = 0.8
    chat_prompt_range: tuple[int, int] = (16, 2048)
    chat_output_median: float = 100.0
    chat_output_sigma: float = 0.6
    chat_output_range: tuple[int, int] = (8, 512)
    long_prompt_range: tuple[int, int] = (2048, 8192)
    long_output_median: float = 200.0
    long_output_sigma: float = 0.5
    long_output_range: tuple[int, int] = (16, 1024)
    prefix_probability: float = 0.3
    prefix_fraction: tuple[float, float] = (0.3, 0.9)
    length_scale: float = 1.0
    length_quantum: int = 1
    dataset: str = "mixed"       # or a public workload's lengths: sharegpt, longbench_v2, ruler, burstgpt
    rate: float = 1.0            # mean requests per second of the data set's arrival process

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise ValueError(f"requests must be >= 1, got {self.requests}")
        for name in ("long_fraction", "prefix_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.length_scale <= 0 or self.length_quantum < 1:
            raise ValueError("length_scale must be > 0 and length_quantum >= 1")
        from align.trace.datasets import DATASETS

        if self.dataset != "mixed" and self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}: use mixed, {', '.join(DATASETS)}")
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")


@dataclass
class Request:
    request_id: int
    kind: str
    prompt_len: int
    output_len: int
    tokens: np.ndarray = field(repr=False)
    prefix_source: int | None = None
    prefix_len: int = 0
    shared_prefix_tokens: int = 0
    arrival_s: float | None = None   # a data set's arrival time (seconds from the first request)

    def info(self) -> dict[str, Any]:
        """The ``requests.jsonl`` line (everything but the tokens; the arrival time when there is one)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("request_id", "tokens") and not (k == "arrival_s" and v is None)}


def _lognormal(rng: np.random.Generator, median: float, sigma: float, bounds: tuple[int, int]) -> int:
    return int(np.clip(round(rng.lognormal(np.log(median), sigma)), *bounds))


def make_requests(spec: WorkloadSpec, vocab_size: int, max_len: int, block_size: int) -> list[Request]:
    """The seeded request list, with token ids and shared prefixes, lengths capped to ``max_len``."""
    if max_len < 8:
        raise ValueError(f"max_len {max_len} is too small for a workload")
    rng = np.random.default_rng(spec.seed)
    out_cap = max(1, max_len // 4)
    index = PrefixIndex(block_size)
    requests: list[Request] = []
    clock = 0.0
    for rid in range(spec.requests):
        arrival = None
        if spec.dataset != "mixed":
            from align.trace.datasets import draw

            d = draw(spec.dataset, rng, spec.rate)
            kind, prompt, output = d.kind, d.prompt, d.output
            if d.gap_s is not None:
                clock = clock + d.gap_s if rid else 0.0
                arrival = round(clock, 6)
        elif rng.random() < spec.long_fraction:
            kind = "long"
            prompt = int(rng.integers(spec.long_prompt_range[0], spec.long_prompt_range[1] + 1))
            output = _lognormal(rng, spec.long_output_median, spec.long_output_sigma, spec.long_output_range)
        else:
            kind = "chat"
            prompt = _lognormal(rng, spec.chat_prompt_median, spec.chat_prompt_sigma, spec.chat_prompt_range)
            output = _lognormal(rng, spec.chat_output_median, spec.chat_output_sigma, spec.chat_output_range)
        output = min(max(1, round(output * spec.length_scale)), out_cap)
        cap = max_len - output
        prompt = max(2, round(prompt * spec.length_scale))
        q = spec.length_quantum
        prompt = min(-(-prompt // q) * q, cap // q * q if cap >= q else cap)
        tokens = rng.integers(0, vocab_size, size=prompt)
        source, plen = None, 0
        if requests and rng.random() < spec.prefix_probability:
            src = requests[int(rng.integers(len(requests)))]
            plen = int(rng.uniform(*spec.prefix_fraction) * min(prompt, src.prompt_len))
            if plen > 0:
                tokens[:plen] = src.tokens[:plen]
                source = src.request_id
        shared = index.add(tokens) * block_size
        requests.append(Request(rid, kind, prompt, output, tokens, source, plen, shared, arrival))
    return requests


def plan_batches(requests: list[Request], batch_size: int) -> list[list[Request]]:
    """Batches of equal prompt length (the mock's one decode position), in order of their first request."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    open_batches: dict[int, list[Request]] = {}
    batches: list[list[Request]] = []
    for req in requests:
        batch = open_batches.get(req.prompt_len)
        if batch is None:
            batch = open_batches[req.prompt_len] = []
            batches.append(batch)
        batch.append(req)
        if len(batch) == batch_size:
            del open_batches[req.prompt_len]
    return batches


@dataclass
class RunResult:
    out_dir: Path
    requests: list[Request]
    batches: int
    summary: dict[str, Any]
    elapsed_s: float


ENGINES = ("mock", "transformers")


def run_workload(out_dir: str | Path, spec: WorkloadSpec | None = None, *, config: str = "small",
                 n_layers: int | None = None, batch_size: int = 4, device: str = "cpu",
                 dtype: torch.dtype | None = None, progress: Callable[[int, int], None] | None = None,
                 engine: str = "mock", **trace_options: Any) -> RunResult:
    """Build the model (seeded weights), run prefill + eager decode for every batch and write the
    trace to ``out_dir``. ``engine``: ``mock`` (align_mock's DSA model, its trace hook) or
    ``transformers`` (transformers' own DeepseekV32ForCausalLM under its own ``generate()``, traced
    through forward hooks on its indexer, align.trace.topk.engines). ``trace_options`` are
    ``TopkTraceConfig`` fields (block_size, shard_size, record_scores, ...); they win over
    ``ALIGN_TOPK_TRACE_*`` variables. ``progress(done, total)`` is called after each batch."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: use {' or '.join(ENGINES)}")
    spec = spec or WorkloadSpec()
    if engine == "transformers":
        return _run_transformers(Path(out_dir), spec, config, n_layers, batch_size, device, dtype, progress,
                                 trace_options)
    cfg = named_config(config)
    trace_cfg = TopkTraceConfig.from_env(out_dir=Path(out_dir), enabled=True, **trace_options)
    torch.manual_seed(spec.seed)
    model = Transformer(cfg, n_layers, "dsa", device=device, dtype=dtype).eval()
    requests = make_requests(spec, cfg.vocab_size, cfg.max_seq_len, trace_cfg.block_size)
    batches = plan_batches(requests, batch_size)
    meta = {
        "model": {"config": config, **dataclasses.asdict(cfg), "layers_built": len(model.layers),
                  "index_topk": cfg.index_topk, "dtype": str(model.embed.weight.dtype), "device": device},
        "workload": {**dataclasses.asdict(spec), "batch_size": batch_size, "batches": len(batches)},
        "runner": "align.trace.workload (eager decode)",
    }
    return _trace_batches(Path(out_dir), trace_cfg, meta, requests, batches, lambda t: t.attach(model),
                          lambda t, batch: _run_batch(model, t, batch, device), progress)


def _trace_batches(out_dir: Path, trace_cfg: TopkTraceConfig, meta: dict, requests: list[Request],
                   batches: list[list[Request]], attach: Callable, run_batch: Callable,
                   progress: Callable[[int, int], None] | None) -> RunResult:
    """Register the requests, run every batch with the tracer installed (``attach(tracer)``, a context
    manager) and close the trace: the same for every engine."""
    tracer = TopkTracer(trace_cfg, meta)
    start = time.perf_counter()
    try:
        for req in requests:
            tracer.add_request(req.request_id, **req.info())
        with attach(tracer), torch.no_grad():
            for done, batch in enumerate(batches, 1):
                run_batch(tracer, batch)
                if progress is not None:
                    progress(done, len(batches))
    finally:
        summary = tracer.close()
    return RunResult(out_dir, requests, len(batches), summary, time.perf_counter() - start)


def _run_batch(model: Transformer, tracer: TopkTracer, batch: list[Request], device: str) -> None:
    prompt_len = batch[0].prompt_len
    steps = max(r.output_len for r in batch)
    tokens = torch.as_tensor(np.stack([r.tokens for r in batch]), dtype=torch.long, device=device)
    model.setup_caches(len(batch), prompt_len + steps)
    tracer.begin_batch([r.request_id for r in batch], prompt_len, [r.output_len for r in batch])
    try:
        first = model.prefill(tokens).argmax(-1, keepdim=True)
        loop = DecodeLoop(model, first, prompt_len, use_cuda_graph=False)
        for _ in range(steps):
            loop.step()
    finally:
        tracer.end_batch()


def _transformers_model(config: str, n_layers: int | None, device: str, dtype: torch.dtype | None):
    """transformers' DeepSeek-V3.2 with random weights: CPU-sized (``small``) or V3.2's per-head dims
    with 16 local heads (``v32``, TP 8 simulated), dense MLPs, ``n_layers`` layers (default 2)."""
    from align_mock.frameworks.base import Case
    from align_mock.frameworks.hf import make_config
    from transformers import AutoModelForCausalLM

    if config not in ("small", "v32"):
        raise ValueError(f"unknown config {config!r} for the transformers engine: use small or v32")
    layers = n_layers or 2
    hf_cfg = make_config(Case(op="dsa", phase="generation", kv_len=1, config=config, tp=1 if config == "small" else 8,
                              device=device, overrides=(("num_hidden_layers", layers),
                                                        ("first_k_dense_replace", layers))))
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype or torch.float32)
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(hf_cfg).eval()
    finally:
        torch.set_default_dtype(old)
    return model, hf_cfg


def _run_transformers(out_dir: Path, spec: WorkloadSpec, config: str, n_layers: int | None, batch_size: int,
                      device: str, dtype: torch.dtype | None, progress, trace_options: dict) -> RunResult:
    """The workload on transformers' own model: one ``generate()`` per batch (DynamicCache, eager
    decode), the tracer on its indexers' forward hooks."""
    from align.trace.topk.engines import attach_engine

    import transformers

    trace_cfg = TopkTraceConfig.from_env(out_dir=out_dir, enabled=True, **trace_options)
    torch.manual_seed(spec.seed)
    model, hf_cfg = _transformers_model(config, n_layers, device, dtype)
    max_len = named_config(config).max_seq_len  # the same lengths as the mock engine's workload
    requests = make_requests(spec, hf_cfg.vocab_size, max_len, trace_cfg.block_size)
    batches = plan_batches(requests, batch_size)
    meta = {
        "model": {"engine": "transformers", "transformers": transformers.__version__, "class": type(model).__name__,
                  "config": config, "layers_built": hf_cfg.num_hidden_layers, "index_topk": hf_cfg.index_topk,
                  "heads": hf_cfg.num_attention_heads, "dtype": str(next(model.parameters()).dtype), "device": device},
        "workload": {**dataclasses.asdict(spec), "batch_size": batch_size, "batches": len(batches)},
        "runner": "align.trace.workload (transformers generate(), DynamicCache, eager decode)",
        "blocks": "logical: token position // block_size (transformers' DynamicCache is contiguous, no block table)",
    }
    return _trace_batches(out_dir, trace_cfg, meta, requests, batches, lambda t: attach_engine(t, model),
                          lambda t, batch: _generate_batch(model, t, batch, device), progress)


def _generate_batch(model, tracer: TopkTracer, batch: list[Request], device: str) -> None:
    """One batch under transformers' generate(): its first token comes from the prefill, then as many
    decode forwards as the batch's longest output."""
    steps = max(r.output_len for r in batch)
    tokens = torch.as_tensor(np.stack([r.tokens for r in batch]), dtype=torch.long, device=device)
    tracer.begin_batch([r.request_id for r in batch], batch[0].prompt_len, [r.output_len for r in batch])
    try:
        model.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=steps + 1,
                       min_new_tokens=steps + 1, do_sample=False, pad_token_id=0, eos_token_id=None)
    finally:
        tracer.end_batch()
