"""DSA top-k decode traces: which cached tokens (and KV blocks) each decode step of each layer reads.

Pipeline: ``Indexer.trace_hook`` (mock/dsa.py, decode only) -> ``TopkTracer`` (maps batch rows to
request ids and positions to decode steps, copies the top-k to the host) -> ``TopkTraceWriter``
(bounded queue; a background thread builds the records, appends JSON lines to per-request-range
shards and keeps ``summary.json`` up to date) -> ``load_trace`` / ``recompute_summary`` /
``prefix_overlap`` for analysis.

Output folder::

    run_meta.json             constant metadata, written once (config, model dims, top-k, versions)
    topk_shard_{k:05d}.jsonl  one record per (request, layer, decode step); k = request_id // shard_size
    requests.jsonl            one line per request (lengths, shared prefix), as the runner registers them
    summary.json              {"stats": ..., "writer": ...}, rewritten atomically while the run goes on

Record fields (one JSON object per line): ``request_id``, ``layer``, ``step`` (0 = first decode
step), ``position`` (the decoded token's position), ``topk`` (sorted selected token positions the
attention actually reads: top-k entries beyond ``position``, which exist only while fewer than
``index_topk`` tokens are visible and which attention masks, are dropped and counted in
``n_masked``), ``n_selected``, optional ``scores`` (indexer scores aligned with ``topk``),
``blocks`` (sorted unique KV block ids ``pos // block_size``), ``tokens_per_block`` (aligned with
``blocks``), ``n_blocks``, ``offset_hist`` (selected tokens per quarter of their block, by
``pos % block_size``), ``offset_mean``, ``t_ns`` (wall clock when the hook captured the step) and
``write_ns`` (when the writer serialized it: the difference is the queue lag).

Environment (explicit ``TopkTraceConfig.from_env`` arguments win): ``ALIGN_TOPK_TRACE_DIR`` (output
folder; setting it enables tracing), ``ALIGN_TOPK_TRACE`` (0/1, enable), ``ALIGN_TOPK_TRACE_BLOCK_SIZE``,
``ALIGN_TOPK_TRACE_SHARD_SIZE``, ``ALIGN_TOPK_TRACE_SCORES`` (0/1), ``ALIGN_TOPK_TRACE_MAX_RECORDS``
(0 = unlimited), ``ALIGN_TOPK_TRACE_EVERY`` (record every k-th decode step), ``ALIGN_TOPK_TRACE_LAYERS``
(comma-separated layer indices), ``ALIGN_TOPK_TRACE_QUEUE`` (queue capacity, records),
``ALIGN_TOPK_TRACE_SUMMARY_S`` (seconds between summary rewrites).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import queue
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from align.files import WriteFailed, write_text

SCHEMA = "align.topk_trace/1"
ENV_PREFIX = "ALIGN_TOPK_TRACE"
OFFSET_BINS = 4
SHARD_GLOB = "topk_shard_*.jsonl"
RECORD_COLUMNS = ["request_id", "layer", "step", "position", "n_selected", "topk", "scores", "blocks",
                  "tokens_per_block", "n_blocks", "offset_hist", "offset_mean", "n_masked", "t_ns", "write_ns"]
# what the summary reads of each record, with its type
REQUIRED = {"request_id": int, "layer": int, "step": int, "position": int, "n_selected": int, "n_blocks": int,
            "offset_hist": list}
_MAX_OPEN_SHARDS = 64
_DRAIN_BATCH = 4096


def shard_name(shard: int) -> str:
    return f"topk_shard_{shard:05d}.jsonl"


# ---- configuration -------------------------------------------------------------------------------
@dataclass
class TopkTraceConfig:
    """What to trace and where. ``shard_size`` requests share one shard file (``request_id //
    shard_size``), so a request is never split across files however batches interleave."""

    out_dir: Path | None = None
    enabled: bool = True
    block_size: int = 64
    shard_size: int = 16
    record_scores: bool = False
    max_records: int | None = None
    sample_every: int = 1
    layers: tuple[int, ...] | None = None
    queue_size: int = 65536
    summary_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.out_dir is not None:
            self.out_dir = Path(self.out_dir)
        if self.layers is not None:
            self.layers = tuple(sorted({int(x) for x in self.layers}))
        if self.max_records is not None and self.max_records <= 0:
            self.max_records = None
        for name in ("block_size", "shard_size", "sample_every", "queue_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TopkTraceConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.summary_interval_s < 0:
            raise ValueError(f"summary_interval_s must be >= 0, got {self.summary_interval_s}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **explicit: Any) -> TopkTraceConfig:
        """Defaults, then ``ALIGN_TOPK_TRACE_*`` variables, then ``explicit`` arguments that are not None.

        Tracing is enabled when an output folder is known, unless ``ALIGN_TOPK_TRACE=0`` (or
        ``enabled=False``) says otherwise."""
        env = os.environ if env is None else env
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(explicit) - names
        if unknown:
            raise TypeError(f"unknown TopkTraceConfig fields {sorted(unknown)}")
        values: dict[str, Any] = {}
        parsers: dict[str, tuple[str, Any]] = {
            "out_dir": ("_DIR", Path), "enabled": ("", _parse_bool), "block_size": ("_BLOCK_SIZE", int),
            "shard_size": ("_SHARD_SIZE", int), "record_scores": ("_SCORES", _parse_bool),
            "max_records": ("_MAX_RECORDS", int), "sample_every": ("_EVERY", int),
            "layers": ("_LAYERS", _parse_layers), "queue_size": ("_QUEUE", int),
            "summary_interval_s": ("_SUMMARY_S", float),
        }
        for name, (suffix, parse) in parsers.items():
            raw = env.get(ENV_PREFIX + suffix)
            if raw not in (None, ""):
                try:
                    values[name] = parse(raw)
                except ValueError as exc:
                    raise ValueError(f"{ENV_PREFIX + suffix}={raw!r}: {exc}") from None
        values.update({k: v for k, v in explicit.items() if v is not None})
        values.setdefault("enabled", values.get("out_dir") is not None)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["out_dir"] = None if self.out_dir is None else str(self.out_dir)
        data["layers"] = None if self.layers is None else list(self.layers)
        return data


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 0/1, true/false, yes/no or on/off")


def _parse_layers(raw: str) -> tuple[int, ...]:
    return tuple(int(x) for x in raw.replace(" ", "").split(",") if x)


# ---- records -------------------------------------------------------------------------------------
def build_record(request_id: int, layer: int, step: int, position: int, topk: Any, block_size: int, *,
                 scores: Any = None, n_masked: int = 0, t_ns: int | None = None) -> dict[str, Any]:
    """One trace record from the selected positions of one (request, layer, step): sorted positions,
    their KV blocks and where inside the blocks they fall. Pure, so tests can rebuild records."""
    pos = np.asarray(topk, dtype=np.int64).reshape(-1)
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    blocks, per_block = np.unique(pos // block_size, return_counts=True)
    offsets = pos % block_size
    hist = np.bincount(offsets * OFFSET_BINS // block_size, minlength=OFFSET_BINS)
    rec: dict[str, Any] = {
        "request_id": int(request_id), "layer": int(layer), "step": int(step), "position": int(position),
        "n_selected": int(pos.size), "topk": pos.tolist(),
    }
    if scores is not None:
        vals = np.asarray(scores, dtype=np.float64).reshape(-1)[order]
        rec["scores"] = [float(v) if np.isfinite(v) else None for v in vals]
    rec.update({
        "blocks": blocks.tolist(), "tokens_per_block": per_block.tolist(), "n_blocks": int(blocks.size),
        "offset_hist": hist.tolist(), "offset_mean": float(offsets.mean()) if pos.size else 0.0,
        "n_masked": int(n_masked), "t_ns": int(time.time_ns() if t_ns is None else t_ns),
    })
    return rec


class _Stats:
    """Online aggregates of written records; ``recompute_summary`` derives the same dict from a trace.

    Only integer sums are kept, and means are taken from them at the end, so the online and the
    recomputed values are bit-identical."""

    def __init__(self) -> None:
        self.layers: dict[int, dict[str, Any]] = {}
        self.requests: dict[int, dict[str, Any]] = {}
        self.blocks_hist: Counter[int] = Counter()

    def add(self, rec: Mapping[str, Any]) -> None:
        layer = self.layers.setdefault(rec["layer"], {"records": 0, "selected": 0, "unique_blocks": 0,
                                                      "max_unique_blocks": 0, "offset_hist": [0] * OFFSET_BINS})
        layer["records"] += 1
        layer["selected"] += rec["n_selected"]
        layer["unique_blocks"] += rec["n_blocks"]
        layer["max_unique_blocks"] = max(layer["max_unique_blocks"], rec["n_blocks"])
        layer["offset_hist"] = [a + b for a, b in zip(layer["offset_hist"], rec["offset_hist"], strict=True)]
        req = self.requests.get(rec["request_id"])
        if req is None:
            req = self.requests[rec["request_id"]] = {"records": 0, "layers": set(), "first_step": rec["step"],
                                                      "last_step": rec["step"], "max_position": rec["position"],
                                                      "selected": 0, "unique_blocks": 0}
        req["records"] += 1
        req["layers"].add(rec["layer"])
        req["first_step"] = min(req["first_step"], rec["step"])
        req["last_step"] = max(req["last_step"], rec["step"])
        req["max_position"] = max(req["max_position"], rec["position"])
        req["selected"] += rec["n_selected"]
        req["unique_blocks"] += rec["n_blocks"]
        self.blocks_hist[rec["n_blocks"]] += 1

    def to_dict(self) -> dict[str, Any]:
        per_layer = {}
        for k in sorted(self.layers):
            v = self.layers[k]
            per_layer[str(k)] = {**v, "mean_unique_blocks": _ratio(v["unique_blocks"], v["records"]),
                                 "mean_tokens_per_block": _ratio(v["selected"], v["unique_blocks"])}
        per_request = {}
        for k in sorted(self.requests):
            v = self.requests[k]
            per_request[str(k)] = {**v, "layers": sorted(v["layers"]),
                                   "mean_unique_blocks": _ratio(v["unique_blocks"], v["records"])}
        records = sum(v["records"] for v in self.layers.values())
        selected = sum(v["selected"] for v in self.layers.values())
        unique = sum(v["unique_blocks"] for v in self.layers.values())
        offsets = [sum(v["offset_hist"][i] for v in self.layers.values()) for i in range(OFFSET_BINS)]
        return {
            "records": records, "requests": len(self.requests), "selected": selected, "unique_blocks": unique,
            "mean_unique_blocks": _ratio(unique, records), "mean_tokens_per_block": _ratio(selected, unique),
            "offset_hist": offsets,
            "unique_blocks_hist": {str(n): self.blocks_hist[n] for n in sorted(self.blocks_hist)},
            "per_layer": per_layer, "per_request": per_request,
        }


def _ratio(num: int, den: int) -> float:
    return int(num) / int(den) if den else 0.0


# ---- files ---------------------------------------------------------------------------------------
def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON next to ``path`` and rename it over ``path``: readers see the old or the new file, never half."""
    write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def _open_append(path: Path) -> int:
    """Open for appending; a torn last line left by a killed writer is cut first, so new lines
    never glue onto it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    end = size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        while end > 0:
            start = max(0, end - (1 << 16))
            cut = os.pread(fd, end - start, start).rfind(b"\n")
            if cut >= 0:
                end = start + cut + 1
                break
            end = start
        os.ftruncate(fd, end)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    def dist(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    torch = sys.modules.get("torch")
    return {"python": platform.python_version(), "align": dist("align"), "numpy": np.__version__,
            "pandas": pd.__version__, "torch": getattr(torch, "__version__", None) if torch else dist("torch")}


# ---- writer --------------------------------------------------------------------------------------
_STOP = object()


class TopkTraceWriter:
    """Asynchronous, sharded JSONL writer. ``record`` only enqueues; a background thread does the rest.

    Queue policy: bounded (``config.queue_size`` items); when full, ``record`` drops the item and
    counts it (``summary.json`` -> ``writer.dropped``, per request in ``writer.dropped_by_request``),
    it never waits, so a slow disk can not stall a decode step (or, on several ranks, a collective).
    Crash safety: each batch of complete lines goes to a shard in ``os.write`` calls on an
    ``O_APPEND`` descriptor, with no user-space buffer that could flush half a line. A kill can at
    most tear the last line inside a write; ``load_trace`` ignores (and counts) a trailing piece
    without its newline and a reopening writer cuts it. ``close`` (or leaving a ``with`` block)
    writes what is queued and fsyncs every file; without it, queued items are lost at exit, but
    the files stay valid.
    """

    def __init__(self, config: TopkTraceConfig, meta: Mapping[str, Any] | None = None, *,
                 autostart: bool = True) -> None:
        if config.out_dir is None:
            raise ValueError("TopkTraceConfig.out_dir is needed to write a trace")
        self.config = config
        self.out_dir = Path(config.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=config.queue_size)
        self._lock = threading.Lock()
        self._enqueued: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._dropped_by_request: Counter[int] = Counter()
        self._notes: Counter[str] = Counter()
        self._written = 0
        self._errors = 0
        self._last_error: str | None = None
        self._stats = _Stats()
        self._stats_lock = threading.Lock()
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._requests_fd: int | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="topk-trace-writer", daemon=True)
        self._started = False
        self.meta = {"schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                     "config": config.to_dict(), "block_size": config.block_size,
                     "shard_size": config.shard_size, "offset_bins": OFFSET_BINS,
                     "versions": _versions(), **(dict(meta) if meta else {})}
        atomic_write_json(self.out_dir / "run_meta.json", self.meta)
        self._write_summary()
        if autostart:
            self.start()

    # producer side: never blocks
    def record(self, request_id: int, layer: int, step: int, position: int, topk: Any, *, scores: Any = None,
               n_masked: int = 0, t_ns: int | None = None) -> bool:
        """Enqueue one (request, layer, step) selection; ``topk`` is a host sequence/array. Returns
        False when the item was dropped (queue full, or writer closed)."""
        item = ("rec", (int(request_id), int(layer), int(step), int(position), topk, scores, int(n_masked),
                        time.time_ns() if t_ns is None else int(t_ns)))
        return self._offer(item, int(request_id), "records")

    def add_request(self, request_id: int, **info: Any) -> bool:
        """Enqueue one line of ``requests.jsonl`` (the request's lengths, shared prefix, ...)."""
        return self._offer(("req", {"request_id": int(request_id), **info}), int(request_id), "requests")

    def note(self, name: str, n: int = 1) -> None:
        """Count a producer-side event (records skipped by sampling, say); shown under ``writer.notes``."""
        with self._lock:
            self._notes[name] += n

    def _offer(self, item: tuple[str, Any], request_id: int, what: str) -> bool:
        if not self._closed:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                pass
            else:
                with self._lock:
                    self._enqueued[what] += 1
                return True
        with self._lock:
            self._dropped[what] += 1
            if what == "records":
                self._dropped_by_request[request_id] += 1
        return False

    @property
    def dropped(self) -> int:
        """Records dropped because the queue was full (or the writer closed)."""
        return self._dropped["records"]

    @property
    def written(self) -> int:
        return self._written

    # consumer side
    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def _run(self) -> None:
        last_summary = time.monotonic()
        stop = False
        while not stop:
            try:
                batch = [self._queue.get(timeout=0.05)]
            except queue.Empty:
                batch = []
            while batch and len(batch) < _DRAIN_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            self._consume([item for item in batch if item is not _STOP])
            now = time.monotonic()
            if batch and (stop or now - last_summary >= self.config.summary_interval_s):
                self._write_summary()
                last_summary = now

    def _consume(self, items: Sequence[tuple[str, Any]]) -> None:
        """Build the records, then append each shard's lines in one go, then count them as written."""
        by_shard: dict[int, list[tuple[dict[str, Any], bytes]]] = {}
        request_lines: list[bytes] = []
        for kind, payload in items:
            try:
                if kind == "rec":
                    rid, layer, step, position, topk, scores, n_masked, t_ns = payload
                    rec = build_record(rid, layer, step, position, topk, self.config.block_size, scores=scores,
                                       n_masked=n_masked, t_ns=t_ns)
                    rec["write_ns"] = time.time_ns()
                    by_shard.setdefault(rid // self.config.shard_size, []).append((rec, _dumps(rec)))
                else:
                    request_lines.append(_dumps(payload))
            except Exception as exc:  # a bad item must not stop the trace: count it and go on
                self._error(exc)
        for shard, recs in by_shard.items():
            try:
                _write_all(self._shard_fd(shard), b"".join(line for _, line in recs))
            except OSError as exc:
                self._error(exc)
                continue
            with self._stats_lock:
                for rec, _ in recs:
                    self._stats.add(rec)
                self._written += len(recs)
        if request_lines:
            try:
                if self._requests_fd is None:
                    self._requests_fd = _open_append(self.out_dir / "requests.jsonl")
                _write_all(self._requests_fd, b"".join(request_lines))
            except OSError as exc:
                self._error(exc)

    def _error(self, exc: BaseException) -> None:
        self._errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}"[:300]

    def _shard_fd(self, shard: int) -> int:
        fd = self._fds.get(shard)
        if fd is None:
            if len(self._fds) >= _MAX_OPEN_SHARDS:
                _, old = self._fds.popitem(last=False)
                os.fsync(old)
                os.close(old)
            fd = self._fds[shard] = _open_append(self.out_dir / shard_name(shard))
        else:
            self._fds.move_to_end(shard)
        return fd

    def summary(self) -> dict[str, Any]:
        """The current ``summary.json`` content: ``stats`` (from written records) and ``writer`` counters."""
        with self._lock:
            writer = {"enqueued": self._enqueued["records"], "dropped": self._dropped["records"],
                      "requests_enqueued": self._enqueued["requests"], "requests_dropped": self._dropped["requests"],
                      "dropped_by_request": {str(k): v for k, v in sorted(self._dropped_by_request.items())},
                      "notes": dict(sorted(self._notes.items()))}
        with self._stats_lock:
            stats = self._stats.to_dict()
            written = self._written
        writer.update({"written": written, "errors": self._errors, "last_error": self._last_error,
                       "queue_size": self.config.queue_size, "closed": self._closed,
                       "updated": _dt.datetime.now(_dt.timezone.utc).isoformat()})
        return {"schema": SCHEMA, "block_size": self.config.block_size, "stats": stats, "writer": writer}

    def _write_summary(self) -> None:
        try:
            atomic_write_json(self.out_dir / "summary.json", self.summary())
        except (OSError, WriteFailed) as exc:
            self._error(exc)

    def close(self) -> dict[str, Any]:
        """Stop accepting items, write what is queued, fsync and close every file; returns the final summary."""
        if self._closed:
            return self.summary()
        self._closed = True
        self.start()
        self._queue.put(_STOP)
        self._thread.join()
        leftovers = []
        while True:
            try:
                leftovers.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self._consume([item for item in leftovers if item is not _STOP])
        for fd in [*self._fds.values(), *([self._requests_fd] if self._requests_fd is not None else [])]:
            os.fsync(fd)
            os.close(fd)
        self._fds.clear()
        self._requests_fd = None
        final = self.summary()
        atomic_write_json(self.out_dir / "summary.json", final)
        return final

    def __enter__(self) -> TopkTraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n").encode()


# ---- tracer: the hook the indexer calls ----------------------------------------------------------
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

    def begin_batch(self, request_ids: Sequence[int], start_pos: int, steps: Sequence[int] | int) -> None:
        """Row ``i`` of the next decode steps is request ``request_ids[i]``; the step at ``start_pos``
        is its step 0; rows stop being recorded after ``steps[i]`` steps."""
        self._request_ids = [int(r) for r in request_ids]
        counts = [int(steps)] * len(self._request_ids) if isinstance(steps, int) else [int(s) for s in steps]
        if len(counts) != len(self._request_ids):
            raise ValueError(f"{len(counts)} step counts for {len(self._request_ids)} requests")
        self._steps = counts
        self._start = int(start_pos)

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
        values = scores[:, -1].gather(-1, chosen) if cfg.record_scores else None
        batch = (list(self._request_ids), list(self._steps), self._start)
        if getattr(chosen, "is_cuda", False):
            self._defer(layer, start_pos, chosen, values, batch)
            return
        position = int(start_pos.reshape(-1)[0]) if hasattr(start_pos, "reshape") else int(start_pos)
        self._resolve(layer, position, _numpy(chosen), None if values is None else _numpy(values.float()), batch,
                      time.time_ns())

    def _defer(self, layer: int, start_pos: Any, chosen: Any, values: Any, batch: tuple) -> None:
        import torch

        def to_host(t: Any) -> Any:
            host = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
            return host.copy_(t, non_blocking=True)

        pos = to_host(start_pos.reshape(-1)[:1]) if hasattr(start_pos, "reshape") else int(start_pos)
        item = (layer, pos, to_host(chosen), None if values is None else to_host(values.float()), batch,
                time.time_ns())
        event = torch.cuda.Event()
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
                self._resolve(layer, position, chosen.numpy(), None if values is None else values.numpy(), batch, t_ns)
            except Exception as exc:  # a bad item must not stop the trace
                self.writer._error(exc)

    def _resolve(self, layer: int, position: int, picked: np.ndarray, values: np.ndarray | None, batch: tuple,
                 t_ns: int) -> None:
        """Host-side rows of one hook call -> writer records (sampling, step limits, max_records)."""
        cfg = self.config
        request_ids, steps, start = batch
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
                               n_masked=int(keep.size - keep.sum()), t_ns=t_ns)
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


