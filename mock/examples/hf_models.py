"""transformers' own models for the independent example pairs (hf_generate.py, hf_attention_mock.py).

Both scripts run code we did not write: the E2E side is ``model.generate()`` of transformers'
``LlamaForCausalLM``, ``DeepseekV32ForCausalLM``, ``DeepseekV3ForCausalLM`` (MLA and MoE, a first
dense layer) or ``Qwen3MoeForCausalLM`` (a first dense layer), the mock side the same library's
attention class (``LlamaAttention``, ``DeepseekV32Attention``) or MoE block (``DeepseekV3MoE``,
``Qwen3MoeSparseMoeBlock``, hf_moe_mock.py) built standalone with its own cache and mask helpers. What they share is only the model's dimensions, from here. Weights are random (built from
the config): nothing is downloaded. DeepSeek-V3.2 needs transformers >= 5.23.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

try:
    import align  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from align_mock.frameworks.hf import signature  # noqa: E402,F401  (what a mock and generate() are compared by)

MODELS = ("llama", "dsa", "moe", "qwen3moe")
# the op each model's mock stands for
OPS = {"llama": "attention", "dsa": "dsa", "moe": "moe", "qwen3moe": "moe"}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# DeepSeek-V3.2's YaRN RoPE (its config.json), so the rotary tables are built as in the real model
V32_ROPE = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "original_max_position_embeddings": 4096,
            "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}


def parser(doc: str) -> argparse.ArgumentParser:
    """The options both example scripts take (the same model, the same batch), each adding its own."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--model", choices=MODELS, default="llama")
    p.add_argument("--small", action="store_true", help="CPU-sized dimensions")
    p.add_argument("--tp", type=int, default=8, help="dsa: simulated TP degree, local heads = 128 / tp")
    p.add_argument("--batch", type=int, default=4, help="requests (B)")
    p.add_argument("--seed", type=int, default=0)
    return p


def make_config(model: str, layers: int, small: bool = False, tp: int = 8, attn_implementation: str = "sdpa"):
    """The model's config: real per-head shapes, local heads = heads / ``tp`` (one GPU of a TP group),
    dense MLPs (the op under test is the attention), a small CPU variant with ``small``."""
    if model == "llama":
        from transformers import LlamaConfig

        dims = dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=2, intermediate_size=512,
                    vocab_size=1000) if small else \
            dict(hidden_size=1024, num_attention_heads=16, num_key_value_heads=4, intermediate_size=2816,
                 vocab_size=32000)
        return LlamaConfig(num_hidden_layers=layers, max_position_embeddings=4096,
                           attn_implementation=attn_implementation, **dims)
    if model == "dsa":
        try:
            from transformers import DeepseekV32Config
        except ImportError:
            import transformers

            sys.exit(f"transformers {transformers.__version__} has no DeepSeek-V3.2: install transformers>=5.23")
        if small:
            dims = dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=64,
                        kv_lora_rank=32, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
                        index_n_heads=4, index_head_dim=32, index_topk=16, intermediate_size=512, vocab_size=1000)
        else:
            heads = 128 // tp
            dims = dict(num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=18432 // tp)
        return DeepseekV32Config(num_hidden_layers=layers, first_k_dense_replace=layers, rope_parameters=V32_ROPE,
                                 attn_implementation=attn_implementation, **dims)
    if model == "moe":
        # DeepSeek-V3: MLA attention, a first dense layer, then MoE layers (256 routed experts, top-8 of
        # 8 groups, one shared expert); per-expert intermediate = 2048 / tp, every expert on the GPU
        from transformers import DeepseekV3Config

        if small:
            dims = dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=64,
                        kv_lora_rank=32, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
                        intermediate_size=512, moe_intermediate_size=64, n_routed_experts=16, n_group=4,
                        topk_group=2, num_experts_per_tok=4, vocab_size=1000)
        else:
            heads = 128 // tp
            dims = dict(num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=18432 // tp,
                        moe_intermediate_size=2048 // tp)
        return DeepseekV3Config(num_hidden_layers=layers, first_k_dense_replace=1, rope_parameters=V32_ROPE,
                                attn_implementation=attn_implementation, **dims)
    if model == "qwen3moe":
        # Qwen3-30B-A3B's dims (128 experts, top-8, GQA 32/4), a first dense layer (mlp_only_layers)
        from transformers import Qwen3MoeConfig

        dims = dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=64, intermediate_size=512,
                    moe_intermediate_size=64, num_experts=16, num_experts_per_tok=4, vocab_size=1000) if small else \
            dict(hidden_size=2048, num_attention_heads=32, num_key_value_heads=4, head_dim=128, intermediate_size=6144,
                 moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8, vocab_size=32000)
        return Qwen3MoeConfig(num_hidden_layers=layers, mlp_only_layers=[0], decoder_sparse_step=1,
                              max_position_embeddings=4096, attn_implementation=attn_implementation, **dims)
    raise SystemExit(f"unknown model {model!r}: use {' or '.join(MODELS)}")


def causal_lm(model: str, config) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config)


def moe_block(model: str) -> type:
    """The MoE block class of ``model`` (what its MoE layers' ``mlp`` is), as transformers defines it."""
    if model == "moe":
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE

        return DeepseekV3MoE
    if model == "qwen3moe":
        from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

        return Qwen3MoeSparseMoeBlock
    raise SystemExit(f"{model} has no MoE block: use moe or qwen3moe")


def attention_parts(model: str) -> tuple[type, type, Any]:
    """(attention class, rotary-embedding class, its module) of the model, as transformers defines them."""
    if model == "llama":
        from transformers.models.llama import modeling_llama as m

        return m.LlamaAttention, m.LlamaRotaryEmbedding, m
    from transformers.models.deepseek_v32 import modeling_deepseek_v32 as m

    return m.DeepseekV32Attention, m.DeepseekV32RotaryEmbedding, m


def device_and_dtype(dtype: str | None = None) -> tuple[torch.device, torch.dtype]:
    """The GPU in bf16 (as an engine runs), else the CPU in fp32; ``dtype`` overrides."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    default = torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, DTYPES[dtype] if dtype else default
