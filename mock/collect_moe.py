"""The routed experts of DeepSeek-V3's MoE as a collectable op for ``align collect``, written as
aiconfigurator's ``moe`` rows (``moe_dtype, num_tokens, hidden_size, inter_size, topk,
num_experts, moe_tp_size, moe_ep_size, distribution``).

A case ``(tokens, tp, ep, distribution)`` is what one rank of an EP x TP MoE group computes:
experts ``[0, num_experts // ep)`` with ``inter_size // tp`` wide SwiGLUs, over the tokens routed
to them. The routing is synthetic and seeded, fixed when the case is built (as aiconfigurator's
collector sets the router's output), so the per-expert token counts are known on the host: each
local expert with tokens runs its own three GEMMs on a static slice of the sorted rows, which makes
the call CUDA-graph capturable with no host sync. Not timed: the gate, the shared expert and the
all-to-all / all-reduce of a real group.

Distributions (``distribution`` values of aiconfigurator's tables, our own sampling):

* ``balanced``: token t picks experts ``(t * topk + j) % num_experts``, j < topk: every expert
  gets the same load (up to one token).
* ``power_law_<alpha>``: expert e's popularity is proportional to ``rank(e) ** -alpha`` over a
  seeded random ranking of the experts; each token draws ``topk`` distinct experts with those
  weights (Gumbel top-k). Which experts are popular, and so rank 0's load, follows the seed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from align_mock.config import named_config

CONFIG = "v32"
SEED = 0


def _dims(tp: int, ep: int) -> dict:
    cfg = named_config(CONFIG)
    experts, inter = cfg.n_routed_experts, cfg.moe_inter_dim
    if experts % ep or inter % tp:
        raise ValueError(f"ep {ep} must divide {experts} experts and tp {tp} the expert width {inter}")
    return {"hidden": cfg.dim, "inter": inter, "topk": cfg.n_activated_experts, "experts": experts,
            "local_experts": experts // ep, "local_inter": inter // tp}


def describe(phase: str, tokens: int, tp: int, ep: int, distribution: str) -> dict:
    d = _dims(tp, ep)
    return {"moe_dtype": "bfloat16", "num_tokens": tokens, "hidden_size": d["hidden"], "inter_size": d["inter"],
            "topk": d["topk"], "num_experts": d["experts"], "moe_tp_size": tp, "moe_ep_size": ep,
            "distribution": distribution}


def routing(tokens: int, topk: int, experts: int, distribution: str, seed: int = SEED) -> np.ndarray:
    """``[tokens, topk]`` distinct expert ids per token, for a distribution name (module docstring)."""
    if distribution == "balanced":
        return (np.arange(tokens)[:, None] * topk + np.arange(topk)[None, :]) % experts
    if distribution.startswith("power_law_"):
        alpha = float(distribution.removeprefix("power_law_"))
        rng = np.random.default_rng(seed)
        popularity = np.empty(experts)
        popularity[rng.permutation(experts)] = np.arange(1, experts + 1, dtype=float) ** -alpha
        keys = np.log(popularity / popularity.sum())[None, :] + rng.gumbel(size=(tokens, experts))
        return np.argsort(-keys, axis=1)[:, :topk]
    raise ValueError(f"unknown distribution {distribution!r}: balanced or power_law_<alpha>")


def local_load(tokens: int, tp: int, ep: int, distribution: str) -> int:
    """Rows (token, expert) this rank computes."""
    d = _dims(tp, ep)
    return int((routing(tokens, d["topk"], d["experts"], distribution) < d["local_experts"]).sum())


def estimate(phase: str, tokens: int, tp: int, ep: int, distribution: str) -> int:
    d = _dims(tp, ep)
    weights = 2 * 3 * d["local_experts"] * d["local_inter"] * d["hidden"]
    rows = tokens * d["topk"]  # an upper bound of the local rows
    acts = 2 * rows * (d["hidden"] + 3 * d["local_inter"]) + 4 * tokens * d["hidden"] * 2
    return weights + acts + (1 << 30)


def build(phase: str, tokens: int, tp: int, ep: int, distribution: str, *, device: str = "cuda",
          dtype: torch.dtype | None = None):
    """The prepared op; the call returns this rank's fp32 output ``[tokens, hidden]`` (partial sum)."""
    d = _dims(tp, ep)
    dtype = dtype or torch.bfloat16
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(SEED)
    h, inter, n_local = d["hidden"], d["local_inter"], d["local_experts"]

    def param(*shape: int, fan_in: int) -> torch.Tensor:
        return ((torch.rand(*shape, generator=gen, device=dev) * 2 - 1) * fan_in ** -0.5).to(dtype)

    w1, w3 = param(n_local, inter, h, fan_in=h), param(n_local, inter, h, fan_in=h)
    w2 = param(n_local, h, inter, fan_in=inter)
    x = torch.randn(tokens, h, generator=gen, device=dev, dtype=dtype)
    idx = routing(tokens, d["topk"], d["experts"], distribution)
    token, slot = np.nonzero(idx < n_local)
    expert = idx[token, slot]
    order = np.argsort(expert, kind="stable")
    token, expert = token[order], expert[order]
    counts = np.bincount(expert, minlength=n_local)
    rows_token = torch.as_tensor(token, dtype=torch.long, device=dev)
    weight = torch.full((len(token), 1), 1.0 / d["topk"], dtype=dtype, device=dev)
    spans = [(int(e), int(a), int(a + c)) for e, (a, c) in enumerate(zip(np.cumsum(counts) - counts, counts)) if c]

    def call() -> torch.Tensor:
        with torch.no_grad():
            rows = x.index_select(0, rows_token)
            out = torch.zeros(tokens, h, dtype=torch.float32, device=dev)
            for e, a, b in spans:
                part = rows[a:b]
                act = F.silu(F.linear(part, w1[e])) * F.linear(part, w3[e]) * weight[a:b]
                out.index_add_(0, rows_token[a:b], F.linear(act, w2[e]).float())
            return out

    call.reference = lambda: _reference(x, idx, w1, w2, w3, d["topk"])  # type: ignore[attr-defined]
    return call


def _reference(x: torch.Tensor, idx: np.ndarray, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor,
               topk: int) -> torch.Tensor:
    """Token by token, expert by expert: what ``call`` must equal (tests)."""
    out = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float32, device=x.device)
    for t in range(x.shape[0]):
        for e in idx[t]:
            if e < w1.shape[0]:
                act = F.silu(x[t] @ w1[e].T) * (x[t] @ w3[e].T) * (1.0 / topk)
                out[t] += (act.to(x.dtype) @ w2[e].T).float()
    return out
