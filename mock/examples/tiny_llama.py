"""Shared pieces of the two example scripts: one small Llama config, the device and dtype, seeding.
(The warm-up / CUDA-graph / cudaProfiler plumbing is align_mock.model's, as in the DSA examples.)

attention_mock.py and llama_e2e.py build their attention from the same config, so a kernel
difference between their profiles comes from how the attention is called, not from its dimensions.
Weights are random (built from the config): nothing is downloaded.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig


def make_config(layers: int = 4) -> LlamaConfig:
    """A ~110M-parameter Llama with GQA (16 query and 4 KV heads of 64): real kernel shapes, quick to build."""
    return LlamaConfig(
        hidden_size=1024,
        num_attention_heads=16,
        num_key_value_heads=4,
        intermediate_size=2816,
        num_hidden_layers=layers,
        vocab_size=32000,
        max_position_embeddings=4096,
        attn_implementation="sdpa",
    )


def device_and_dtype() -> tuple[torch.device, torch.dtype]:
    """bf16 on the GPU, as an inference engine runs; fp32 on CPU, where the scripts are only smoke-tested."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def seed(value: int = 0) -> None:
    """Same weights and inputs on every run, so two profiles of one script see the same data."""
    torch.manual_seed(value)
