"""DeepSeek-V3's MLA (the DSA layer without its indexer) as a collectable op for ``align collect``.

Same layer, cache and timing as ``align_mock.collect`` with the lightning indexer left out, written
as aiconfigurator's ``mla_{context,generation}_module`` rows (model DeepSeek-V3). Context cases
``(seq, batch, tp)`` have no prior KV (aiconfigurator's MLA module rows have step 0); generation
``(kv_len, batch, tp)``.
"""

from __future__ import annotations

import torch

from align_mock import collect as _dsa

MODEL = "deepseek-ai/DeepSeek-V3"
ARCHITECTURE = "DeepseekV3ForCausalLM"


def _dsa_case(phase: str, case: tuple[int, ...]) -> tuple[int, ...]:
    return (*case, 0) if phase == "context" else case


def describe(phase: str, *case: int) -> dict:
    return _dsa.describe(phase, *_dsa_case(phase, case), model=MODEL, architecture=ARCHITECTURE)


def estimate(phase: str, *case: int) -> int:
    return _dsa.estimate(phase, *_dsa_case(phase, case), indexer=False)


def build(phase: str, *case: int, device: str = "cuda", dtype: torch.dtype | None = None):
    return _dsa.build(phase, *_dsa_case(phase, case), device=device, dtype=dtype, indexer=False)
