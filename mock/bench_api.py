"""What ``align bench`` calls: a submodule of a real decoder layer and its standalone mock, same inputs.

``build_pair`` builds one ``DecoderLayer`` (weights random, from the config) and takes its
``self_attn`` (ops ``dsa``, ``mla``) or ``mlp`` (op ``moe``) as the submodule; the mock is built
from the config alone, as a collector would build it, then loaded with the submodule's state dict,
so both compute the same function. Each gets its own cache with identical contents.

Phases: ``context`` runs ``batch x seq`` new tokens after ``kv_len`` cached ones; ``generation``
runs one token per request at position ``kv_len`` after ``kv_len`` cached tokens. Caches hold
exactly ``kv_len + seq`` slots (sized to the request, not to ``max_seq_len``) and their first
``kv_len`` positions are filled with random data. Every call rewrites the same slots with the same
values and reads nothing else it wrote, so calls are idempotent and ``reset`` is ``None``.
Generation passes its position as a device tensor, as the E2E decode loop does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from align_mock.config import CONFIGS, DSAConfig, named_config
from align_mock.dsa import KVCache, MLAAttention, precompute_freqs_cis
from align_mock.model import DecoderLayer
from align_mock.moe import MoE

OPS = ("dsa", "mla", "moe")
PHASES = ("context", "generation")


@dataclass
class BenchPair:
    """A submodule of a decoder layer and its mock, each with a zero-argument call on fixed inputs."""

    op: str
    phase: str
    submodule: nn.Module
    mock: nn.Module
    submodule_call: Callable[[], Tensor]
    mock_call: Callable[[], Tensor]
    reset: Callable[[], None] | None
    shape: dict[str, Any] = field(default_factory=dict)


def _no_grad(fn: Callable[[], Tensor]) -> Callable[[], Tensor]:
    def call() -> Tensor:
        with torch.no_grad():
            return fn()

    return call


def _validate(op: str, phase: str, cfg: DSAConfig, batch: int, seq: int, kv_len: int, layer_idx: int) -> None:
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if seq < 1:
        raise ValueError(f"seq must be >= 1, got {seq}")
    if kv_len < 0:
        raise ValueError(f"kv_len must be >= 0, got {kv_len}")
    if phase == "generation" and seq != 1:
        raise ValueError(f"generation runs one token per request: seq must be 1, got {seq}")
    if kv_len + seq > cfg.max_seq_len:
        raise ValueError(f"kv_len + seq = {kv_len + seq} exceeds max_seq_len {cfg.max_seq_len}")
    if not 0 <= layer_idx < cfg.n_layers:
        raise ValueError(f"layer_idx {layer_idx} outside [0, n_layers={cfg.n_layers})")
    if op == "moe" and layer_idx < cfg.n_dense_layers:
        raise ValueError(f"layer {layer_idx} has a dense MLP (the first {cfg.n_dense_layers} layers do); "
                         f"op 'moe' needs layer_idx >= {cfg.n_dense_layers}")
    # the per-rank shapes of the whole decoder layer; each property raises its own clear ValueError
    mlp_shapes = ("local_inter_dim",) if layer_idx < cfg.n_dense_layers else ("local_experts", "local_shared_inter_dim")
    for name in ("local_heads", *mlp_shapes):
        getattr(cfg, name)


def build_pair(op: str, phase: str, *, tp: int = 1, batch: int = 1, seq: int = 1, kv_len: int = 0,
               config: str = "v32", device: str | torch.device = "cuda", dtype: torch.dtype = torch.bfloat16,
               seed: int = 0, layer_idx: int | None = None) -> BenchPair:
    """Build the submodule / mock pair for ``op`` (``dsa``, ``mla``, ``moe``) in ``phase``
    (``context``, ``generation``), with TP degree ``tp`` simulated by per-rank shapes.

    ``config``: ``v32`` (DeepSeek-V3.2 671B dims), ``demo`` (the example scripts) or ``small``
    (tests). ``layer_idx`` defaults to 0 for attention ops (a dense-MLP layer, the cheapest to
    build) and to the first MoE layer for ``moe``. Raises ValueError for invalid arguments.
    """
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; choose one of {OPS}")
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; choose one of {PHASES}")
    if config not in CONFIGS:
        raise ValueError(f"unknown config {config!r}; choose one of {sorted(CONFIGS)}")
    if tp < 1:
        raise ValueError(f"tp must be >= 1, got {tp}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    cfg = named_config(config, tp_size=tp)
    if layer_idx is None:
        layer_idx = cfg.n_dense_layers if op == "moe" else 0
    _validate(op, phase, cfg, batch, seq, kv_len, layer_idx)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")

    torch.manual_seed(seed)
    attention = op if op in ("dsa", "mla") else "dsa"
    layer = DecoderLayer(cfg, layer_idx, attention, device=device, dtype=dtype)
    submodule: nn.Module
    mock: nn.Module
    if op == "moe":
        submodule = layer.mlp
        mock = MoE(cfg, device=device, dtype=dtype)
    else:
        submodule = layer.self_attn
        mock = MLAAttention(cfg, use_indexer=op == "dsa", device=device, dtype=dtype)
    del layer
    mock.load_state_dict(submodule.state_dict())
    for module in (submodule, mock):
        module.eval().requires_grad_(False)

    generator = torch.Generator(device=device).manual_seed(seed + 1)
    x = torch.randn(batch, seq, cfg.dim, generator=generator, device=device, dtype=dtype)
    shape: dict[str, Any] = {
        "op": op, "phase": phase, "config": config, "batch": batch, "seq": seq, "kv_len": kv_len,
        "tp": tp, "local_heads": cfg.local_heads, "dtype": str(dtype).removeprefix("torch."),
        "layer_idx": layer_idx, "dim": cfg.dim,
    }
    if op == "moe":
        tokens = batch * seq
        dense = mock.uses_dense(tokens)
        shape.update(tokens=tokens, local_experts=cfg.local_experts, n_activated_experts=cfg.n_activated_experts,
                     moe_path="dense" if dense else "sparse", capturable=dense)
        sub_call = _no_grad(lambda: submodule(x))
        mock_call = _no_grad(lambda: mock(x))
    else:
        cache_len = kv_len + seq
        sub_cache = KVCache(cfg, batch, cache_len, device=device, dtype=dtype, indexer=op == "dsa")
        sub_cache.fill_random_(kv_len, generator)
        mock_cache = sub_cache.clone()
        freqs = precompute_freqs_cis(cfg, cache_len).to(device)[kv_len: kv_len + seq]
        start: int | Tensor = (torch.full((1,), kv_len, dtype=torch.long, device=device)
                               if phase == "generation" else kv_len)
        shape.update(cache_len=cache_len, kv_lora_rank=cfg.kv_lora_rank, qk_rope_head_dim=cfg.qk_rope_head_dim,
                     capturable=True)
        if op == "dsa":
            shape.update(index_topk=min(cfg.index_topk, cache_len), index_n_heads=cfg.index_n_heads)
        sub_call = _no_grad(lambda: submodule(x, start, sub_cache, freqs))
        mock_call = _no_grad(lambda: mock(x, start, mock_cache, freqs))
    return BenchPair(op=op, phase=phase, submodule=submodule, mock=mock, submodule_call=sub_call,
                     mock_call=mock_call, reset=None, shape=shape)
