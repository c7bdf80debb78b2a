"""TensorRT-LLM's DeepSeek-V3.2 attention (DSA) built the way aiconfigurator's module collector
builds it: a real decoder layer from the model's HF config, one GPU, local heads = heads / TP
(``Mapping(world_size=1, tp_size=1)``; the head count is overridden instead of sharding), and
its ``self_attn`` called with TensorRT-LLM's attention metadata and KV-cache manager.

Facts used (TensorRT-LLM ``tensorrt_llm/_torch``: ``model_config.ModelConfig.from_pretrained``,
``models/modeling_deepseekv3.DeepseekV3DecoderLayer``, ``attention_backend`` metadata,
``pyexecutor/resource_manager.KVCacheManager``; aiconfigurator ``collector/trtllm/collect_mla_module.py``):
only the constructor arguments are planned here; nothing of their code is copied.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


class TrtllmNotInstalled(ImportError):
    """Raised with one line saying what to do when ``tensorrt_llm`` does not import."""


@dataclass(frozen=True)
class TrtllmSpec:
    model_path: str              # a folder with the HF config.json of DeepSeek-V3.2 (weights not needed)
    phase: str                   # "context" or "generation"
    batch: int
    seq: int = 1                 # context tokens per request
    kv_len: int = 0              # generation: cached tokens; context: prefix length
    num_heads: int = 128         # total attention heads of the model
    tp_size: int = 1             # simulated tensor parallelism
    tokens_per_block: int = 64   # KV-cache page size (aiconfigurator uses 64 on SM90, 32 elsewhere)
    kv_cache_dtype: str = "bfloat16"
    layer_idx: int = 3           # a MoE layer of DeepSeek-V3.2 (first_k_dense_replace = 3)
    device: str = "cuda:0"


def plan(spec: TrtllmSpec) -> dict:
    """The arguments each TensorRT-LLM constructor gets; validated here so mistakes fail before
    TensorRT-LLM is even imported."""
    if spec.phase not in ("context", "generation"):
        raise ValueError(f"phase must be context or generation, not {spec.phase!r}")
    if spec.num_heads % spec.tp_size:
        raise ValueError(f"{spec.num_heads} heads do not split over tp_size {spec.tp_size}")
    if spec.batch < 1 or spec.seq < 1 or spec.kv_len < 0:
        raise ValueError("batch and seq must be >= 1 and kv_len >= 0")
    if spec.phase == "generation" and spec.kv_len < 1:
        raise ValueError("generation reads a KV cache: kv_len must be >= 1")
    local = spec.num_heads // spec.tp_size
    new_tokens = spec.seq if spec.phase == "context" else 1
    cached = spec.kv_len
    per_request = cached + new_tokens
    blocks_per_request = -(-per_request // spec.tokens_per_block)
    return {
        "mapping": {"world_size": 1, "rank": 0, "tp_size": 1, "pp_size": 1},
        "pretrained_overrides": {"num_attention_heads": local, "num_key_value_heads": local},
        "decoder_layer": {"layer_idx": spec.layer_idx},
        "kv_cache_manager": {"tokens_per_block": spec.tokens_per_block, "max_seq_len": per_request,
                             "max_batch_size": spec.batch, "num_blocks": spec.batch * blocks_per_request,
                             "dtype": spec.kv_cache_dtype},
        "metadata": {"num_contexts": spec.batch if spec.phase == "context" else 0,
                     "seq_lens": [new_tokens] * spec.batch, "prompt_lens": [per_request] * spec.batch,
                     "num_cached_tokens_per_seq": [cached] * spec.batch},
        "hidden_states_shape": [spec.batch * new_tokens, None],  # hidden size comes from the config
        "row": {"num_heads": local, "tp_size": 1, "batch_size": spec.batch,
                "isl": spec.seq if spec.phase == "context" else 1, "step": cached},
        "spec": asdict(spec),
    }


def build_dsa_attention(spec: TrtllmSpec):
    """TensorRT-LLM's ``self_attn`` of a DeepSeek-V3.2 decoder layer and a callable running it.
    NOT RUN on this project's machines; follows the plan above."""
    try:
        import tensorrt_llm  # noqa: F401
        from tensorrt_llm._torch.model_config import ModelConfig
        from tensorrt_llm._torch.models.modeling_deepseekv3 import DeepseekV3DecoderLayer
        from tensorrt_llm.mapping import Mapping
    except ImportError as exc:
        raise TrtllmNotInstalled(f"TensorRT-LLM not installed ({exc}): use the PyTorch mock layers "
                                 "(align_mock.dsa) or install tensorrt_llm") from None
    p = plan(spec)
    model_config = ModelConfig.from_pretrained(spec.model_path, mapping=Mapping(**p["mapping"]))
    for key, value in p["pretrained_overrides"].items():
        setattr(model_config.pretrained_config, key, value)
    layer = DeepseekV3DecoderLayer(model_config, **p["decoder_layer"]).to(spec.device)
    return layer.self_attn, p
