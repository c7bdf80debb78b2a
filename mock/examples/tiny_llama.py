"""Shared pieces of the two example scripts: one small Llama config, the device and dtype, seeding,
and the warm-up / CUDA-graph / cudaProfiler plumbing.

attention_mock.py and llama_e2e.py build their attention from the same config, so a kernel
difference between their profiles comes from how the attention is called, not from its dimensions.
Weights are random (built from the config): nothing is downloaded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

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


def synchronize() -> None:
    """Wait for the GPU, so a phase's NVTX range ends after its kernels; no-op on CPU."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def warm_up(step: Callable[[], object], n: int, before: Callable[[], None] | None = None) -> None:
    """Run ``step`` ``n`` times, each after ``before``; under CUDA on a side stream, as the PyTorch
    CUDA-graph docs ask before a capture (lazy cuBLAS and allocator setup must not happen while capturing)."""
    stream = torch.cuda.Stream() if torch.cuda.is_available() else None
    if stream is not None:
        stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
        for _ in range(n):
            if before is not None:
                before()
            step()
    if stream is not None:
        torch.cuda.current_stream().wait_stream(stream)


def capture(step: Callable[[], object]) -> tuple[Callable[[], object], str]:
    """Capture one call of ``step`` in a CUDA graph; return what to run per step and a status line.

    Without CUDA, or when the capture fails (a host sync inside ``step``, say), that is ``step`` itself,
    run eagerly, and the status says why. Capturing executes nothing, so a failed capture leaves all state as it was.
    """
    if not torch.cuda.is_available():
        return step, "eager (no CUDA)"
    stream = torch.cuda.current_stream()
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
    except Exception as exc:  # any capture error: fall back to eager and report it
        torch.cuda.set_stream(stream)  # torch.cuda.graph leaves its capture stream current when capture_end raises
        torch.cuda.synchronize()
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return step, f"eager fallback ({reason})"
    return graph.replay, "captured"


@contextlib.contextmanager
def cuda_profiler(enabled: bool) -> Iterator[None]:
    """cudaProfilerStart/Stop around the measured parts, for ``nsys --capture-range=cudaProfilerApi``.

    Everything before (model build, warm-up) stays out of such a profile. No-op without CUDA.
    """
    active = enabled and torch.cuda.is_available()
    if enabled and not active:
        print("profiler_api: skipped (no CUDA)")
    if active:
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
    try:
        yield
    finally:
        if active:
            torch.cuda.synchronize()
            torch.cuda.profiler.stop()
