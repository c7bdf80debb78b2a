"""DeepSeek sparse attention (DSA, V3.2) and multi-head latent attention (MLA, V3) as mock layers.

Architecture after ``deepseek-ai/DeepSeek-V3.2-Exp`` ``inference/model.py``; the code is written
independently, in plain PyTorch (bf16 on GPU, fp32 on CPU). The reference's FP8 paths (tilelang
``act_quant`` / ``fp8_gemm`` / ``fp8_index``, FP8 indexer key cache) are NOT implemented: every
projection is a bf16 (or fp32) ``F.linear`` and the indexer scores are computed with bf16/fp32
matmuls, so the kernels are those of a bf16 serving path.

Two phases, chosen by the number of new tokens per request, as in the reference:

* context (prefill), ``S > 1`` tokens with an ``int`` ``start_pos``: the latent is expanded with
  ``wkv_b`` into per-head keys/values for all ``start_pos + S`` positions and attention runs in the
  naive multi-head form, causal, restricted for DSA to the indexer's top-k tokens of each query.
  Shapes depend on ``start_pos``: it has no host sync, so it can be captured, but a graph then
  holds one fixed (S, start_pos); the E2E model runs it eagerly. It materializes fp32 scores
  ``[B, local_heads, S, start_pos + S]`` (8.6 GB for 128 heads at S = 4096).
* generation (decode), ``S == 1``: absorbed MLA. ``wkv_b``'s key half is folded into the query and
  its value half applied after attention, so the scores are taken directly against the cached
  latent (+ rotary key). The step reads the whole cache buffer (a static shape) and masks slots
  after the current position; the position may be a device tensor, so one captured CUDA graph
  replays correctly at every position (no ``.item()``, no host sync, no data-dependent shapes).
  With an ``int`` position the step is capturable too, but the graph is then tied to that position.

Tensor parallelism is simulated by shapes only: the head-sharded projections (``wq_b``, ``wkv_b``,
``wo``) hold ``cfg.local_heads`` heads and ``wo`` maps ``local_heads * v_head_dim -> dim`` without
the all-reduce a real TP group would add. The indexer is replicated on every rank, as in the reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from align_mock.config import DSAConfig

Position = int | Tensor
"""A write/read position: a Python int, or (generation only) a 1-element int64 device tensor."""


def precompute_freqs_cis(cfg: DSAConfig, length: int | None = None) -> Tensor:
    """Rotary table for positions ``[0, length)`` (default ``cfg.max_seq_len``): complex64 ``[length, rope/2]``.

    YaRN: when the model serves beyond its pre-training context (``cfg.yarn_active``), frequencies
    that rotate fewer than ``beta_slow`` times over ``original_seq_len`` are divided by
    ``rope_factor``, those rotating more than ``beta_fast`` times are kept, with a linear ramp in
    between. ``length`` only sizes the table; whether YaRN applies depends on the config, so a
    short table (a cache sized to one request) has the same values as the full one.
    """
    dim = cfg.qk_rope_head_dim
    length = cfg.max_seq_len if length is None else length
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if cfg.yarn_active:
        def dim_for_rotations(rotations: float) -> float:
            # index of the frequency that completes `rotations` turns over original_seq_len
            return dim * math.log(cfg.original_seq_len / (rotations * 2 * math.pi)) / (2 * math.log(cfg.rope_theta))

        low = max(math.floor(dim_for_rotations(cfg.beta_fast)), 0)
        high = min(math.ceil(dim_for_rotations(cfg.beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        inv_freq = inv_freq / cfg.rope_factor * ramp + inv_freq * (1 - ramp)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary(x: Tensor, freqs: Tensor) -> Tensor:
    """Rotate adjacent pairs of ``x [B, S, H, D]`` by ``freqs [S, D/2]`` (complex), in fp32."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    rotated = pairs * freqs.view(1, x.shape[1], 1, pairs.shape[-1])
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)


def _check_power_of_two(n: int) -> None:
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard transform needs a power-of-two size, got {n}")


