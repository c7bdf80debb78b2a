"""Benchmark one prepared op: warm-ups, one CUDA graph of the call (eager when capture fails, and
that is recorded), timed runs with CUDA events, NVML power and SM-clock sampling during the timed
runs, throttling flagged when the SM clock drops more than 10 %.

aiconfigurator's collector reports the mean of one event pair around all runs; here every run is
timed, and the median is the latency (the mean and the spread are kept). On a machine without
CUDA the same protocol runs with a wall clock (for tests of the collection path, not for data).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

from align.timing import capture_graph, warm_up

THROTTLE_DROP = 0.10


@dataclass
class Result:
    latency: float            # ms, median of the timed runs
    mean_ms: float
    min_ms: float
    max_ms: float
    runs: int
    used_cuda_graph: bool
    graph_note: str
    timer: str                # cuda-events or wall-clock
    power: float | None = None        # W, mean over the timed runs
    power_limit: float | None = None  # W
    sm_clock_start_mhz: int | None = None
    sm_clock_min_mhz: int | None = None
    throttled: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def power_problem(device: str) -> str | None:
    """Why board power cannot be sampled on ``device`` (``cuda:N`` or ``cpu``), or None when it can:
    asked before any case is timed, so ``--power`` never writes rows without their power columns."""
    if not device.startswith("cuda"):
        return "the cases run on the CPU (no GPU visible), whose power NVML does not read"
    monitor = PowerMonitor(int(device.partition(":")[2] or 0))
    return None if monitor.available else f"NVML gave no power reading for {device} ({monitor.problem})"


class PowerMonitor:
    """Samples board power and SM clock every 100 ms on a thread (nvidia-ml-py), when available."""

    def __init__(self, device_index: int, interval: float = 0.1):
        self.interval = interval
        self.samples: list[float] = []
        self.clocks: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.problem = ""
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            self.limit = pynvml.nvmlDeviceGetEnforcedPowerLimit(self._handle) / 1000.0
            self.clock_start = pynvml.nvmlDeviceGetClockInfo(self._handle, pynvml.NVML_CLOCK_SM)
        except Exception as exc:  # no NVML (CPU machine, library missing): no power figures
            self.problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._nvml = None
            self.limit = None
            self.clock_start = None

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0)
                self.clocks.append(self._nvml.nvmlDeviceGetClockInfo(self._handle, self._nvml.NVML_CLOCK_SM))
            except Exception:
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> "PowerMonitor":
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread:
            self._stop.set()
            self._thread.join()


def benchmark(call: Callable[[], object], device: str = "cuda", warmups: int = 5, runs: int = 20,
              use_graph: bool = True, min_duration_s: float = 0.0) -> Result:
    """Time ``call``; with ``min_duration_s`` runs are added until the timed part lasts that long
    (power readings need a second or so of steady load)."""
    try:
        import torch
    except ImportError:
        torch = None
    cuda = torch is not None and str(device).startswith("cuda") and torch.cuda.is_available()
    if not cuda:
        return _cpu_benchmark(call, warmups, runs)
    dev = torch.device(device)
    if dev.index is None:  # "cuda": the current device (set_device and NVML need an index)
        dev = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(dev)
    warm_up(call, warmups)
    torch.cuda.synchronize()
    run, note = capture_graph(call) if use_graph else (call, "eager (not requested)")
    used = note == "captured"
    for _ in range(warmups):
        run()
    torch.cuda.synchronize()
    if min_duration_s > 0:
        t0 = time.perf_counter()
        run()
        torch.cuda.synchronize()
        one = max(time.perf_counter() - t0, 1e-6)
        runs = min(max(runs, int(min_duration_s / one) + 1), 3000)
    # Runs are queued back to back (one event pair each, a single sync at the end) so that the GPU
    # stays busy: a sync per run lets the clocks drop between short runs and adds launch gaps.
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)]
    monitor = PowerMonitor(dev.index or 0)
    with monitor:
        for start, end in events:
            start.record()
            run()
            end.record()
        torch.cuda.synchronize()
    samples = [start.elapsed_time(end) for start, end in events]
    del run  # a captured graph lives as long as its replay method
    torch.cuda.synchronize()
    res = Result(latency=statistics.median(samples), mean_ms=statistics.fmean(samples), min_ms=min(samples),
                 max_ms=max(samples), runs=len(samples), used_cuda_graph=used, graph_note=note, timer="cuda-events")
    if monitor.available:
        res.power_limit = monitor.limit
        res.power = statistics.fmean(monitor.samples) if monitor.samples else None
        res.sm_clock_start_mhz = monitor.clock_start
        res.sm_clock_min_mhz = min(monitor.clocks) if monitor.clocks else None
        if monitor.clocks and monitor.clock_start:
            res.throttled = min(monitor.clocks) < (1 - THROTTLE_DROP) * monitor.clock_start
    return res


def _cpu_benchmark(call: Callable[[], object], warmups: int, runs: int) -> Result:
    for _ in range(warmups):
        call()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return Result(latency=statistics.median(samples), mean_ms=statistics.fmean(samples), min_ms=min(samples),
                  max_ms=max(samples), runs=len(samples), used_cuda_graph=False, graph_note="no CUDA",
                  timer="wall-clock")
