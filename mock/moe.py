"""DeepSeek-V3 / V3.2 mixture of experts (MoE) and the dense SwiGLU MLP of the first layers.

Architecture after ``deepseek-ai/DeepSeek-V3.2-Exp`` ``inference/model.py`` (own code, bf16/fp32,
no FP8 path). Routing: sigmoid affinities; a routing-only bias (``e_score_correction_bias``)
shifts the choice but not the weights; experts are split into ``n_expert_groups`` groups, the
``n_limited_groups`` groups with the largest sum of their top-2 biased scores are kept, the
``n_activated_experts`` best experts inside them are chosen, and their unbiased scores are
normalized to sum 1 and multiplied by ``route_scale``.

Two ways to run the routed experts, same result up to rounding (the routing weight is applied to
the SwiGLU activation, before the down projection, in both):

* dense (static shapes, CUDA-graph capturable): every local expert processes every token, as two
  GEMMs against all experts' stacked up/gate weights and one GEMM against the stacked down
  weights; tokens not routed to an expert get weight 0. Cost grows with tokens x experts, so it
  is used for small token counts (decode) and whenever a CUDA graph is being captured.
* sparse (reference-like, not capturable): tokens are sorted by expert, per-expert counts are read
  on the host (``.tolist()``, a device sync), and each expert with tokens runs its SwiGLU on its
  rows; results are added back with ``index_add_``. Used for large token counts (prefill).

Under simulated TP the gate scores all experts, but this rank holds and computes only experts
``[0, cfg.local_experts)`` (the reference's expert split inside the TP group, without its
all-reduce); the shared expert and the dense MLP are split by width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from align_mock.config import DSAConfig

MOE_MODES = ("auto", "dense", "sparse")


def _capturing() -> bool:
    """Whether a CUDA graph is being captured on the current stream (False without CUDA)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class Gate(nn.Module):
    """Grouped top-k router; returns fp32 weights ``[T, k]`` and expert ids ``[T, k]``."""

    def __init__(self, cfg: DSAConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.topk = cfg.n_activated_experts
        self.n_groups = cfg.n_expert_groups
        self.topk_groups = cfg.n_limited_groups
        self.score_func = cfg.score_func
        self.route_scale = cfg.route_scale
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.dim, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if cfg.gate_bias:
            self.bias = nn.Parameter(torch.empty(cfg.n_routed_experts, device=device, dtype=dtype))
            nn.init.uniform_(self.bias, -0.05, 0.05)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scores = F.linear(x.float(), self.weight.float())
        scores = scores.sigmoid() if self.score_func == "sigmoid" else scores.softmax(dim=-1)
        affinities = scores
        if self.bias is not None:
            scores = scores + self.bias.float()
        if self.n_groups > 1:
            grouped = scores.view(x.shape[0], self.n_groups, -1)
            if self.bias is not None:
                group_scores = grouped.topk(min(2, grouped.shape[-1]), dim=-1).values.sum(dim=-1)
            else:
                group_scores = grouped.amax(dim=-1)
            best = group_scores.topk(self.topk_groups, dim=-1).indices
            keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, best, True)
            scores = grouped.masked_fill(~keep.unsqueeze(-1), float("-inf")).flatten(1)
        indices = scores.topk(self.topk, dim=-1).indices
        weights = affinities.gather(1, indices)
        if self.score_func == "sigmoid":
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights * self.route_scale, indices


def _swiglu(x: Tensor, w1: Tensor, w3: Tensor, scale: Tensor | None = None) -> Tensor:
    """``silu(x w1^T) * (x w3^T)`` in fp32 (times ``scale`` if given), back in x's dtype."""
    h = F.silu(F.linear(x, w1).float()) * F.linear(x, w3).float()
    if scale is not None:
        h = h * scale
    return h.to(x.dtype)


