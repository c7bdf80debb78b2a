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

Generation length (``Generation``): by default each request decodes its drawn ``output_len`` steps,
EOS ignored. With ``max_new_tokens`` set, every request instead generates until it emits the EOS
token or reaches the cap: ``max_new_tokens`` tokens when > 0, the model's length (``max_seq_len``)
when <= 0, as seed 003 defines it. A row that emitted EOS is no longer recorded while the rest of
its batch goes on; ``requests.jsonl`` then holds what ran: ``output_len`` (decode steps),
``generated_tokens`` (EOS included), ``finish`` (``eos`` or ``length``) and ``drawn_output_len``.
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


@dataclass(frozen=True)
class Generation:
    """How long a request generates: its drawn ``output_len`` (``max_new_tokens`` None, EOS ignored),
    or until ``eos_token`` capped at ``max_new_tokens`` tokens (> 0) or at ``max_len`` (<= 0)."""

    max_new_tokens: int | None = None
    eos_token: int = 1
    max_len: int = 0

    @property
    def until_eos(self) -> bool:
        return self.max_new_tokens is not None

    def steps(self, batch: list[Request]) -> list[int]:
        """Decode steps each row may run at most (the first token comes from the prefill)."""
        if not self.until_eos:
            return [r.output_len for r in batch]
        tokens = self.max_new_tokens if self.max_new_tokens > 0 else self.max_len - batch[0].prompt_len
        if tokens < 1:
            raise ValueError(f"prompt of {batch[0].prompt_len} tokens leaves no room to generate within "
                             f"max_seq_len {self.max_len}")
        return [tokens - 1] * len(batch)


