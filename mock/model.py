"""A small DeepSeek-V3.2 style E2E model built from the mock layers, with a CUDA-graph decode loop.

``Transformer`` = embedding, ``layers`` (``DecoderLayer``: RMSNorm -> ``self_attn`` (DSA or MLA)
-> residual -> RMSNorm -> ``mlp`` (dense MLP for the first ``n_dense_layers``, MoE after) ->
residual), final RMSNorm and LM head (vocabulary not TP-split). The attribute names make
``align.annotate.nvtx_modules(model)`` mark ``layers.{i}``, ``layers.{i}.self_attn`` and
``layers.{i}.mlp``, the names the mock layers are compared against.

Decode and CUDA graphs: the decode position lives in a 1-element int64 device tensor. One step
(``DecodeLoop``) embeds the current tokens, selects the rotary row with ``index_select`` on that
tensor, writes the caches with ``index_copy_`` at it, attends over the whole (static) cache
buffers with a ``<= pos`` mask, takes the greedy next token into the static token buffer and
increments the position, all on the device. So one captured graph, replayed, advances through
the sequence. Prefill is eager (int positions, data-dependent MoE dispatch) and is not captured.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from align.annotate import nvtx_range
from align.timing import capture_graph, warm_up
from align_mock.config import DSAConfig
from align_mock.dsa import KVCache, MLAAttention, Position, RMSNorm, precompute_freqs_cis
from align_mock.moe import MLP, MoE

ATTENTIONS = ("dsa", "mla")


class DecoderLayer(nn.Module):
    """One transformer block; ``self_attn`` and ``mlp`` are the submodules mock layers stand in for."""

    def __init__(self, cfg: DSAConfig, layer_idx: int, attention: str = "dsa", *, moe_mode: str = "auto",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        if not 0 <= layer_idx < cfg.n_layers:
            raise ValueError(f"layer_idx {layer_idx} outside [0, n_layers={cfg.n_layers})")
        self.layer_idx = layer_idx
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps, device=device, dtype=dtype)
        self.self_attn = MLAAttention(cfg, use_indexer=attention == "dsa", device=device, dtype=dtype)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps, device=device, dtype=dtype)
        self.mlp: nn.Module
        if layer_idx < cfg.n_dense_layers:
            self.mlp = MLP(cfg, device=device, dtype=dtype)
        else:
            self.mlp = MoE(cfg, mode=moe_mode, device=device, dtype=dtype)

    def forward(self, x: Tensor, start_pos: Position, cache: KVCache, freqs: Tensor) -> Tensor:
        h = x + self.self_attn(self.attn_norm(x), start_pos, cache, freqs)
        return h + self.mlp(self.ffn_norm(h))


class Transformer(nn.Module):
    """The E2E model. Call ``setup_caches`` (or ``generate``) before ``prefill`` / ``decode_step``."""

    def __init__(self, cfg: DSAConfig, n_layers: int | None = None, attention: str = "dsa", *,
                 moe_mode: str = "auto", device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        n_layers = cfg.n_layers if n_layers is None else n_layers
        if not 1 <= n_layers <= cfg.n_layers:
            raise ValueError(f"n_layers must be in [1, {cfg.n_layers}], got {n_layers}")
        self.cfg = cfg
        self.attention = attention
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim, device=device, dtype=dtype)
        self.layers = nn.ModuleList(
            DecoderLayer(cfg, i, attention, moe_mode=moe_mode, device=device, dtype=dtype) for i in range(n_layers)
        )
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps, device=device, dtype=dtype)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False, device=device, dtype=dtype)
        self.caches: list[KVCache] = []
        self.freqs: Tensor | None = None

    def setup_caches(self, batch: int, max_len: int) -> None:
        """Allocate one KVCache per layer (``batch`` x ``max_len`` slots) and the rotary table.

        Every decode step reads all ``max_len`` slots (static shapes), so size it to the request."""
        if not 1 <= max_len <= self.cfg.max_seq_len:
            raise ValueError(f"max_len must be in [1, max_seq_len={self.cfg.max_seq_len}], got {max_len}")
        weight = self.embed.weight
        self.caches = [
            KVCache(self.cfg, batch, max_len, device=weight.device, dtype=weight.dtype, indexer=self.attention == "dsa")
            for _ in self.layers
        ]
        self.freqs = precompute_freqs_cis(self.cfg, max_len).to(weight.device)

    def reset_caches(self) -> None:
        """Zero the caches (a new sequence reuses the buffers, so captured graphs stay valid)."""
        for cache in self.caches:
            cache.zero_()

    def _check_caches(self, batch: int) -> None:
        if not self.caches or self.freqs is None:
            raise RuntimeError("call setup_caches(batch, max_len) first")
        if self.caches[0].batch != batch:
            raise ValueError(f"caches were set up for batch {self.caches[0].batch}, got {batch}")

    def forward(self, tokens: Tensor, start_pos: Position) -> Tensor:
        """Logits (fp32) of the last position, ``[B, vocab]``, for ``tokens [B, S]`` at ``start_pos``."""
        self._check_caches(tokens.shape[0])
        assert self.freqs is not None
        if isinstance(start_pos, Tensor):
            freqs = self.freqs.index_select(0, start_pos)
        else:
            freqs = self.freqs[start_pos: start_pos + tokens.shape[1]]
        h = self.embed(tokens)
        for layer, cache in zip(self.layers, self.caches, strict=True):
            h = layer(h, start_pos, cache, freqs)
        return self.head(self.norm(h[:, -1])).float()

    def prefill(self, tokens: Tensor) -> Tensor:
        """Context phase from position 0 (eager): last-position logits ``[B, vocab]``."""
        return self(tokens, 0)

    def decode_step(self, tokens: Tensor, pos: Position) -> Tensor:
        """One generation step for ``tokens [B, 1]`` at ``pos`` (int, or 1-element int64 device tensor
        for graph replays): logits ``[B, vocab]``."""
        if tokens.shape[1] != 1:
            raise ValueError(f"decode_step takes one token per request, got {tokens.shape[1]}")
        return self(tokens, pos)

    @torch.no_grad()
    def generate(self, prompt_tokens: Tensor, steps: int, use_cuda_graph: bool = True,
                 max_len: int | None = None, warmup: int = 1) -> tuple[Tensor, str]:
        """Greedy generation: prefill (NVTX range ``prefill``), then ``steps`` decode steps (each in
        a range ``decode_step``), replaying one captured CUDA graph when CUDA is available and
        ``use_cuda_graph`` (eager otherwise, or when the capture fails).

        Returns ``(tokens [B, 1 + steps], cuda_graph status)``: the prefill's next token, then one
        token per decode step. Caches get ``max_len`` slots (default ``S + max(steps, warmup)``)."""
        bsz, seqlen = prompt_tokens.shape
        needed = seqlen + max(steps, warmup)
        max_len = needed if max_len is None else max_len
        if max_len < needed:
            raise ValueError(f"max_len must be >= prompt + max(steps, warmup) = {needed}")
        self.setup_caches(bsz, max_len)
        with nvtx_range("prefill"):
            first = self.prefill(prompt_tokens).argmax(-1, keepdim=True)
        loop = DecodeLoop(self, first, seqlen, use_cuda_graph=use_cuda_graph, warmup=warmup)
        out = [first.clone()]
        for _ in range(steps):
            with nvtx_range("decode_step"):
                loop.step()
            out.append(loop.tokens.clone())
        return torch.cat(out, dim=1), loop.status


class DecodeLoop:
    """Greedy decode with static buffers: ``tokens [B, 1]`` and ``pos [1]`` live on the device.

    One step runs ``decode_step(tokens, pos)``, writes the argmax into ``tokens`` and adds 1 to
    ``pos``; captured once, the graph's replays therefore continue the sequence. Before capture,
    ``warmup`` eager steps run on a side stream (lazy library setup must not happen while
    capturing) and ``tokens``/``pos`` are restored afterwards; the cache slots they wrote are at
    positions >= the start and get rewritten before any step reads them.
    """

    def __init__(self, model: Transformer, tokens: Tensor, start_pos: int, *, use_cuda_graph: bool = True,
                 warmup: int = 1) -> None:
        self.model = model
        self.tokens = tokens.clone()
        self.pos = torch.full((1,), start_pos, dtype=torch.long, device=tokens.device)
        self._run: Callable[[], object] = self._step
        if not use_cuda_graph:
            self.status = "eager (use_cuda_graph=False)"
        elif tokens.device.type != "cuda":
            self.status = "eager (no CUDA)"
        else:
            saved_tokens, saved_pos = self.tokens.clone(), self.pos.clone()
            warm_up(self._step, warmup)
            self.tokens.copy_(saved_tokens)
            self.pos.copy_(saved_pos)
            self._run, self.status = capture_graph(self._step)

    def _step(self) -> None:
        logits = self.model.decode_step(self.tokens, self.pos)
        self.tokens.copy_(logits.argmax(-1, keepdim=True))
        self.pos.add_(1)

    def step(self) -> None:
        """Advance one token (graph replay, or the eager step)."""
        self._run()
