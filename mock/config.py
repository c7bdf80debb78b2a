"""Configuration of the DeepSeek-V3.2 mock layers (DSA / MLA attention, MoE) and their small E2E model.

Default values are those of DeepSeek-V3.2-Exp (671B). Sources, in the public repository
``deepseek-ai/DeepSeek-V3.2-Exp`` (commit 3b99a53):

* ``inference/config_671B_v3.2.json``: vocab_size, dim, inter_dim, moe_inter_dim, n_layers,
  n_dense_layers, n_heads, n_routed_experts, n_shared_experts, n_activated_experts,
  n_expert_groups, n_limited_groups, route_scale, score_func, q_lora_rank, kv_lora_rank,
  qk_nope_head_dim, qk_rope_head_dim, v_head_dim, index_n_heads, index_head_dim, index_topk
  (its ``dtype: fp8`` and ``scale_fmt: ue8m0`` are not modelled: every path here is bf16/fp32).
* ``inference/model.py`` (``ModelArgs`` defaults, which that json does not override):
  max_batch_size 8, max_seq_len 4096 * 4, original_seq_len 4096, rope_theta 10000, rope_factor 40,
  beta_fast 32, beta_slow 1, mscale 1.0; RMSNorm/LayerNorm eps 1e-6.

Tensor parallelism is simulated on one GPU: ``tp_size`` shrinks the per-rank shapes (attention
heads, expert count, MLP width) as rank 0 of a TP group would hold them; no collective runs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# keys of the reference json that describe the checkpoint's FP8 storage, not the architecture
_FP8_ONLY_KEYS = frozenset({"dtype", "scale_fmt"})


@dataclass
class DSAConfig:
    """Architecture of DeepSeek-V3.2 (defaults: the 671B model) plus the simulated TP degree.

    MoE under TP follows the reference's expert parallelism inside the TP group: the gate scores
    all ``n_routed_experts``, but rank 0 holds (and computes) only experts
    ``[0, local_experts)``; the shared expert and the dense MLP are split by width
    (``inter_dim // tp_size``). The lightning indexer is replicated on every rank, as in the
    reference (its projections are plain, not column-parallel).
    """

    # model size (config_671B_v3.2.json)
    vocab_size: int = 129280
    dim: int = 7168
    inter_dim: int = 18432
    moe_inter_dim: int = 2048
    n_layers: int = 61
    n_dense_layers: int = 3
    n_heads: int = 128
    # MoE (config_671B_v3.2.json)
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    n_activated_experts: int = 8
    n_expert_groups: int = 8
    n_limited_groups: int = 4
    route_scale: float = 2.5
    score_func: str = "sigmoid"
    # MLA (config_671B_v3.2.json)
    q_lora_rank: int = 1536
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    # lightning indexer (config_671B_v3.2.json)
    index_n_heads: int = 64
    index_head_dim: int = 128
    index_topk: int = 2048
    # YaRN rope (ModelArgs defaults in inference/model.py)
    original_seq_len: int = 4096
    rope_theta: float = 10000.0
    rope_factor: float = 40.0
    beta_fast: int = 32
    beta_slow: int = 1
    mscale: float = 1.0
    # serving limits (ModelArgs defaults); YaRN is active because max_seq_len > original_seq_len
    max_seq_len: int = 4096 * 4
    max_batch_size: int = 8
    norm_eps: float = 1e-6
    # mock-only knobs
    tp_size: int = 1
    gate_bias: bool = True  # the routing-only bias (e_score_correction_bias) of V3 / V3.2
    moe_dense_max_tokens: int = 256  # MoE computes every local expert densely up to this many tokens

    # implementation choices of ours that an independent reference makes differently (README: "Our
    # way-B mock against the independent reference"): the indexer's scoring precision (bf16; the
    # reference's FP8 kernel is not reproduced; transformers scores in fp32) and the RMSNorm kernel
    # (PyTorch's fused one, or written out as pow, mean, rsqrt and mul, as transformers does)
    index_score_dtype: str = "bf16"
    rms_norm: str = "fused"

    def __post_init__(self) -> None:
        if self.tp_size < 1:
            raise ValueError(f"tp_size must be >= 1, got {self.tp_size}")
        if self.index_score_dtype not in ("bf16", "fp32"):
            raise ValueError(f"index_score_dtype must be 'bf16' or 'fp32', got {self.index_score_dtype!r}")
        if self.rms_norm not in ("fused", "unfused"):
            raise ValueError(f"rms_norm must be 'fused' or 'unfused', got {self.rms_norm!r}")
        if self.score_func not in ("sigmoid", "softmax"):
            raise ValueError(f"score_func must be 'sigmoid' or 'softmax', got {self.score_func!r}")
        if self.qk_rope_head_dim % 2 or self.qk_rope_head_dim > self.index_head_dim:
            raise ValueError("qk_rope_head_dim must be even and fit in index_head_dim "
                             f"(got {self.qk_rope_head_dim} and {self.index_head_dim})")
        if self.n_routed_experts % self.n_expert_groups:
            raise ValueError(f"n_routed_experts ({self.n_routed_experts}) must be divisible by "
                             f"n_expert_groups ({self.n_expert_groups})")
        if not 1 <= self.n_limited_groups <= self.n_expert_groups:
            raise ValueError(f"n_limited_groups ({self.n_limited_groups}) must be in [1, n_expert_groups]")
        per_group = self.n_routed_experts // self.n_expert_groups
        if self.n_activated_experts > self.n_limited_groups * per_group:
            raise ValueError(f"n_activated_experts ({self.n_activated_experts}) exceeds the experts of the "
                             f"{self.n_limited_groups} chosen groups ({self.n_limited_groups * per_group})")

    @property
    def qk_head_dim(self) -> int:
        """Query/key width per head: the no-position part plus the rotary part."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def local_heads(self) -> int:
        """Attention heads held by one TP rank."""
        return _split(self.n_heads, self.tp_size, "n_heads")

    @property
    def local_experts(self) -> int:
        """Routed experts held (and computed) by one TP rank: rank 0 holds experts [0, local_experts)."""
        return _split(self.n_routed_experts, self.tp_size, "n_routed_experts")

    @property
    def local_inter_dim(self) -> int:
        """Width of the dense MLP on one TP rank (column/row-parallel split)."""
        return _split(self.inter_dim, self.tp_size, "inter_dim")

    @property
    def local_shared_inter_dim(self) -> int:
        """Width of the shared expert(s) on one TP rank."""
        return _split(self.n_shared_experts * self.moe_inter_dim, self.tp_size, "n_shared_experts * moe_inter_dim")

    @property
    def yarn_active(self) -> bool:
        """The reference applies the YaRN correction (and its attention mscale) only when serving
        beyond the pre-training context."""
        return self.max_seq_len > self.original_seq_len

    def replace(self, **changes: Any) -> DSAConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def small(cls, **overrides: Any) -> DSAConfig:
        """Tiny dimensions for CPU tests: every mechanism (YaRN, sparse top-k, grouped routing,
        dense first layer) is active, but a forward pass takes milliseconds. The indexer keeps 8
        heads: with very few, a key's score is often exactly 0 (every head's ReLU at 0) and top-k
        ties would make equal computations in different forms pick different keys."""
        values: dict[str, Any] = dict(
            vocab_size=256, dim=64, inter_dim=128, moe_inter_dim=32, n_layers=2, n_dense_layers=1,
            n_heads=4, n_routed_experts=8, n_shared_experts=1, n_activated_experts=3,
            n_expert_groups=4, n_limited_groups=2, route_scale=2.5,
            q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
            index_n_heads=8, index_head_dim=16, index_topk=8,
            original_seq_len=128, max_seq_len=512, max_batch_size=4,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def demo(cls, **overrides: Any) -> DSAConfig:
        """The E2E example's model: the real per-head shapes of V3.2 (q/kv LoRA ranks, 128+64 q/k,
        128 v, indexer 64 x 128 with top-2048) but 16 heads, width 2048 and 16 experts, so that a
        profile of a few layers stays small. Mock and E2E examples both use it."""
        values: dict[str, Any] = dict(
            vocab_size=32768, dim=2048, inter_dim=4096, moe_inter_dim=1024, n_layers=4, n_dense_layers=1,
            n_heads=16, n_routed_experts=16, n_shared_experts=1, n_activated_experts=4,
            n_expert_groups=4, n_limited_groups=2,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path, **overrides: Any) -> DSAConfig:
        """Read a reference-style config (``inference/config_671B_v3.2.json``); missing keys keep
        their defaults. ``dtype``/``scale_fmt`` are accepted and ignored (no FP8 path here)."""
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - _FP8_ONLY_KEYS)
        if unknown:
            raise ValueError(f"{path}: unknown config keys {unknown}")
        values = {k: v for k, v in data.items() if k in names}
        values.update(overrides)
        return cls(**values)


def _split(total: int, parts: int, what: str) -> int:
    if total % parts:
        raise ValueError(f"{what} ({total}) is not divisible by tp_size ({parts})")
    return total // parts


CONFIGS = {"v32": DSAConfig, "small": DSAConfig.small, "demo": DSAConfig.demo}
"""Named configurations: ``v32`` (the 671B model), ``demo`` (the example scripts), ``small`` (tests)."""


def named_config(name: str, **overrides: Any) -> DSAConfig:
    """One of CONFIGS by name, with field overrides (``tp_size=2``, say)."""
    try:
        factory = CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; choose one of {sorted(CONFIGS)}") from None
    return factory(**overrides)
