"""transformers' own DeepSeek-V3 attention (``DeepseekV3Attention``, way A) as the MLA op of ``align
collect --framework transformers``: the cases and rows of ``align_mock.collect_mla``."""

from __future__ import annotations

import torch

from align_mock import collect_mla as _ours
from align_mock.frameworks import hf_collect_dsa as _dsa

describe = _ours.describe
framework_label = _dsa.framework_label


def estimate(phase: str, *case: int) -> int:
    return _dsa.estimate(phase, *_ours._dsa_case(phase, case), indexer=False)


def build(phase: str, *case: int, device: str = "cuda", dtype: torch.dtype | None = None):
    return _dsa.build(phase, *_ours._dsa_case(phase, case), device=device, dtype=dtype, op="mla")