# ---- reader --------------------------------------------------------------------------------------
def read_jsonl(path: Path, bad: list[str] | None = None,
               required: Mapping[str, type] | None = None) -> tuple[list[dict[str, Any]], int]:
    """Complete lines of a JSONL file and the number of torn trailing pieces (0 or 1) left out.

    A line without its newline can only be the last one, torn by a kill inside a write. Any other
    line that is not a JSON object with the ``required`` keys (of their types) is corruption: it raises, or, given a
    ``bad`` list, is left out and its ``file:line`` appended there, so one damaged line costs one
    record, not the trace."""
    data = Path(path).read_bytes()
    parts = data.split(b"\n")
    torn = 1 if parts[-1] else 0
    out = []
    for i, raw in enumerate(parts[:-1], 1):
        if not raw:
            continue
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
            wrong = [k for k, t in (required or {}).items()
                     if not isinstance(rec.get(k), t) or isinstance(rec.get(k), bool)]
            if wrong:
                raise ValueError(f"missing or mistyped {', '.join(wrong)}")
        except (ValueError, UnicodeDecodeError) as exc:
            if bad is None:
                raise ValueError(f"{path}:{i}: not a record ({exc})") from None
            bad.append(f"{path}:{i}")
            continue
        out.append(rec)
    return out, torn


