"""transformers' own DeepSeek-V3.2 attention (``DeepseekV32Attention``, seed 000 way A) as the DSA op
of ``align collect --framework transformers``: the same cases and rows as ``align_mock.collect``
(aiconfigurator's dsa_*_module tables), timed on the module the transformers adapter builds
standalone: ``StaticCache`` sized to the request (CUDA-graph capturable), the cache put back before
every call so each call is the same step.
"""

from __future__ import annotations

import torch

from align_mock import collect as _ours
from align_mock.frameworks.base import Case
from align_mock.frameworks.hf import TransformersAdapter

OP = "dsa"
describe = _ours.describe


def framework_label() -> str:
    """The rows' framework column: what was timed, with its version."""
    return f"transformers {TransformersAdapter().version()}"


def _shape(phase: str, *case: int) -> tuple[int, int, int, int]:
    return _ours._shape(phase, *case)


def estimate(phase: str, *case: int, indexer: bool = True) -> int:
    """Our mock's estimate plus what transformers adds: K and V expanded for every local head over
    the whole cache (non-absorbed MLA) and boolean and float masks of batch x new x cached tokens."""
    seq, batch, tp, cached = _shape(phase, *case)
    total = seq + cached
    heads = 128 // tp
    expanded = 2 * batch * heads * total * (192 + 128) * 2
    masks = 3 * batch * seq * total
    return _ours.estimate(phase, *case, indexer=indexer) + expanded + masks


def build(phase: str, *case: int, device: str = "cuda", dtype: torch.dtype | None = None, op: str = OP):
    seq, batch, tp, cached = _shape(phase, *case)
    dtype_name = str(dtype or torch.bfloat16).removeprefix("torch.")
    built = TransformersAdapter().build(Case(op, phase, batch=batch, seq=seq, kv_len=cached, tp=tp, config="v32",
                                             dtype=dtype_name, device=device, cache="static"))
    reset, run = built.reset, built.call

    def call() -> None:
        with torch.no_grad():
            reset()
            run()

    return call