class _Stops:
    """One batch's rows that emitted EOS: ``see(tokens, j)`` is shown each row's ``j``-th generated
    token (0: the prefill's); a row whose token is EOS ran ``j`` decode steps and the tracer is told
    to record no more of it."""

    def __init__(self, tracer: TopkTracer, gen: Generation, batch: list[Request], steps: list[int]) -> None:
        self.tracer, self.gen, self.batch, self.cap = tracer, gen, batch, steps
        self.ended: dict[int, int] = {}

    def see(self, tokens: Any, j: int) -> None:
        """``tokens``: each row's ``j``-th token (a tensor or list); nothing is read without EOS."""
        if not self.gen.until_eos:
            return
        for row, token in enumerate(tokens.tolist() if hasattr(tokens, "tolist") else tokens):
            if token == self.gen.eos_token and row not in self.ended:
                self.ended[row] = j
                self.tracer.finish_row(row, j)

    @property
    def all_ended(self) -> bool:
        return len(self.ended) == len(self.batch)

    def outcome(self) -> dict[int, dict[str, Any]]:
        """Per request id, the lengths as run (``requests.jsonl`` fields); empty without EOS."""
        if not self.gen.until_eos:
            return {}
        out = {}
        for row, req in enumerate(self.batch):
            steps = self.ended.get(row, self.cap[row])
            out[req.request_id] = {"output_len": steps, "generated_tokens": steps + 1,
                                   "finish": "eos" if row in self.ended else "length",
                                   "drawn_output_len": req.output_len}
        return out


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
                 engine: str = "mock", max_new_tokens: int | None = None, eos_token: int | None = None,
                 max_seq_len: int | None = None, prefill_chunk: int | None = None,
                 **trace_options: Any) -> RunResult:
    """Build the model (seeded weights), run prefill + eager decode for every batch and write the
    trace to ``out_dir``. ``engine``: ``mock`` (align_mock's DSA model, its trace hook) or
    ``transformers`` (transformers' own DeepseekV32ForCausalLM under its own ``generate()``, traced
    through forward hooks on its indexer, align.trace.topk.engines). ``max_new_tokens`` and
    ``eos_token`` (default: the model's, 1) choose generation until EOS (``Generation``);
    ``max_seq_len`` caps prompt + output (default: the config's); ``prefill_chunk`` (transformers)
    prefills long prompts in chunks of that many tokens, so the indexer's scores of a chunk, not of
    the whole prompt, fill the device. ``trace_options`` are ``TopkTraceConfig`` fields (block_size,
    shard_size, record_scores, ...); they win over ``ALIGN_TOPK_TRACE_*`` variables.
    ``progress(done, total)`` is called after each batch."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: use {' or '.join(ENGINES)}")
    if prefill_chunk is not None and (engine != "transformers" or prefill_chunk < 1):
        raise ValueError("a prefill chunk is for the transformers engine and must be >= 1 token")
    spec = spec or WorkloadSpec()
    if engine == "transformers":
        return _run_transformers(Path(out_dir), spec, config, n_layers, batch_size, device, dtype, progress,
                                 trace_options, max_new_tokens, eos_token, max_seq_len, prefill_chunk)
    cfg = named_config(config)
    if max_seq_len is not None and max_seq_len > cfg.max_seq_len:
        raise ValueError(f"max_seq_len {max_seq_len} is beyond the mock model's {cfg.max_seq_len} (config {config})")
    trace_cfg = TopkTraceConfig.from_env(out_dir=Path(out_dir), enabled=True, **trace_options)
    torch.manual_seed(spec.seed)
    model = Transformer(cfg, n_layers, "dsa", device=device, dtype=dtype).eval()
    max_len = max_seq_len or cfg.max_seq_len
    gen = Generation(max_new_tokens, 1 if eos_token is None else eos_token, max_len)
    requests = make_requests(spec, cfg.vocab_size, max_len, trace_cfg.block_size)
    batches = plan_batches(requests, batch_size)
    meta = {
        "model": {"config": config, **dataclasses.asdict(cfg), "layers_built": len(model.layers),
                  "index_topk": cfg.index_topk, "dtype": str(model.embed.weight.dtype), "device": device},
        "workload": {**dataclasses.asdict(spec), "batch_size": batch_size, "batches": len(batches),
                     "max_seq_len": max_len},
        "generation": _generation_meta(gen),
        "runner": "align.trace.workload (eager decode)",
    }
    return _trace_batches(Path(out_dir), trace_cfg, meta, requests, batches, gen, device, lambda t: t.attach(model),
                          lambda tokens, steps, stops: _run_batch(model, tokens, steps, stops), progress)


def _generation_meta(gen: Generation) -> dict[str, Any]:
    if not gen.until_eos:
        return {"until": "drawn output_len (EOS ignored)"}
    return {"until": "eos", "eos_token": gen.eos_token, "max_new_tokens": gen.max_new_tokens,
            "cap": f"{gen.max_new_tokens} tokens" if gen.max_new_tokens > 0 else f"max_seq_len {gen.max_len}"}


def _trace_batches(out_dir: Path, trace_cfg: TopkTraceConfig, meta: dict, requests: list[Request],
                   batches: list[list[Request]], gen: Generation, device: str, attach: Callable,
                   run_batch: Callable, progress: Callable[[int, int], None] | None) -> RunResult:
    """Run every batch with the tracer installed (``attach(tracer)``, a context manager): the tracer
    told which request each row holds, ``run_batch(tokens, steps, stops)`` decoding at most ``steps``
    steps and showing each generated token to ``stops``; then register the batch's requests with the
    lengths they ran (``finish: error`` for a batch that raised), and close the trace: the same for
    every engine."""
    tracer = TopkTracer(trace_cfg, meta)
    start = time.perf_counter()
    try:
        with attach(tracer), torch.no_grad():
            for done, batch in enumerate(batches, 1):
                ran: dict[int, dict[str, Any]] = {}
                caps = gen.steps(batch)
                stops = _Stops(tracer, gen, batch, caps)
                tracer.begin_batch([r.request_id for r in batch], batch[0].prompt_len, caps)
                try:
                    run_batch(torch.as_tensor(np.stack([r.tokens for r in batch]), dtype=torch.long, device=device),
                              max(caps), stops)
                    ran = stops.outcome()
                except BaseException:
                    ran = {r.request_id: {"finish": "error"} for r in batch}
                    raise
                finally:
                    tracer.end_batch()
                    for req in sorted(batch, key=lambda r: r.request_id):
                        tracer.add_request(req.request_id, **{**req.info(), **ran.get(req.request_id, {})})
                if progress is not None:
                    progress(done, len(batches))
    finally:
        summary = tracer.close()
    return RunResult(out_dir, requests, len(batches), summary, time.perf_counter() - start)


def _run_batch(model: Transformer, tokens: torch.Tensor, steps: int, stops: _Stops) -> None:
    """One batch on the mock: prefill, then eager decode steps until ``steps`` or every row's EOS."""
    prompt_len = tokens.shape[1]
    model.setup_caches(tokens.shape[0], prompt_len + steps)
    first = model.prefill(tokens).argmax(-1, keepdim=True)
    loop = DecodeLoop(model, first, prompt_len, use_cuda_graph=False)
    stops.see(first[:, 0], 0)
    for j in range(1, steps + 1):
        if stops.all_ended:
            break
        loop.step()
        stops.see(loop.tokens[:, 0], j)


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
                      device: str, dtype: torch.dtype | None, progress, trace_options: dict,
                      max_new_tokens: int | None, eos_token: int | None, max_seq_len: int | None,
                      prefill_chunk: int | None) -> RunResult:
    """The workload on transformers' own model: one ``generate()`` per batch (DynamicCache, eager
    decode), the tracer on its indexers' forward hooks."""
    from align.trace.topk.engines import attach_engine

    import transformers

    trace_cfg = TopkTraceConfig.from_env(out_dir=out_dir, enabled=True, **trace_options)
    torch.manual_seed(spec.seed)
    model, hf_cfg = _transformers_model(config, n_layers, device, dtype)
    # the same lengths as the mock engine's workload unless told; transformers' model itself goes further
    max_len = max_seq_len or named_config(config).max_seq_len
    if max_len > hf_cfg.max_position_embeddings:
        raise ValueError(f"max_seq_len {max_len} is beyond the model's {hf_cfg.max_position_embeddings} positions")
    gen = Generation(max_new_tokens, hf_cfg.eos_token_id if eos_token is None else eos_token, max_len)
    requests = make_requests(spec, hf_cfg.vocab_size, max_len, trace_cfg.block_size)
    batches = plan_batches(requests, batch_size)
    meta = {
        "model": {"engine": "transformers", "transformers": transformers.__version__, "class": type(model).__name__,
                  "config": config, "layers_built": hf_cfg.num_hidden_layers, "index_topk": hf_cfg.index_topk,
                  "heads": hf_cfg.num_attention_heads, "dtype": str(next(model.parameters()).dtype), "device": device},
        "workload": {**dataclasses.asdict(spec), "batch_size": batch_size, "batches": len(batches),
                     "max_seq_len": max_len},
        "generation": {**_generation_meta(gen), "prefill_chunk": prefill_chunk},
        "runner": "align.trace.workload (transformers generate(), DynamicCache, eager decode)",
        "blocks": "logical: token position // block_size (transformers' DynamicCache is contiguous, no block "
                  "table; its paged cache (continuous batching) rejects DeepSeek-V3.2's indexed_attention layers)",
    }
    return _trace_batches(out_dir, trace_cfg, meta, requests, batches, gen, device, lambda t: attach_engine(t, model),
                          lambda tokens, steps, stops: _generate_batch(model, tokens, steps, stops, prefill_chunk),
                          progress)


