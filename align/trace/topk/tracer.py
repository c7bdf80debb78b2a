"""The hook the indexer calls: batch rows to request ids, positions to decode steps, the top-k copied to the host."""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from align.trace.topk.config import TopkTraceConfig
from align.trace.topk.writer import TopkTraceWriter


_STOP = object()  # ends the resolver thread


class TopkTracer:
    """The ``Indexer.trace_hook``: turns decode-step top-k tensors into writer records.

    The indexer knows batch rows and positions, not requests: ``begin_batch`` says which request
    each row holds, the position of its first decode step and how many steps to record.

    The hook never waits for the device. On CUDA it starts non-blocking copies of the top-k (the
    scores, the position) into pinned host memory, records an event and hands both to a resolver
    thread, which waits for the event and then passes the rows to the writer; the decode step goes
    on at once. (A bounded hand-off: when ``config.queue_size`` copies are pending, the step is
    dropped and counted as ``dropped_pending``.) On the CPU the hook resolves in place. Tracing is
    for an eager decode (``DecodeLoop(..., use_cuda_graph=False)``): a captured graph's replays
    never call Python, and a call during capture is skipped and counted (``skipped_capture``).
    """

    def __init__(self, config: TopkTraceConfig, meta: Mapping[str, Any] | None = None,
                 writer: TopkTraceWriter | None = None) -> None:
        self.config = config
        self.writer = writer if writer is not None else TopkTraceWriter(config, meta)
        self._request_ids: list[int] = []
        self._steps: list[int] = []
        self._start = 0
        self._accepted = 0
        self._pending: queue.Queue[Any] = queue.Queue(maxsize=config.queue_size)
        self._resolver: threading.Thread | None = None
        # per layer, the previous decode step's (batch, position, time or CUDA event): step_ns
        self._batch_no = 0
        self._last: dict[int, tuple[int, int, Any]] = {}

    def begin_batch(self, request_ids: Sequence[int], start_pos: int, steps: Sequence[int] | int) -> None:
        """Row ``i`` of the next decode steps is request ``request_ids[i]``; the step at ``start_pos``
        is its step 0; rows stop being recorded after ``steps[i]`` steps."""
        self._request_ids = [int(r) for r in request_ids]
        counts = [int(steps)] * len(self._request_ids) if isinstance(steps, int) else [int(s) for s in steps]
        if len(counts) != len(self._request_ids):
            raise ValueError(f"{len(counts)} step counts for {len(self._request_ids)} requests")
        self._steps = counts
        self._start = int(start_pos)
        self._batch_no += 1

    def finish_row(self, row: int, steps: int) -> None:
        """Row ``row`` ended after ``steps`` decode steps (it emitted EOS): later steps of it are not
        recorded, though the engine may go on computing the row until the whole batch ends."""
        self._steps[row] = min(self._steps[row], int(steps))

    def end_batch(self) -> None:
        self._request_ids, self._steps = [], []

    def add_request(self, request_id: int, **info: Any) -> None:
        self.writer.add_request(request_id, **info)

    def __call__(self, layer_idx: int | None, start_pos: Any, topk_indices: Any, scores: Any) -> None:
        cfg = self.config
        if not cfg.enabled or not self._request_ids:
            return
        if _capturing():
            self.writer.note("skipped_capture")
            return
        layer = -1 if layer_idx is None else int(layer_idx)
        if cfg.layers is not None and layer not in cfg.layers:
            return
        chosen = topk_indices[:, -1]
        # an engine's indexer may hand over its indices only (align.trace.topk.engines): no scores
        values = scores[:, -1].gather(-1, chosen) if cfg.record_scores and scores is not None else None
        batch = (list(self._request_ids), list(self._steps), self._start, self._batch_no)
        if getattr(chosen, "is_cuda", False):
            self._defer(layer, start_pos, chosen, values, batch)
            return
        position = int(start_pos.reshape(-1)[0]) if hasattr(start_pos, "reshape") else int(start_pos)
        t_ns = time.time_ns()
        step_ns = self._step_ns(layer, batch[3], position, t_ns, lambda prev: t_ns - prev)
        self._resolve(layer, position, _numpy(chosen), None if values is None else _numpy(values.float()), batch,
                      t_ns, step_ns)

    def _step_ns(self, layer: int, batch_no: int, position: int, now: Any, since) -> int | None:
        """Wall time of one decode step as this layer sees it: from its call at the previous position of
        the same batch to this one (host clock on the CPU, CUDA events on the GPU); None for a first step."""
        prev = self._last.get(layer)
        self._last[layer] = (batch_no, position, now)
        if prev is None or prev[0] != batch_no or prev[1] != position - 1:
            return None
        return int(since(prev[2]))

    def _defer(self, layer: int, start_pos: Any, chosen: Any, values: Any, batch: tuple) -> None:
        import torch

        def to_host(t: Any) -> Any:
            host = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
            return host.copy_(t, non_blocking=True)

        pos = to_host(start_pos.reshape(-1)[:1]) if hasattr(start_pos, "reshape") else int(start_pos)
        item = (layer, pos, to_host(chosen), None if values is None else to_host(values.float()), batch,
                time.time_ns())
        event = torch.cuda.Event(enable_timing=True)  # also times the decode step (step_ns)
        event.record()
        if self._resolver is None:
            self._resolver = threading.Thread(target=self._resolve_loop, name="topk-trace-resolver", daemon=True)
            self._resolver.start()
        try:
            self._pending.put_nowait((event, item))
        except queue.Full:
            self.writer.note("dropped_pending")

    def _resolve_loop(self) -> None:
        while True:
            entry = self._pending.get()
            if entry is _STOP:
                return
            event, (layer, pos, chosen, values, batch, t_ns) = entry
            try:
                event.synchronize()  # releases the GIL: the decode thread keeps launching
                position = pos if isinstance(pos, int) else int(pos[0])
                step_ns = self._step_ns(layer, batch[3], position, event,
                                        lambda prev: prev.elapsed_time(event) * 1e6)  # ms -> ns
                self._resolve(layer, position, chosen.numpy(), None if values is None else values.numpy(), batch, t_ns,
                              step_ns)
            except Exception as exc:  # a bad item must not stop the trace
                self.writer._error(exc)

    def _resolve(self, layer: int, position: int, picked: np.ndarray, values: np.ndarray | None, batch: tuple,
                 t_ns: int, step_ns: int | None = None) -> None:
        """Host-side rows of one hook call -> writer records (sampling, step limits, max_records)."""
        cfg = self.config
        request_ids, steps, start, _ = batch
        step = position - start
        if step < 0 or step % cfg.sample_every:
            return
        for r in range(min(len(request_ids), picked.shape[0])):
            if step >= steps[r]:
                continue
            if cfg.max_records is not None and self._accepted >= cfg.max_records:
                self.writer.note("skipped_max_records")
                continue
            keep = picked[r] <= position
            self.writer.record(request_ids[r], layer, step, position, picked[r][keep],
                               scores=None if values is None else values[r][keep],
                               n_masked=int(keep.size - keep.sum()), t_ns=t_ns, step_ns=step_ns)
            self._accepted += 1

    @contextlib.contextmanager
    def attach(self, model: Any) -> Iterator[TopkTracer]:
        """Install this tracer on every DSA indexer of ``model.layers`` and number them by their
        decoder layer (the indexer itself has no layer index); both are undone on exit."""
        installed = []
        for layer in model.layers:
            indexer = getattr(layer.self_attn, "indexer", None)
            if indexer is None:
                continue
            saved = {k: indexer.__dict__[k] for k in ("trace_hook", "layer_idx") if k in indexer.__dict__}
            indexer.layer_idx = int(layer.layer_idx)
            indexer.trace_hook = self
            installed.append((indexer, saved))
        try:
            yield self
        finally:
            for indexer, saved in installed:
                for k in ("trace_hook", "layer_idx"):
                    indexer.__dict__.pop(k, None)
                    if k in saved:
                        setattr(indexer, k, saved[k])

    def close(self) -> dict[str, Any]:
        """Resolve every pending copy, then close the writer (its final summary)."""
        if self._resolver is not None:
            self._pending.put(_STOP)
            self._resolver.join()
            self._resolver = None
        return self.writer.close()


def _numpy(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def _capturing() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())