def load_trace(directory: str | Path) -> pd.DataFrame:
    """Every record of every shard, one row per (request, layer, step), NOT exploded: ``topk``,
    ``blocks``, ``tokens_per_block``, ``offset_hist`` (and ``scores``) hold lists; use
    ``df.explode("topk")`` for one row per selected token. Rows keep file order (shards in order,
    production order inside); column ``shard`` names the file; ``df.attrs["torn_lines"]`` counts
    torn trailing lines that were ignored, ``df.attrs["bad_lines"]`` lists (``file:line``) the
    damaged lines left out."""
    directory = Path(directory)
    rows: list[dict[str, Any]] = []
    torn, bad = 0, []
    for path in sorted(directory.glob(SHARD_GLOB)):
        shard = int(path.stem.rsplit("_", 1)[1])
        recs, cut = read_jsonl(path, bad, REQUIRED)
        torn += cut
        hist_ok = [len(r["offset_hist"]) == OFFSET_BINS and all(type(x) is int for x in r["offset_hist"])
                   for r in recs]
        bad += [f"{path}: record {i + 1} (offset_hist)" for i, ok in enumerate(hist_ok) if not ok]
        recs = [r for r, ok in zip(recs, hist_ok) if ok]
        rows.extend({**r, "shard": shard} for r in recs)
    columns = RECORD_COLUMNS + ["shard"]
    df = pd.DataFrame(rows)
    for col in columns:
        if col not in df.columns:
            df[col] = pd.Series(dtype="object")
    df = df[columns + [c for c in df.columns if c not in columns]]
    df.attrs["torn_lines"] = torn
    df.attrs["bad_lines"] = bad
    return df


