"""``align bench``: a decoder layer's own submodule against a standalone mock layer with the same
weights and inputs (seed 002's "correct alignment": latency within 1 %, same CUDA-graph behaviour).

The pair comes from ``align_mock.bench_api.build_pair`` (our mock layers in ``mock/``, way B) or,
with ``framework``, from a framework adapter (``align_mock.frameworks``, way A). Outputs
are compared numerically first; then both are timed the same way (:func:`align.timing.time_call`),
alternating rounds so clock drift hits both sides alike.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

from align.errors import AlignError, arg

# bf16 keeps 8 bits of mantissa: outputs of two evaluation orders differ by a few ulps
TOLERANCES = {"bfloat16": (2e-2, 2e-2), "float16": (2e-3, 2e-3), "float32": (1e-4, 1e-5)}


@dataclass
class BenchResult:
    op: str
    phase: str
    shape: dict
    outputs_match: bool
    max_abs_diff: float
    tolerance: dict
    mock: dict = field(default_factory=dict)
    submodule: dict = field(default_factory=dict)
    diff_pct: float | None = None
    device: str = ""
    versions: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"op": self.op, "phase": self.phase, "shape": self.shape, "outputs_match": self.outputs_match,
                "max_abs_diff": self.max_abs_diff, "tolerance": self.tolerance, "mock": self.mock,
                "submodule": self.submodule, "diff_pct": self.diff_pct, "device": self.device, "versions": self.versions}


@dataclass
class Side:
    """One side of a comparison: a zero-argument call and what restores its state before each call."""

    call: object
    reset: object = None


def _pair(op: str, phase: str, **kw):
    try:
        from align_mock.bench_api import build_pair
    except ImportError as exc:
        raise AlignError(f"the mock layers are not importable ({exc})",
                         "install align with torch: pip install -e '.[mock]'") from None
    try:
        return build_pair(op, phase, **kw)
    except ValueError as exc:
        raise AlignError(str(exc), "check " + "/".join(map(arg, ("op", "phase", "tp", "batch", "seq", "kv_len")))) from None


def _framework_pair(framework: str, op: str, phase: str, tp: int, batch: int, seq: int, kv_len: int, config: str,
                    device: str, dtype: str, seed: int, cache: str | None):
    """(submodule side, mock side, shape, versions) from a framework adapter: the module inside the
    framework's decoder layer against the same class built standalone (way A)."""
    try:
        from align_mock.frameworks import Case, get_adapter
    except ImportError as exc:
        raise AlignError(f"the framework adapters are not importable ({exc})",
                         "install align with torch: pip install -e '.[mock]'") from None
    try:
        adapter = get_adapter(framework)
        case = Case(op, phase, batch=batch, seq=seq if phase == "context" else 1, kv_len=kv_len, tp=tp, config=config,
                    dtype=dtype, device=device, cache=cache, seed=seed)
        inner, alone = adapter.build_pair(case)
    except (ValueError, ImportError) as exc:
        raise AlignError(str(exc), "check " + "/".join(map(arg, ("framework", "op", "phase", "tp", "batch", "seq", "kv_len", "config")))) from None
    shape = {**alone.shape, "submodule": f"{inner.where}: {type(inner.module).__name__}",
             "mock": f"{alone.where}: {type(alone.module).__name__}", "inputs_equal": inner.inputs == alone.inputs}
    return Side(inner.call, inner.reset), Side(alone.call, alone.reset), shape, {framework: adapter.version()}


