"""The DSA mock layer as a collectable op for ``align collect`` (see align/data/collect.toml).

A case builds only the standalone mock layer (from the config, TP split by local heads), with its
own KV cache filled with random data for the cached tokens, exactly as ``align bench`` builds the
mock side; one call is one forward of the op. Context: ``(seq, batch, tp, prefix)``; generation:
``(kv_len, batch, tp)``, one token per request at position ``kv_len``. ``align_mock.collect_mla``
is the same layer without the indexer (DeepSeek-V3's MLA), on these functions with ``indexer=False``.
"""

from __future__ import annotations

import torch

from align_mock.config import named_config
from align_mock.dsa import KVCache, MLAAttention, precompute_freqs_cis

CONFIG = "v32"
MODEL = "deepseek-ai/DeepSeek-V3.2"
ARCHITECTURE = "DeepseekV32ForCausalLM"


def _shape(phase: str, *case: int) -> tuple[int, int, int, int]:
    """(new tokens per request, batch, tp, cached tokens) of a case."""
    if phase == "context":
        seq, batch, tp, prefix = case
        return seq, batch, tp, prefix
    kv_len, batch, tp = case
    return 1, batch, tp, kv_len


def describe(phase: str, *case: int, model: str = MODEL, architecture: str = ARCHITECTURE) -> dict:
    """The row fields of aiconfigurator's dsa_*_module (and mla_*_module) tables: num_heads = local
    heads, tp_size 1."""
    seq, batch, tp, cached = _shape(phase, *case)
    cfg = named_config(CONFIG, tp_size=tp)
    return {"model": model, "architecture": architecture, "mla_dtype": "bfloat16", "kv_cache_dtype": "bfloat16",
            "gemm_type": "bfloat16", "num_heads": cfg.local_heads, "batch_size": batch,
            "isl": seq if phase == "context" else 1, "tp_size": 1, "step": cached}


def estimate(phase: str, *case: int, indexer: bool = True) -> int:
    """Bytes a case needs: weights, cache, and the fp32 score tensors of attention and the indexer
    (the context path materializes heads x S x T of them), with room for temporaries."""
    seq, batch, tp, cached = _shape(phase, *case)
    cfg = named_config(CONFIG, tp_size=tp)
    total = seq + cached
    h = cfg.local_heads
    weights = 2 * (cfg.dim * cfg.q_lora_rank + cfg.q_lora_rank * h * cfg.qk_head_dim
                   + cfg.dim * (cfg.kv_lora_rank + cfg.qk_rope_head_dim)
                   + cfg.kv_lora_rank * h * (cfg.qk_nope_head_dim + cfg.v_head_dim) + h * cfg.v_head_dim * cfg.dim)
    cache = 2 * batch * total * (cfg.kv_lora_rank + cfg.qk_rope_head_dim + (cfg.index_head_dim if indexer else 0))
    scores = 4 * batch * seq * total * (3 * h + (2 * cfg.index_n_heads if indexer else 0))
    acts = 2 * batch * seq * (cfg.dim + h * (cfg.qk_head_dim + 2 * cfg.v_head_dim)) * 4
    return weights + cache + scores + acts + (1 << 30)


def build(phase: str, *case: int, device: str = "cuda", dtype: torch.dtype | None = None, indexer: bool = True):
    seq, batch, tp, cached = _shape(phase, *case)
    dtype = dtype or torch.bfloat16
    total = seq + cached
    cfg = named_config(CONFIG, tp_size=tp, max_seq_len=max(total, named_config(CONFIG).max_seq_len))
    torch.manual_seed(0)
    dev = torch.device(device)
    layer = MLAAttention(cfg, use_indexer=indexer, device=dev, dtype=dtype).eval().requires_grad_(False)
    gen = torch.Generator(device=dev).manual_seed(1)
    cache = KVCache(cfg, batch, total, device=dev, dtype=dtype, indexer=indexer)
    cache.fill_random_(cached, gen)
    x = torch.randn(batch, seq, cfg.dim, generator=gen, device=dev, dtype=dtype)
    freqs = precompute_freqs_cis(cfg, total).to(dev)[cached:total]
    start = torch.full((1,), cached, dtype=torch.long, device=dev) if phase == "generation" else cached

    def call() -> None:
        with torch.no_grad():
            layer(x, start, cache, freqs)

    return call