class Expert(nn.Module):
    """SwiGLU feed-forward ``w2(silu(w1 x) * w3 x)``: the shared expert, and the base of MLP."""

    def __init__(self, dim: int, inter_dim: int, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, inter_dim, bias=False, device=device, dtype=dtype)
        self.w2 = nn.Linear(inter_dim, dim, bias=False, device=device, dtype=dtype)
        self.w3 = nn.Linear(dim, inter_dim, bias=False, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(_swiglu(x, self.w1.weight, self.w3.weight))


class MLP(Expert):
    """Dense FFN of the first ``n_dense_layers`` layers, ``inter_dim // tp_size`` wide on this rank."""

    def __init__(self, cfg: DSAConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(cfg.dim, cfg.local_inter_dim, device=device, dtype=dtype)


class RoutedExperts(nn.Module):
    """The local routed experts, stored stacked so that all of them can run as one GEMM each.

    ``w1``/``w3``: ``[n_experts * inter_dim, dim]`` (expert e's rows ``e*inter : (e+1)*inter``);
    ``w2``: ``[dim, n_experts * inter_dim]`` (expert e's columns, likewise).
    """

    def __init__(self, n_experts: int, dim: int, inter_dim: int, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.n_experts = n_experts
        self.inter_dim = inter_dim
        self.w1 = nn.Parameter(torch.empty(n_experts * inter_dim, dim, device=device, dtype=dtype))
        self.w3 = nn.Parameter(torch.empty(n_experts * inter_dim, dim, device=device, dtype=dtype))
        self.w2 = nn.Parameter(torch.empty(dim, n_experts * inter_dim, device=device, dtype=dtype))
        for w, fan_in in ((self.w1, dim), (self.w3, dim), (self.w2, inter_dim)):
            nn.init.uniform_(w, -fan_in ** -0.5, fan_in ** -0.5)

    def expert_weights(self, e: int) -> tuple[Tensor, Tensor, Tensor]:
        """Views ``(w1, w3, w2)`` of expert ``e``, shaped like an Expert's Linear weights."""
        rows = slice(e * self.inter_dim, (e + 1) * self.inter_dim)
        return self.w1[rows], self.w3[rows], self.w2[:, rows]

    def forward_dense(self, x: Tensor, routing: Tensor) -> Tensor:
        """All experts on all tokens; ``routing [T, n_experts]`` fp32 (0 = not routed). fp32 ``[T, dim]``."""
        tokens = x.shape[0]
        h = _swiglu(x, self.w1, self.w3).view(tokens, self.n_experts, self.inter_dim)
        h = (h.float() * routing.unsqueeze(-1)).to(x.dtype)
        return F.linear(h.view(tokens, -1), self.w2).float()

    def forward_sparse(self, x: Tensor, weights: Tensor, indices: Tensor) -> Tensor:
        """Each local expert on its routed tokens only (host sync for the counts). fp32 ``[T, dim]``."""
        k = indices.shape[1]
        flat = indices.flatten()
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=self.n_experts)[: self.n_experts].tolist()
        local_rows = sum(counts)
        order = order[:local_rows]
        token = order // k
        rows_x = x[token]
        rows_w = weights.flatten()[order].unsqueeze(-1)
        y = torch.zeros(x.shape[0], self.w2.shape[0], dtype=torch.float32, device=x.device)
        start = 0
        for e, count in enumerate(counts):
            if count == 0:
                continue
            part = slice(start, start + count)
            start += count
            w1, w3, w2 = self.expert_weights(e)
            h = _swiglu(rows_x[part], w1, w3, rows_w[part])
            y.index_add_(0, token[part], F.linear(h, w2).float())
        return y


class MoE(nn.Module):
    """Routed experts (dense or sparse execution, see the module docstring) plus shared expert(s).

    ``mode``: ``"auto"`` (dense when at most ``cfg.moe_dense_max_tokens`` tokens or while a CUDA
    graph is captured, sparse otherwise), ``"dense"`` or ``"sparse"``. Input ``[..., dim]``.
    """

    def __init__(self, cfg: DSAConfig, mode: str = "auto", *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if mode not in MOE_MODES:
            raise ValueError(f"MoE mode must be one of {MOE_MODES}, got {mode!r}")
        self.mode = mode
        self.dim = cfg.dim
        self.n_routed_experts = cfg.n_routed_experts
        self.n_local_experts = cfg.local_experts
        self.dense_max_tokens = cfg.moe_dense_max_tokens
        self.gate = Gate(cfg, device=device, dtype=dtype)
        self.experts = RoutedExperts(cfg.local_experts, cfg.dim, cfg.moe_inter_dim, device=device, dtype=dtype)
        self.shared_experts = Expert(cfg.dim, cfg.local_shared_inter_dim, device=device, dtype=dtype)

    def uses_dense(self, tokens: int) -> bool:
        """Which execution a call with ``tokens`` tokens takes (static: decided from shapes only)."""
        if self.mode == "sparse" and _capturing():
            raise RuntimeError("MoE mode 'sparse' reads expert counts on the host and cannot be captured")
        if self.mode != "auto":
            return self.mode == "dense"
        return tokens <= self.dense_max_tokens or _capturing()

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x = x.reshape(-1, self.dim)
        weights, indices = self.gate(x)
        if self.uses_dense(x.shape[0]):
            routing = torch.zeros(x.shape[0], self.n_routed_experts, dtype=torch.float32, device=x.device)
            routing = routing.scatter_(1, indices, weights)[:, : self.n_local_experts]
            y = self.experts.forward_dense(x, routing)
        else:
            y = self.experts.forward_sparse(x, weights, indices)
        y = y + self.shared_experts(x).float()
        return y.to(x.dtype).view(shape)