def _generate_batch(model, tokens: torch.Tensor, steps: int, stops: _Stops, prefill_chunk: int | None) -> None:
    """One batch under transformers' generate(): its first token comes from the prefill, then ``steps``
    decode forwards, or fewer when every row emitted EOS. With ``prefill_chunk``, all but the prompt's
    last token go through the model in chunks first, into the cache that generate() then continues (it
    prefills only the uncached rest)."""
    from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList

    prompt_len = tokens.shape[1]
    gen = stops.gen

    class SeeEos(StoppingCriteria):
        """Shows each new token to ``stops``; never stops generation itself (generate()'s EOS does)."""

        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            stops.see(input_ids[:, -1], input_ids.shape[1] - prompt_len - 1)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    new = steps + 1
    if gen.until_eos:
        length = dict(max_new_tokens=new, eos_token_id=gen.eos_token, stopping_criteria=StoppingCriteriaList([SeeEos()]))
    else:
        length = dict(max_new_tokens=new, min_new_tokens=new, eos_token_id=None)
    cache = None
    if prefill_chunk is not None and prompt_len - 1 > prefill_chunk:
        cache = DynamicCache(config=model.config)
        for a in range(0, prompt_len - 1, prefill_chunk):
            b = min(a + prefill_chunk, prompt_len - 1)
            model(input_ids=tokens[:, a:b], attention_mask=torch.ones_like(tokens[:, :b]), past_key_values=cache,
                  use_cache=True, logits_to_keep=1)
    model.generate(tokens, attention_mask=torch.ones_like(tokens), past_key_values=cache, do_sample=False,
                   pad_token_id=0, **length)
