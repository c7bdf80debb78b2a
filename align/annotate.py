"""NVTX ranges for profiled code: a plain range helper and per-module ranges on an ``nn.Module`` tree;
and the cudaProfilerApi capture range (``cuda_profiler``) with the sync that closes a phase.

nsys attributes kernels to the NVTX ranges that enclose their launch, so a mock layer marks its
iterations and an E2E model marks its layers (``layers.3.self_attn``). PyTorch's own
``torch.cuda.nvtx`` is preferred (it exists wherever CUDA does); the ``nvtx`` package is the
fallback on machines without CUDA, and without either the ranges are no-ops.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any, Callable


def _backend() -> tuple[Callable[[str], Any], Callable[[], Any]]:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.nvtx.range_push, torch.cuda.nvtx.range_pop
    except ImportError:
        pass
    try:
        import nvtx

        return (lambda msg: nvtx.push_range(msg)), nvtx.pop_range
    except ImportError:
        return (lambda msg: None), (lambda: None)


_push, _pop = _backend()


@contextlib.contextmanager
def nvtx_range(name: str) -> Iterator[None]:
    """Push/pop range around a block, on the calling thread."""
    _push(name)
    try:
        yield
    finally:
        _pop()


def module_range_name(qualified_name: str, strip_prefix: str = "model.") -> str:
    """``model.layers.3.self_attn`` -> ``layers.3.self_attn``: the names engines use in their ranges."""
    if strip_prefix and qualified_name.startswith(strip_prefix):
        return qualified_name[len(strip_prefix):]
    return qualified_name


def nvtx_modules(
    model: Any,
    include: str = r"(^|\.)layers\.\d+(\.(self_attn|mlp))?$",
    exclude: str | None = None,
    strip_prefix: str = "model.",
) -> Callable[[], None]:
    """Put a push/pop NVTX range around every submodule whose qualified name matches ``include``.

    Returns a function that removes the hooks again. The default marks each decoder layer and its
    attention and MLP submodules, the granularity at which mock layers are compared.
    """
    inc = re.compile(include)
    exc = re.compile(exclude) if exclude else None
    handles = []
    for qname, module in model.named_modules():
        if not qname or not inc.search(qname) or (exc and exc.search(qname)):
            continue
        label = module_range_name(qname, strip_prefix)

        def pre_hook(_mod, _args, _label=label):
            _push(_label)

        def post_hook(_mod, _args, _out):
            _pop()

        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(post_hook, always_call=True))

    def remove() -> None:
        for h in handles:
            h.remove()

    return remove


def synchronize() -> None:
    """Wait for the GPU, so a range ends after its kernels; no-op without CUDA."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextlib.contextmanager
def cuda_profiler(enabled: bool) -> Iterator[None]:
    """cudaProfilerStart/Stop around the measured parts, for ``nsys --capture-range=cudaProfilerApi``:
    model build and warm-up stay out of such a profile. No-op without CUDA (and says so)."""
    import torch

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