def bench(op: str, phase: str, tp: int = 1, batch: int = 1, seq: int = 1, kv_len: int = 0, config: str = "v32",
          dtype: str = "bfloat16", device: str = "cuda", iters: int = 50, warmup: int = 5, rounds: int = 2,
          use_graph: bool = True, timing: bool = True, seed: int = 0, framework: str = "align",
          cache: str | None = None) -> BenchResult:
    """Compare outputs, then time submodule and mock; ``timing=False`` only compares (runs on CPU).
    ``framework``: ``align`` (our PyTorch mock layers, way B) or a framework adapter's name (way A:
    the framework's own module in its decoder layer vs built standalone); ``cache`` picks the
    adapter's cache (static or dynamic; default static for generation, dynamic for context)."""
    try:
        import torch
    except ImportError:
        raise AlignError("align bench needs PyTorch", "pip install -e '.[mock]'") from None
    if phase not in ("context", "generation"):
        raise AlignError(f"unknown phase {phase!r}", "use context or generation")
    if dtype not in TOLERANCES:
        raise AlignError(f"unknown dtype {dtype!r}", f"use one of {', '.join(TOLERANCES)}")
    for what, value, least in (("tp", tp, 1), ("batch", batch, 1), ("seq", seq, 1), ("kv_len", kv_len, 0),
                               ("iters", iters, 1), ("warmup", warmup, 0), ("rounds", rounds, 1)):
        if value < least:
            raise AlignError(f"{what} must be >= {least}, got {value}", "nothing would be built or timed")
    if framework == "align":
        try:
            from align_mock.bench_api import CONFIGS, OPS
        except ImportError:
            CONFIGS, OPS = None, None  # _pair says why the mock layers are missing
        if OPS is not None and op not in OPS:
            raise AlignError(f"unknown op {op!r}", f"use one of {', '.join(OPS)}")
        if CONFIGS is not None and config not in CONFIGS:
            raise AlignError(f"unknown config {config!r}", f"use one of {', '.join(sorted(CONFIGS))}")
    else:
        from align_mock.frameworks import FRAMEWORKS

        if framework not in FRAMEWORKS:
            raise AlignError(f"unknown framework {framework!r}", f"use align or one of {', '.join(FRAMEWORKS)}")
    if timing and not torch.cuda.is_available():
        raise AlignError("timing needs a CUDA GPU", f"run on a GPU machine, or pass {arg('timing', 'False')} to compare outputs")
    if device == "cuda" and not torch.cuda.is_available():
        device = "cpu"
    if framework == "align":
        pair = _pair(op, phase, tp=tp, batch=batch, seq=seq, kv_len=kv_len, config=config, device=device,
                     dtype=getattr(torch, dtype), seed=seed)
        sub, mock = Side(pair.submodule_call, pair.reset), Side(pair.mock_call, pair.reset)
        shape, versions = dict(pair.shape), {}
    else:
        sub, mock, shape, versions = _framework_pair(framework, op, phase, tp, batch, seq, kv_len, config, device,
                                                     dtype, seed, cache)
    with torch.no_grad():
        if sub.reset:
            sub.reset()
        ref = sub.call().float()
        if mock.reset:
            mock.reset()
        out = mock.call().float()
    rtol, atol = TOLERANCES[dtype]
    max_abs = float((out - ref).abs().max()) if ref.numel() else 0.0
    match = bool(ref.shape == out.shape and torch.allclose(out, ref, rtol=rtol, atol=atol))
    result = BenchResult(op=op, phase=phase, shape=shape, outputs_match=match, max_abs_diff=max_abs,
                         tolerance={"rtol": rtol, "atol": atol},
                         device=torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
                         versions={"torch": torch.__version__, **versions})
    result.shape["framework"] = framework
    if not timing:
        return result
    from align.timing import time_call

    per_round = max(1, iters // rounds)
    sub_samples, mock_samples, graphs = [], [], {}
    with torch.no_grad():
        for _ in range(rounds):
            for label, side, samples in (("submodule", sub, sub_samples), ("mock", mock, mock_samples)):
                t = time_call(side.call, side.reset, warmup=warmup, iters=per_round, use_graph=use_graph)
                samples.extend(t.samples_ms)
                graphs[label] = t.cuda_graph
    result.submodule = _summary(sub_samples, graphs["submodule"])
    result.mock = _summary(mock_samples, graphs["mock"])
    result.diff_pct = 100.0 * (result.mock["median_ms"] - result.submodule["median_ms"]) / result.submodule["median_ms"]
    return result


def _summary(samples: list[float], graph: str) -> dict:
    import statistics

    from align.timing import quantile

    return {"median_ms": statistics.median(samples), "mean_ms": statistics.fmean(samples), "min_ms": min(samples),
            "max_ms": max(samples), "p10_ms": quantile(samples, 0.1), "p90_ms": quantile(samples, 0.9),
            "iters": len(samples), "cuda_graph": graph}
