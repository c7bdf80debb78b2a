"""The writer thread: a bounded queue (a full one drops and counts, never blocks the model), JSON-line shards, summary.json kept current."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import queue
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from align.files import WriteFailed, write_text
from align.trace.topk.config import OFFSET_BINS, SCHEMA, TopkTraceConfig, shard_name
from align.trace.topk.config import SEED_NAMES
from align.trace.topk.records import RunningStats, build_record


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
_MAX_OPEN_SHARDS = 64
_DRAIN_BATCH = 4096


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
        self._stats = RunningStats()
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
        if config.names == "seed":  # the seed's names in the records: align's -> written
            self.meta["record_names"] = dict(SEED_NAMES)
        atomic_write_json(self.out_dir / "run_meta.json", self.meta)
        self._write_summary()
        if autostart:
            self.start()

    # producer side: never blocks
    def record(self, request_id: int, layer: int, step: int, position: int, topk: Any, *, scores: Any = None,
               n_masked: int = 0, t_ns: int | None = None, step_ns: int | None = None) -> bool:
        """Enqueue one (request, layer, step) selection; ``topk`` is a host sequence/array; ``step_ns``
        the decode step's wall time where known. Returns False when the item was dropped (queue full,
        or writer closed)."""
        item = ("rec", (int(request_id), int(layer), int(step), int(position), topk, scores, int(n_masked),
                        time.time_ns() if t_ns is None else int(t_ns), step_ns))
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
                    rid, layer, step, position, topk, scores, n_masked, t_ns, step_ns = payload
                    rec = build_record(rid, layer, step, position, topk, self.config.block_size, scores=scores,
                                       n_masked=n_masked, t_ns=t_ns, step_ns=step_ns)
                    rec["write_ns"] = time.time_ns()
                    line = _dumps(rec if self.config.names == "align" else
                                  {SEED_NAMES.get(k, k): v for k, v in rec.items()})
                    by_shard.setdefault(rid // self.config.shard_size, []).append((rec, line))
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
