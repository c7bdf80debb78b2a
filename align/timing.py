"""GPU timing of a callable the way collectors time ops: warm-up, one CUDA graph of the call
replayed (eager when capture fails), CUDA events, median of N with the spread.

Used by ``align bench`` to time a decoder's own submodule against a standalone mock layer with
the same weights and inputs (seed 002: the two must agree within 1 %, with the same CUDA-graph
behaviour).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Callable


@dataclass
class Timing:
    """Latency of one call in milliseconds over ``iters`` timed repetitions."""

    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    p10_ms: float
    p90_ms: float
    iters: int
    cuda_graph: str
    samples_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, samples: bool = False) -> dict:
        d = asdict(self)
        if not samples:
            d.pop("samples_ms")
        return d


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def warm_up(step: Callable[[], object], n: int, before: Callable[[], None] | None = None) -> None:
    """Run ``step`` ``n`` times (each after ``before``); under CUDA on a side stream, as the PyTorch
    CUDA-graph notes ask before a capture (lazy cuBLAS and allocator set-up must not happen while
    capturing). Runs eagerly on the CPU."""
    import contextlib

    import torch

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


def capture_graph(step: Callable[[], object]) -> tuple[Callable[[], object], str]:
    """Capture one call of ``step`` in a CUDA graph; returns (what to run per step, status line).

    Without CUDA, or when the capture fails (a host sync inside ``step``, say), that is ``step``
    itself, run eagerly, and the status says why ("eager (no CUDA)", "eager fallback (Error: ...)");
    else ``graph.replay`` and "captured". Capturing executes no kernels, so a failed capture leaves
    the caller's state as it was."""
    import torch

    if not torch.cuda.is_available():
        return step, "eager (no CUDA)"
    stream = torch.cuda.current_stream()
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
    except Exception as exc:  # any capture error: fall back to eager and say why
        torch.cuda.set_stream(stream)  # a failed capture_end can leave the capture stream current
        torch.cuda.synchronize()
        # ... and the device's RNG in capture mode: every later random op would raise "Offset
        # increment outside graph capture". Setting its own state back ends that (same seed/offset).
        gen = torch.cuda.default_generators[torch.cuda.current_device()]
        if hasattr(gen, "graphsafe_set_state"):
            gen.graphsafe_set_state(gen.clone_state())
        torch.cuda.empty_cache()  # the failed graph's memory pool
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return step, f"eager fallback ({reason})"
    return graph.replay, "captured"


def time_call(call: Callable[[], object], reset: Callable[[], None] | None = None, warmup: int = 5,
              iters: int = 50, use_graph: bool = True) -> Timing:
    """Time ``call`` on the current CUDA device. ``reset`` runs before every call (inside the graph
    too) so calls that mutate caches see the same state each time."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("time_call needs a CUDA device")

    def step() -> None:
        if reset is not None:
            reset()
        call()

    warm_up(step, warmup)
    torch.cuda.synchronize()
    run, status = capture_graph(step) if use_graph else (step, "eager")
    for _ in range(2):
        run()
    torch.cuda.synchronize()
    samples = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return Timing(median_ms=statistics.median(samples), mean_ms=statistics.fmean(samples), min_ms=min(samples),
                  max_ms=max(samples), p10_ms=quantile(samples, 0.1), p90_ms=quantile(samples, 0.9), iters=iters,
                  cuda_graph=status, samples_ms=samples)
