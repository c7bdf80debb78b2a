"""Optional adapters to TensorRT-LLM's own modules ("方式 A" of seed 000), for machines where
``tensorrt_llm`` imports. Not run on this project's machines (TensorRT-LLM cannot be installed
there): :func:`plan` is the tested argument plumbing, :func:`build_dsa_attention` the untested
construction that follows TensorRT-LLM's public sources and aiconfigurator's module collector."""

from align_mock.trtllm.dsa import TrtllmNotInstalled, TrtllmSpec, build_dsa_attention, plan

__all__ = ["TrtllmNotInstalled", "TrtllmSpec", "build_dsa_attention", "plan"]