def hadamard_matrix(n: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """The Sylvester Hadamard matrix of size ``n``, scaled by ``n ** -0.5`` (orthonormal, symmetric)."""
    _check_power_of_two(n)
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (h * n ** -0.5).to(device=device, dtype=dtype)


def hadamard(x: Tensor) -> Tensor:
    """Walsh-Hadamard transform of the last dim (butterfly form), scaled by ``dim ** -0.5``.

    Equals ``x @ hadamard_matrix(dim)``; the indexer uses that one-GEMM form, this is the reference.
    """
    n = x.shape[-1]
    _check_power_of_two(n)
    y = x.reshape(-1, n)
    half = 1
    while half < n:
        y = y.view(y.shape[0], n // (2 * half), 2, half)
        y = torch.stack([y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]], dim=2)
        half *= 2
    return (y.reshape(x.shape) * n ** -0.5).to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 (as the reference does), returned in the input's dtype; ``unfused``
    writes it out as pow, mean, rsqrt and mul (transformers' kernels) instead of PyTorch's fused one."""

    def __init__(self, dim: int, eps: float = 1e-6, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, unfused: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.unfused = unfused
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        if self.unfused:
            h = x.float()
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
            return (self.weight.float() * h).to(x.dtype)
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


class LayerNorm(nn.Module):
    """LayerNorm (with bias) in fp32, used on the indexer's keys."""

    def __init__(self, dim: int, eps: float = 1e-6, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.float(), (x.shape[-1],), self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


def _linear(n_in: int, n_out: int, device: torch.device | str | None, dtype: torch.dtype | None) -> nn.Linear:
    return nn.Linear(n_in, n_out, bias=False, device=device, dtype=dtype)


class KVCache:
    """One layer's cache: contiguous, preallocated ``[batch, max_len, ...]`` buffers (not paged).

    ``kv`` holds per token the normalized compressed latent and the rotated shared rope key side by
    side (``[B, max_len, kv_lora_rank + qk_rope_head_dim]``, the MLA cache row), so the absorbed
    decode scores against one buffer; ``kv_latent`` and ``k_rope`` are views of its two parts.
    ``index_k`` holds the indexer's (rotated, Hadamard-transformed) keys ``[B, max_len,
    index_head_dim]``, in the model dtype (the reference stores them in FP8 with block scales).
    """

    def __init__(self, cfg: DSAConfig, batch: int, max_len: int, *, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32, indexer: bool = True) -> None:
        if batch < 1 or max_len < 1:
            raise ValueError(f"KVCache needs batch >= 1 and max_len >= 1, got {batch} and {max_len}")
        self.kv_lora_rank = cfg.kv_lora_rank
        self.kv = torch.zeros(batch, max_len, cfg.kv_lora_rank + cfg.qk_rope_head_dim, device=device, dtype=dtype)
        self.index_k = (torch.zeros(batch, max_len, cfg.index_head_dim, device=device, dtype=dtype)
                        if indexer else None)

    @property
    def batch(self) -> int:
        return self.kv.shape[0]

    @property
    def max_len(self) -> int:
        return self.kv.shape[1]

    @property
    def kv_latent(self) -> Tensor:
        """``[B, max_len, kv_lora_rank]`` view of the cached latents."""
        return self.kv[..., : self.kv_lora_rank]

    @property
    def k_rope(self) -> Tensor:
        """``[B, max_len, qk_rope_head_dim]`` view of the cached rotary keys."""
        return self.kv[..., self.kv_lora_rank:]

    def buffers(self) -> list[Tensor]:
        return [self.kv] + ([self.index_k] if self.index_k is not None else [])

    def zero_(self) -> KVCache:
        for buf in self.buffers():
            buf.zero_()
        return self

    def copy_(self, other: KVCache) -> KVCache:
        """Copy another cache's contents (same shapes) into this one, in place."""
        for mine, theirs in zip(self.buffers(), other.buffers(), strict=True):
            mine.copy_(theirs)
        return self

    def clone(self) -> KVCache:
        """An independent cache with the same contents."""
        twin = object.__new__(KVCache)
        twin.kv_lora_rank = self.kv_lora_rank
        twin.kv = self.kv.clone()
        twin.index_k = None if self.index_k is None else self.index_k.clone()
        return twin

    def fill_random_(self, length: int, generator: torch.Generator | None = None) -> KVCache:
        """Random unit-scale contents for positions ``[0, length)`` (prior tokens of a benchmark),
        so a decode step reads a full cache without running a prefill first. ``generator``, if
        given, must live on the cache's device."""
        if not 0 <= length <= self.max_len:
            raise ValueError(f"cannot fill {length} positions of a cache of {self.max_len}")
        for buf in self.buffers():
            buf[:, :length] = torch.randn(buf[:, :length].shape, generator=generator, device=buf.device,
                                          dtype=buf.dtype)
        return self

    @staticmethod
    def write(buf: Tensor, start: Position, value: Tensor) -> None:
        """Store ``value [B, S, D]`` at positions ``start ..`` of ``buf [>=B, max_len, D]``.

        An int start slices; a tensor start (generation) uses ``index_copy_``, which stays on the
        device and is CUDA-graph capturable."""
        target = buf[: value.shape[0]]
        if isinstance(start, Tensor):
            target.index_copy_(1, start, value)
        else:
            target[:, start: start + value.shape[1]] = value


def _allowed_positions(start_pos: Position, seqlen: int, length: int, device: torch.device) -> Tensor:
    """Bool ``[1, S, length]``: key position t is visible to query s (causal, plus cache validity).

    Context: ``t <= start_pos + s`` over ``length = start_pos + S`` keys. Generation: ``t <= pos``
    over the whole cache buffer, computed on the device from the position tensor."""
    keys = torch.arange(length, device=device)
    if isinstance(start_pos, Tensor):
        return (keys <= start_pos).view(1, 1, length)
    queries = torch.arange(seqlen, device=device) + start_pos
    return (keys.view(1, length) <= queries.view(seqlen, 1)).unsqueeze(0)


class Indexer(nn.Module):
    """The lightning indexer of DSA: picks, for every query token, the ``index_topk`` keys it may attend.

    Score of key t for query s: ``sum_h w[s, h] * relu(q[s, h] . k[t])`` with ``w =
    weights_proj(x) * index_n_heads ** -0.5 * index_head_dim ** -0.5`` (the reference's scaling).
    ``q`` comes from the query latent (``wq_b``), the single key head from ``x`` (``wk`` then
    LayerNorm); both get rope on their first ``qk_rope_head_dim`` dims and then a Hadamard rotation.
    Keys are kept in ``KVCache.index_k``. Both score GEMMs run in the model dtype (bf16 on GPU,
    fp32 accumulation inside cuBLAS), where the reference uses FP8 inputs with block scales and an
    fp32 result. Positions that are not visible (``allowed``) score -inf;
    when fewer than ``index_topk`` are visible, all of them are selected plus some masked ones,
    which the attention masks again.

    Trace hook (decode only): when ``trace_hook`` is set (on one instance, or on the class for every
    indexer; a plain function set on the class needs ``staticmethod``), each generation call
    (``S == 1``) ends with ``trace_hook(layer_idx, start_pos, topk_indices, scores)`` on the device
    tensors; ``layer_idx`` is whatever the caller assigned (None by default). Unset, it costs one
    attribute test: no host sync, nothing that stops a CUDA graph capture. A Python hook does not
    run on graph replays, so tracing needs an eager decode.
    """

    trace_hook: Callable[[int | None, Position, Tensor, Tensor], None] | None = None
    layer_idx: int | None = None

    def __init__(self, cfg: DSAConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        _check_power_of_two(cfg.index_head_dim)
        self.n_heads = cfg.index_n_heads
        self.head_dim = cfg.index_head_dim
        self.rope_dim = cfg.qk_rope_head_dim
        self.topk = cfg.index_topk
        self.wq_b = _linear(cfg.q_lora_rank, self.n_heads * self.head_dim, device, dtype)
        self.wk = _linear(cfg.dim, self.head_dim, device, dtype)
        self.k_norm = LayerNorm(self.head_dim, cfg.norm_eps, device=device, dtype=dtype)
        self.weights_proj = _linear(cfg.dim, self.n_heads, device, dtype)
        self.weight_scale = self.n_heads ** -0.5 * self.head_dim ** -0.5
        self.fp32_scores = cfg.index_score_dtype == "fp32"
        self.register_buffer("rotation", hadamard_matrix(self.head_dim, dtype=dtype or torch.float32, device=device),
                             persistent=False)

    def _rope_front(self, x: Tensor, freqs: Tensor) -> Tensor:
        """Rope on the first ``rope_dim`` dims of ``x [B, S, H, D]`` (the indexer's layout), rest unchanged."""
        return torch.cat([apply_rotary(x[..., : self.rope_dim], freqs), x[..., self.rope_dim:]], dim=-1)

    def forward(self, x: Tensor, q_latent: Tensor, start_pos: Position, cache: KVCache, freqs: Tensor,
                allowed: Tensor) -> Tensor:
        """Top-k key positions ``[B, S, min(index_topk, L)]`` (int64, unsorted) among the ``L =
        allowed.shape[-1]`` first cache slots; writes this step's keys into ``cache.index_k``."""
        if cache.index_k is None:
            raise ValueError("this KVCache was built without indexer keys (indexer=False)")
        bsz, seqlen, _ = x.shape
        length = allowed.shape[-1]
        q = self.wq_b(q_latent).view(bsz, seqlen, self.n_heads, self.head_dim)
        q = self._rope_front(q, freqs) @ self.rotation
        k = self.k_norm(self.wk(x)).unsqueeze(2)
        k = (self._rope_front(k, freqs) @ self.rotation).squeeze(2)
        KVCache.write(cache.index_k, start_pos, k)
        keys = cache.index_k[:bsz, :length]
        q = q.reshape(bsz, seqlen * self.n_heads, self.head_dim)
        if self.fp32_scores:
            q, keys = q.float(), keys.float()
        logits = torch.bmm(q, keys.transpose(1, 2)).relu_()
        if self.fp32_scores:  # transformers' choice: scores and head weights in fp32
            weights = F.linear(x.float(), self.weights_proj.weight.float()) * self.weight_scale
        else:
            weights = (self.weights_proj(x).float() * self.weight_scale).to(logits.dtype)
        scores = torch.bmm(weights.view(bsz * seqlen, 1, self.n_heads),
                           logits.view(bsz * seqlen, self.n_heads, length)).view(bsz, seqlen, length).float()
        scores = scores.masked_fill_(~allowed, float("-inf"))
        chosen = scores.topk(min(self.topk, length), dim=-1, sorted=False).indices
        if seqlen == 1 and self.trace_hook is not None:
            self.trace_hook(self.layer_idx, start_pos, chosen, scores)
        return chosen


class MLAAttention(nn.Module):
    """MLA attention (``use_indexer=False``, DeepSeek-V3) or DSA (``use_indexer=True``, V3.2).

    Projections: ``wq_a -> q_norm -> wq_b`` (per-head no-rope + rope query), ``wkv_a`` (latent +
    shared rope key) ``-> kv_norm`` on the latent, ``wkv_b`` (latent -> per-head no-rope key and
    value), ``wo``. Head-sharded weights use ``cfg.local_heads``. Softmax scale is
    ``qk_head_dim ** -0.5``, times ``mscale ** 2`` under YaRN, as in the reference.
    See the module docstring for the two phases and what is capturable.
    """

    def __init__(self, cfg: DSAConfig, use_indexer: bool = True, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if cfg.q_lora_rank <= 0:
            raise ValueError("MLAAttention needs q_lora_rank > 0 (the indexer reads the query latent)")
        self.heads = cfg.local_heads
        self.nope_dim = cfg.qk_nope_head_dim
        self.rope_dim = cfg.qk_rope_head_dim
        self.v_dim = cfg.v_head_dim
        self.kv_lora_rank = cfg.kv_lora_rank
        self.wq_a = _linear(cfg.dim, cfg.q_lora_rank, device, dtype)
        unfused = cfg.rms_norm == "unfused"
        self.q_norm = RMSNorm(cfg.q_lora_rank, cfg.norm_eps, device=device, dtype=dtype, unfused=unfused)
        self.wq_b = _linear(cfg.q_lora_rank, self.heads * cfg.qk_head_dim, device, dtype)
        self.wkv_a = _linear(cfg.dim, cfg.kv_lora_rank + cfg.qk_rope_head_dim, device, dtype)
        self.kv_norm = RMSNorm(cfg.kv_lora_rank, cfg.norm_eps, device=device, dtype=dtype, unfused=unfused)
        self.wkv_b = _linear(cfg.kv_lora_rank, self.heads * (cfg.qk_nope_head_dim + cfg.v_head_dim), device, dtype)
        self.wo = _linear(self.heads * cfg.v_head_dim, cfg.dim, device, dtype)
        self.indexer = Indexer(cfg, device=device, dtype=dtype) if use_indexer else None
        scale = cfg.qk_head_dim ** -0.5
        if cfg.yarn_active:
            mscale = 0.1 * cfg.mscale * math.log(cfg.rope_factor) + 1.0
            scale *= mscale * mscale
        self.softmax_scale = scale

    @property
    def use_indexer(self) -> bool:
        return self.indexer is not None

    def forward(self, x: Tensor, start_pos: Position, cache: KVCache, freqs: Tensor) -> Tensor:
        """Attention for ``x [B, S, dim]`` at positions ``start_pos .. start_pos + S - 1``; returns ``[B, S, dim]``.

        ``freqs``: rotary rows for those positions, ``[S, qk_rope_head_dim // 2]`` complex
        (``precompute_freqs_cis(cfg)[start_pos : start_pos + S]``, or ``index_select`` with the
        position tensor in generation). ``cache``: this layer's cache, batch >= B. ``S > 1`` is the
        context phase (int ``start_pos``, attends ``[0, start_pos + S)``, prior positions read from
        the cache); ``S == 1`` is generation (int or 1-element int64 tensor position ``p``, attends
        ``[0, p]`` of the whole cache buffer).
        """
        bsz, seqlen, _ = x.shape
        if cache.batch < bsz:
            raise ValueError(f"cache holds {cache.batch} requests, input has {bsz}")
        generation = seqlen == 1
        if isinstance(start_pos, Tensor):
            if not generation:
                raise ValueError("a tensor start_pos is for generation (one new token per request)")
            pos: Position = start_pos
        elif not 0 <= start_pos <= cache.max_len - seqlen:
            raise ValueError(f"positions [{start_pos}, {start_pos + seqlen}) do not fit a cache of {cache.max_len}")
        elif generation:
            pos = torch.full((1,), start_pos, dtype=torch.long, device=x.device)
        else:
            pos = start_pos

        q_latent = self.q_norm(self.wq_a(x))
        q = self.wq_b(q_latent).view(bsz, seqlen, self.heads, self.nope_dim + self.rope_dim)
        q_nope, q_pe = torch.split(q, [self.nope_dim, self.rope_dim], dim=-1)
        q_pe = apply_rotary(q_pe, freqs)
        latent, k_pe = torch.split(self.wkv_a(x), [self.kv_lora_rank, self.rope_dim], dim=-1)
        latent = self.kv_norm(latent)
        k_pe = apply_rotary(k_pe.unsqueeze(2), freqs).squeeze(2)
        KVCache.write(cache.kv_latent, pos, latent)
        KVCache.write(cache.k_rope, pos, k_pe)

        length = cache.max_len if generation else start_pos + seqlen
        allowed = _allowed_positions(pos, seqlen, length, x.device)
        if self.indexer is not None:
            chosen = self.indexer(x, q_latent, pos, cache, freqs, allowed)
            selected = torch.zeros(bsz, seqlen, length, dtype=torch.bool, device=x.device).scatter_(-1, chosen, True)
            allowed = allowed & selected
        if generation:
            out = self._absorbed(q_nope, q_pe, cache, allowed)
        else:
            out = self._expanded(q_nope, q_pe, cache, allowed)
        return self.wo(out)

    def _softmax(self, scores: Tensor, allowed: Tensor, dtype: torch.dtype) -> Tensor:
        """Scale, mask (bool ``allowed``, broadcast over heads) and softmax in fp32; the scores
        tensor is a temporary, so scaling and masking work in place to bound peak memory."""
        scores = scores.float().mul_(self.softmax_scale).masked_fill_(~allowed, float("-inf"))
        return scores.softmax(dim=-1).to(dtype)

    def _expanded(self, q_nope: Tensor, q_pe: Tensor, cache: KVCache, allowed: Tensor) -> Tensor:
        """Context: per-head keys/values from the cached latents, naive attention ``[B, H, S, L]``."""
        bsz, seqlen, heads, _ = q_nope.shape
        length = allowed.shape[-1]
        kv = self.wkv_b(cache.kv_latent[:bsz, :length]).view(bsz, length, heads, self.nope_dim + self.v_dim)
        k_nope, v = torch.split(kv, [self.nope_dim, self.v_dim], dim=-1)
        k_pe = cache.k_rope[:bsz, :length].unsqueeze(2).expand(bsz, length, heads, self.rope_dim)
        q = torch.cat([q_nope, q_pe], dim=-1).transpose(1, 2)
        k = torch.cat([k_nope, k_pe], dim=-1).transpose(1, 2)
        probs = self._softmax(torch.matmul(q, k.transpose(2, 3)), allowed.unsqueeze(1), q.dtype)
        out = torch.matmul(probs, v.transpose(1, 2))
        return out.transpose(1, 2).reshape(bsz, seqlen, heads * self.v_dim)

    def _absorbed(self, q_nope: Tensor, q_pe: Tensor, cache: KVCache, allowed: Tensor) -> Tensor:
        """Generation: scores against the cached latent + rope key row; ``wkv_b`` folded in."""
        bsz = q_nope.shape[0]
        wkv_b = self.wkv_b.weight.view(self.heads, self.nope_dim + self.v_dim, self.kv_lora_rank)
        w_uk, w_uv = wkv_b[:, : self.nope_dim], wkv_b[:, self.nope_dim:]
        q_absorbed = torch.bmm(q_nope[:, 0].transpose(0, 1), w_uk).transpose(0, 1)
        q_full = torch.cat([q_absorbed, q_pe[:, 0]], dim=-1)
        rows = cache.kv[:bsz]
        probs = self._softmax(torch.bmm(q_full, rows.transpose(1, 2)), allowed, q_full.dtype)
        latent_out = torch.bmm(probs, cache.kv_latent[:bsz])
        out = torch.bmm(latent_out.transpose(0, 1), w_uv.transpose(1, 2)).transpose(0, 1)
        return out.reshape(bsz, 1, self.heads * self.v_dim)