def load_requests(directory: str | Path) -> pd.DataFrame:
    """``requests.jsonl`` as a frame (empty when the run registered no requests)."""
    path = Path(directory) / "requests.jsonl"
    recs = read_jsonl(path, [], {"request_id": int})[0] if path.exists() else []
    return pd.DataFrame(recs, columns=None if recs else ["request_id"])


def load_meta(directory: str | Path) -> dict[str, Any]:
    """``run_meta.json``; damaged or without a block size it is one line, not a traceback."""
    from align.errors import AlignError

    path = Path(directory) / "run_meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AlignError(f"cannot read {path}: {str(exc).splitlines()[0][:200]}",
                         "it is written at the start of align trace topk run; run it again") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("block_size"), int) or meta["block_size"] < 1:
        raise AlignError(f"{path} is not a trace's run_meta.json (no positive integer block_size)",
                         "give a folder written by align trace topk run")
    return meta


def load_summary(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / "summary.json").read_text())


def recompute_summary(df: pd.DataFrame) -> dict[str, Any]:
    """The ``stats`` part of ``summary.json``, computed again from the records (pandas, not the
    online accumulator), so a test can check the online summary against the files."""
    if df.empty:
        return _Stats().to_dict()
    per_layer: dict[str, Any] = {}
    for layer, g in df.groupby("layer", sort=True):
        records, selected, unique = len(g), int(g["n_selected"].sum()), int(g["n_blocks"].sum())
        per_layer[str(int(layer))] = {
            "records": records, "selected": selected, "unique_blocks": unique,
            "max_unique_blocks": int(g["n_blocks"].max()), "offset_hist": _sum_lists(g["offset_hist"]),
            "mean_unique_blocks": _ratio(unique, records), "mean_tokens_per_block": _ratio(selected, unique),
        }
    per_request: dict[str, Any] = {}
    for rid, g in df.groupby("request_id", sort=True):
        records, unique = len(g), int(g["n_blocks"].sum())
        per_request[str(int(rid))] = {
            "records": records, "layers": sorted(int(x) for x in g["layer"].unique()),
            "first_step": int(g["step"].min()), "last_step": int(g["step"].max()),
            "max_position": int(g["position"].max()), "selected": int(g["n_selected"].sum()),
            "unique_blocks": unique, "mean_unique_blocks": _ratio(unique, records),
        }
    records, selected, unique = len(df), int(df["n_selected"].sum()), int(df["n_blocks"].sum())
    hist = df["n_blocks"].astype(int).value_counts()
    return {
        "records": records, "requests": int(df["request_id"].nunique()), "selected": selected,
        "unique_blocks": unique, "mean_unique_blocks": _ratio(unique, records),
        "mean_tokens_per_block": _ratio(selected, unique), "offset_hist": _sum_lists(df["offset_hist"]),
        "unique_blocks_hist": {str(int(n)): int(hist[n]) for n in sorted(hist.index)},
        "per_layer": per_layer, "per_request": per_request,
    }


