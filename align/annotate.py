"""NVTX ranges for profiled code: a plain range helper and per-module ranges on an ``nn.Module`` tree
(align's short names, or the dict-string markers the engines' layer-wise switches write); and the
cudaProfilerApi capture range (``cuda_profiler``) with the sync that closes a phase.

nsys attributes kernels to the NVTX ranges that enclose their launch, so a mock layer marks its
iterations and an E2E model marks its layers (``layers.3.self_attn``). PyTorch's own
``torch.cuda.nvtx`` is preferred (it exists wherever CUDA does); the ``nvtx`` package is the
fallback on machines without CUDA, and without either the ranges are no-ops.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
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
            if not _compiling():
                _push(_label)

        def post_hook(_mod, _args, _out):
            if not _compiling():
                _pop()

        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(post_hook, always_call=True))

    def remove() -> None:
        for h in handles:
            h.remove()

    return remove


def _compiling() -> bool:
    """Inside a graph torch.compile traces, a hook pushes no range: a compiled module runs as one
    program (the engines' markers are absent there too; research notes §2.6)."""
    try:
        import torch

        return torch.compiler.is_compiling()
    except (ImportError, AttributeError):
        return False


@dataclass(frozen=True)
class MarkerStyle:
    """How one engine's layer-wise NVTX switch writes a module's range (research notes §1.4, §2.6):
    a Python dict string ``{'Module': PATH, 'TrainableParams': {...}, 'Inputs': [[shape], ...], ...}``
    pushed before the module runs, popped after it."""

    prefix: str | None        # the root module's name; None: the model's architecture (class) name
    kwargs: bool              # tensors passed by keyword are listed under their own keys
    outputs: bool             # after the module's range, an empty range of its output shapes
    params_always: bool       # 'TrainableParams' written even when the module holds none itself
    static_params: bool       # 'StaticParams' of Linear and Embedding modules
    skip: tuple[str, ...] = ()  # module classes that get no range


# TensorRT-LLM enable_layerwise_nvtx_marker, vLLM --enable-layerwise-nvtx-tracing,
# SGLang --enable-layerwise-nvtx-marker
MARKER_STYLES = {
    "trtllm": MarkerStyle(prefix=None, kwargs=False, outputs=False, params_always=True, static_params=False),
    "vllm": MarkerStyle(prefix="top", kwargs=True, outputs=True, params_always=False, static_params=True,
                        skip=("Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d")),
    "sglang": MarkerStyle(prefix="model", kwargs=True, outputs=True, params_always=False, static_params=True,
                          skip=("Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d")),
}


def _shapes(value: Any, out: list | None = None) -> list:
    """Sizes of the tensors in ``value``, lists and tuples descended."""
    out = [] if out is None else out
    if isinstance(value, (list, tuple)):
        for v in value:
            _shapes(v, out)
    elif hasattr(value, "size") and hasattr(value, "dim"):
        out.append(list(value.size()))
    return out


def marker_text(style: MarkerStyle, path: str, module: Any, args: Any = None, kwargs: dict | None = None,
                output: Any = None) -> str:
    """The range text ``style`` writes for one call of ``module`` (its output marker when ``output``
    is given)."""
    d: dict[str, Any] = {"Module": path}
    params = {n: list(p.size()) for n, p in module.named_parameters(recurse=False)}
    if params or style.params_always:
        d["TrainableParams"] = params
    inputs = _shapes(args)
    if inputs:
        d["Inputs"] = inputs
    outputs = _shapes(output)
    if outputs:
        d["Outputs"] = outputs
    for key, value in (kwargs or {}).items():
        shapes = _shapes(value)
        if shapes:
            d[key] = shapes
    if style.static_params:
        static = {k: getattr(module, k) for k in ("in_features", "out_features", "num_embeddings", "embedding_dim")
                  if isinstance(getattr(module, k, None), int)}
        if static:
            d["StaticParams"] = static
    return str(d)


def layerwise_markers(model: Any, engine: str = "vllm", prefix: str | None = None) -> Callable[[], None]:
    """Per-module NVTX ranges on every ``named_modules()`` entry, written as ``engine``'s layer-wise
    switch writes them (``MARKER_STYLES``): dict-string texts, every sub-module nested in its parent,
    the root named ``prefix`` (default: the style's, or the model's class name as TensorRT-LLM's
    architectures), output markers where the engine writes them. Returns a function removing them."""
    if engine not in MARKER_STYLES:
        raise ValueError(f"unknown engine {engine!r}: use {', '.join(MARKER_STYLES)}")
    style = MARKER_STYLES[engine]
    root = prefix or style.prefix or type(model).__name__
    handles = []
    for path, module in model.named_modules(prefix=root):
        if type(module).__name__ in style.skip:
            continue

        def pre_hook(mod, args, kwargs, _path=path):
            if not _compiling():
                _push(marker_text(style, _path, mod, args, kwargs if style.kwargs else None))

        def post_hook(mod, _args, out, _path=path):
            if not _compiling():
                _pop()
                if style.outputs:
                    _push(marker_text(style, _path, mod, output=out))
                    _pop()

        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(post_hook))

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
