"""The TensorRT-LLM adapter's argument plumbing (TensorRT-LLM itself cannot be installed here)."""

from __future__ import annotations

import importlib.util

import pytest

from align_mock.trtllm import TrtllmNotInstalled, TrtllmSpec, build_dsa_attention, plan


def test_plan_context_with_tp_and_prefix():
    p = plan(TrtllmSpec(model_path="cfg", phase="context", batch=2, seq=100, kv_len=128, tp_size=8))
    assert p["pretrained_overrides"] == {"num_attention_heads": 16, "num_key_value_heads": 16}
    assert p["mapping"]["tp_size"] == 1 and p["row"] == {"num_heads": 16, "tp_size": 1, "batch_size": 2,
                                                         "isl": 100, "step": 128}
    kv = p["kv_cache_manager"]
    assert kv["max_seq_len"] == 228 and kv["num_blocks"] == 2 * 4  # ceil(228 / 64) blocks per request
    assert p["metadata"]["seq_lens"] == [100, 100] and p["metadata"]["num_cached_tokens_per_seq"] == [128, 128]


def test_plan_generation():
    p = plan(TrtllmSpec(model_path="cfg", phase="generation", batch=4, kv_len=8191, tokens_per_block=32))
    assert p["row"]["isl"] == 1 and p["row"]["step"] == 8191 and p["metadata"]["num_contexts"] == 0
    assert p["kv_cache_manager"]["num_blocks"] == 4 * 256


@pytest.mark.parametrize("kw,msg", [({"phase": "decode"}, "phase"), ({"tp_size": 3}, "split"),
                                    ({"phase": "generation", "kv_len": 0}, "kv_len")])
def test_plan_rejects_bad_arguments(kw, msg):
    args = {"model_path": "cfg", "phase": "context", "batch": 1, **kw}
    with pytest.raises(ValueError, match=msg):
        plan(TrtllmSpec(**args))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_llm") is not None, reason="TensorRT-LLM is installed")
def test_clear_error_without_tensorrt_llm():
    with pytest.raises(TrtllmNotInstalled, match="TensorRT-LLM not installed"):
        build_dsa_attention(TrtllmSpec(model_path="cfg", phase="context", batch=1))