def _sum_lists(col: pd.Series) -> list[int]:
    return [int(x) for x in np.sum(np.array(col.tolist(), dtype=np.int64), axis=0)]


# ---- prefix analysis -----------------------------------------------------------------------------
def block_hashes(tokens: Sequence[int] | np.ndarray, block_size: int) -> list[bytes]:
    """Chained hashes of the complete blocks of a token sequence: block i's hash covers tokens
    ``[0, (i + 1) * block_size)``, as a paged prefix cache keys its blocks."""
    arr = np.asarray(tokens, dtype=np.int64)
    out, prev = [], b""
    for i in range(arr.size // block_size):
        prev = hashlib.blake2b(prev + arr[i * block_size:(i + 1) * block_size].tobytes(), digest_size=16).digest()
        out.append(prev)
    return out


@dataclass
class PrefixIndex:
    """Which leading blocks of a new request an earlier request already holds (complete blocks
    only: a prefix cache shares whole KV blocks, so a shared tail shorter than a block is not reused)."""

    block_size: int
    _seen: set[bytes] = field(default_factory=set, repr=False)

    def add(self, tokens: Sequence[int] | np.ndarray) -> int:
        """Shared leading blocks of ``tokens`` with the requests added before; then remember its blocks."""
        hashes = block_hashes(tokens, self.block_size)
        shared = 0
        while shared < len(hashes) and hashes[shared] in self._seen:
            shared += 1
        self._seen.update(hashes)
        return shared


def prefix_overlap(df: pd.DataFrame, shared_prefix_tokens: Mapping[int, int], block_size: int, *,
                   by_layer: bool = False) -> pd.DataFrame:
    """Per request (and layer, with ``by_layer``): how much of what its decode reads lies in the
    prefix it shares with earlier requests.

    ``shared_prefix_tokens[r]``: tokens of request r shared with earlier requests; its shared
    blocks are the complete ones, ``[0, P_r // block_size)``. Columns: ``shared_blocks``,
    ``touched_blocks`` (distinct blocks read over all its records), ``touched_shared`` (those in
    the shared prefix), ``frac_touched_shared`` = touched_shared / touched_blocks,
    ``frac_shared_read`` = touched_shared / shared_blocks (NaN without a shared prefix), and
    per-record means ``mean_frac_blocks_shared`` (share of a step's blocks in the prefix) and
    ``mean_frac_tokens_shared`` (share of a step's selected tokens in the prefix)."""
    keys = ["request_id", "layer"] if by_layer else ["request_id"]
    columns = keys + ["records", "shared_prefix_tokens", "shared_blocks", "touched_blocks", "touched_shared",
                      "frac_touched_shared", "frac_shared_read", "mean_frac_blocks_shared",
                      "mean_frac_tokens_shared"]
    rows = []
    if not df.empty:
        for key, g in df.groupby(keys, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            rid = int(key[0])
            prefix = int(shared_prefix_tokens.get(rid, 0))
            shared = prefix // block_size
            touched = set().union(*(set(b) for b in g["blocks"]))
            hit = sum(1 for b in touched if b < shared)
            frac_blocks = [sum(1 for b in bl if b < shared) / len(bl) if bl else 0.0 for bl in g["blocks"]]
            frac_tokens = [sum(1 for t in tk if t < shared * block_size) / len(tk) if tk else 0.0 for tk in g["topk"]]
            rows.append([*(int(k) for k in key), len(g), prefix, shared, len(touched), hit,
                         hit / len(touched) if touched else 0.0, hit / shared if shared else float("nan"),
                         float(np.mean(frac_blocks)), float(np.mean(frac_tokens))])
    return pd.DataFrame(rows, columns=columns)


def shared_prefix_map(requests: pd.DataFrame) -> dict[int, int]:
    """``request_id -> shared_prefix_tokens`` from ``load_requests`` (0 where unknown)."""
    if requests.empty or "shared_prefix_tokens" not in requests.columns:
        return {}
    return {int(r): int(p) for r, p in zip(requests["request_id"], requests["shared_prefix_tokens"].fillna(0))}


def summary_tables(directory: str | Path) -> dict[str, pd.DataFrame]:
    """The tables ``align trace topk summary`` prints: ``layers`` (block statistics per layer),
    ``requests`` (per request, joined with its prefix overlap) and ``overall``."""
    directory = Path(directory)
    df = load_trace(directory)
    meta = load_meta(directory)
    block_size = int(meta["block_size"])
    stats = recompute_summary(df)
    layers = pd.DataFrame([{"layer": int(k), **{c: v[c] for c in ("records", "selected", "unique_blocks",
                                                                   "mean_unique_blocks", "max_unique_blocks",
                                                                   "mean_tokens_per_block")},
                            **{f"offset_q{i}": v["offset_hist"][i] for i in range(OFFSET_BINS)}}
                           for k, v in stats["per_layer"].items()])
    reqs = load_requests(directory)
    per_req = pd.DataFrame([{"request_id": int(k), **{c: v[c] for c in ("records", "first_step", "last_step",
                                                                         "max_position", "mean_unique_blocks")}}
                            for k, v in stats["per_request"].items()])
    overlap = prefix_overlap(df, shared_prefix_map(reqs), block_size)
    if not per_req.empty:
        per_req = per_req.merge(overlap.drop(columns=["records"]), on="request_id", how="left")
        keep = [c for c in ("request_id", "kind", "prompt_len", "output_len") if c in reqs.columns]
        if len(keep) > 1:
            per_req = reqs[keep].merge(per_req, on="request_id", how="right")
    with_prefix = overlap[overlap["shared_blocks"] > 0] if not overlap.empty else overlap
    try:
        written = load_summary(directory).get("writer") or {}
    except (OSError, ValueError, AttributeError):
        written = {}  # the writer's own counters are optional: the records are the trace
    overall = pd.DataFrame([{
        "records": stats["records"], "requests": stats["requests"], "layers": len(stats["per_layer"]),
        "block_size": block_size, "top_k": meta.get("model", {}).get("index_topk"),
        "mean_unique_blocks": stats["mean_unique_blocks"], "mean_tokens_per_block": stats["mean_tokens_per_block"],
        "requests_with_prefix": len(with_prefix),
        "mean_frac_touched_shared": float(with_prefix["frac_touched_shared"].mean()) if len(with_prefix) else None,
        "mean_frac_shared_read": float(with_prefix["frac_shared_read"].mean()) if len(with_prefix) else None,
        "dropped": written.get("dropped"), "torn_lines": df.attrs.get("torn_lines", 0),
        "bad_lines": len(df.attrs.get("bad_lines", [])),
    }])
    overall.attrs["bad_lines"] = df.attrs.get("bad_lines", [])
    return {"overall": overall, "layers": layers, "requests": per_req}
