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


def warm_and_capture(call: Callable[[], object], warmup: int, use_graph: bool = True):
    """Run ``call`` ``warmup`` times on a side stream (allocator and library handles settle outside
    any capture), then, if asked, capture one call into a CUDA graph.

    Returns ``(run, graph, failure)``: ``run`` is ``graph.replay`` when captured, else ``call``;
    ``failure`` is ``"eager fallback (Error: first line)"`` when capture raised, else None. The
    graph is returned so that the caller decides how long its memory is kept."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            call()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    if not use_graph:
        return call, None, None
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            call()
        torch.cuda.synchronize()
    except Exception as exc:  # any capture failure: time eagerly, say why
        torch.cuda.synchronize()
        del graph
        torch.cuda.empty_cache()
        return call, None, f"eager fallback ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return graph.replay, graph, None


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

    run, graph, failure = warm_and_capture(step, warmup, use_graph)
    status = "captured" if graph is not None else failure or "eager"
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
