"""Perf files: the seed's ``*_perf.txt`` (CSV, header written once) appended by several worker
processes, and the parquet + ``collection_meta.yaml`` layout aiconfigurator 0.12 loads.

Every change of a perf file happens under ``flock`` on the file itself: the kernel drops the lock
when its holder dies, so a killed worker blocks nobody and leaves no lock file behind. A writer
waits for the lock in a blocking ``flock`` (woken by the kernel, no polling), for at most
``LOCK_WAIT_S``. A row is one ``write`` on an ``O_APPEND`` descriptor, fsynced; a write cut short
(a full disk) is truncated away before the lock is dropped, and a line torn by a kill is cut by
:func:`repair` on resume. On NFS,
Linux maps ``flock`` to NFS byte-range locks (lockd or NFSv4); appends from several hosts then rely
on NFS's close-to-open consistency: keep a collection's folder on a local disk, or one writer host
per folder.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import fcntl
import io
import os
import threading
from pathlib import Path
from typing import Iterator

import pandas as pd

from align.errors import AlignError, arg
from align.files import write_text, write_with

BASE_COLUMNS = ["framework", "version", "device", "op_name", "kernel_source"]
METRICS = ("latency", "power", "power_limit")
LOCK_WAIT_S = 30.0


class LockTimeout(AlignError):
    exit_code = 1


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    """An ``O_APPEND`` descriptor of ``path`` (created if missing) held under an exclusive flock.
    A file swapped by :func:`dedupe` while we waited is opened again, so no row lands in the old one."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if not _flock_within(fd, LOCK_WAIT_S):
                raise LockTimeout(f"could not lock {path} for {LOCK_WAIT_S:g} s",
                                  "another collector process holds it; wait for it or stop it")
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield fd
                return
        finally:
            os.close(fd)  # closing drops the lock


def _flock_within(fd: int, timeout: float) -> bool:
    """An exclusive flock of ``fd``, waited for at most ``timeout`` s. The wait is a blocking flock on
    a helper thread (a signal alarm would work only in the main thread, and Dask runs cases on
    others), on a duplicate of ``fd`` that shares its lock; a lock the helper gets after we gave up
    is dropped at once, so a timed-out wait never leaves the file locked."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    waiter = os.dup(fd)
    got, guard, state = threading.Event(), threading.Lock(), {"abandoned": False, "error": None}

    def wait() -> None:
        try:
            fcntl.flock(waiter, fcntl.LOCK_EX)
        except OSError as exc:
            state["error"] = exc
        with guard:
            if state["abandoned"] or state["error"]:
                if state["abandoned"]:
                    fcntl.flock(waiter, fcntl.LOCK_UN)  # got after the caller gave up: nobody uses it
                os.close(waiter)
                return
            got.set()

    helper = threading.Thread(target=wait, name="align-flock-wait", daemon=True)
    helper.start()
    got.wait(timeout)
    with guard:
        if not got.is_set():
            if state["error"] is not None:
                raise state["error"]
            state["abandoned"] = True
            return False
    os.close(waiter)  # fd still holds the lock
    return True


def header_for(items: dict, power: bool) -> list[str]:
    return BASE_COLUMNS + list(items) + (["power", "power_limit"] if power else [])


def append_row(path: Path, base: dict, items: dict, power: tuple[float, float] | None = None) -> None:
    """Append one row; the header is written when the file is empty and must match otherwise."""
    path = Path(path)
    header = header_for(items, power is not None)
    row = {**base, **items}
    if power is not None:
        row["power"], row["power_limit"] = power
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path) as fd:
        size = os.fstat(fd).st_size
        if size:
            with open(path, newline="") as f:
                first = f.readline().rstrip("\n")
            if first.split(",") != header:
                raise AlignError(f"{path} has columns {first!r}, this row has {','.join(header)!r}",
                                 f"resume with the same settings (power measurement on or off), or use another {arg('out')}")
        else:
            w.writeheader()
        w.writerow(row)
        _write_whole(fd, buf.getvalue().encode(), size)


def _write_whole(fd: int, data: bytes, size: int) -> None:
    """``data`` appended to the locked ``fd`` of ``size`` bytes and fsynced, or nothing: a full disk
    that wrote part of it has that part cut, or the next line would land on its tail."""
    try:
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    except OSError:
        os.ftruncate(fd, size)
        raise


def check_header(path: Path, found: list[str], expected: list[list[str]]) -> None:
    """Refuse a perf file whose header is none of ``expected`` (the rows this collection writes),
    naming the first column that differs: said before any case is timed, since a row appended under
    another header is misread (swapped or renamed columns)."""
    if found in expected:
        return
    want = next((h for h in expected if len(h) == len(found)), expected[0])
    at = next((i for i, (a, b) in enumerate(zip(found, want)) if a != b), None)
    if at is not None:
        what = f"column {at + 1} is {found[at]!r}, this collection writes {want[at]!r} there"
    else:
        what = f"{len(found)} columns, this collection writes {len(want)} ({','.join(want)})"
    raise AlignError(f"line 1 of {path}: {what}",
                     f"put back the header and rows as align wrote them, or move the file away to collect its "
                     f"cases again, or use another {arg('out')}")


def repair(path: Path) -> int:
    """Drop a trailing partial line (a writer killed mid-write); returns the bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    with _locked(path) as fd:
        data = path.read_bytes()
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        os.ftruncate(fd, keep)
        os.fsync(fd)
        return len(data) - keep


def dedupe(path: Path, key_fields: list[str]) -> int:
    """Keep one row per case key (the last one written, as the parquet does); returns the rows
    removed. The file is rewritten whole and swapped in, under its lock."""
    path = Path(path)
    with _locked(path):
        rows = read_rows(path)
        if rows.empty or not set(key_fields) <= set(rows.columns):
            return 0
        kept = rows.drop_duplicates(key_fields, keep="last")
        removed = len(rows) - len(kept)
        if removed:
            write_text(path, kept.to_csv(index=False, lineterminator="\n"), "the perf file")
        return removed


def read_rows(path: Path, header: list[str] | None = None) -> pd.DataFrame:
    """All complete rows, as strings (the identity of a row is its text). A row with the wrong
    number of fields, or a first line other than ``header`` (when given), is one line naming the
    file and line: a perf file is the record of what was measured, so it is never guessed at."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):  # an editor's mark: it would glue itself to the first column's name
        raise AlignError(f"{path} starts with a UTF-8 byte-order mark (align writes none)",
                         f"remove it (sed -i '1s/^\\xEF\\xBB\\xBF//' {path}), then run again")
    if b"\r" in data:  # Windows line endings: a row appended after them would mix two kinds of line
        line = data.count(b"\n", 0, data.index(b"\r")) + 1
        raise AlignError(f"line {line} of {path} ends in CR LF (Windows line endings; align writes LF)",
                         f"convert the file (sed -i 's/\\r$//' {path}), then run again")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AlignError(f"{path} is not text (byte {exc.start} is not UTF-8)", FIX_LINE) from None
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    lines = list(csv.reader(io.StringIO(text)))
    if not lines:
        return pd.DataFrame()
    first = lines[0]
    if header is not None and first != header:
        raise AlignError(f"line 1 of {path} is not the header {','.join(header)!r}", FIX_LINE)
    if len(set(first)) != len(first) or not all(first):
        raise AlignError(f"line 1 of {path} is not a header (empty or repeated column names)", FIX_LINE)
    for i, fields in enumerate(lines[1:], 2):
        if len(fields) != len(first):
            raise AlignError(f"line {i} of {path} has {len(fields)} fields, the header {len(first)}", FIX_LINE)
    df = pd.DataFrame(lines[1:], columns=first, dtype=str)
    for col in (c for c in METRICS if c in df.columns):
        bad = [i for i, v in enumerate(df[col]) if not _is_float(v)]
        if bad:
            raise AlignError(f"line {bad[0] + 2} of {path}: {col} {df[col].iloc[bad[0]]!r} is not a number", FIX_LINE)
    return df


FIX_LINE = "repair or delete that line (or move the file away to collect its cases again), then --resume"


def finalize(txt: Path, parquet: Path) -> int:
    """Convert a perf txt into parquet (merged into an existing one, newest row per key wins)."""
    df = read_rows(txt)
    if df.empty:
        return 0
    # aiconfigurator's reader is strict about types: metrics float64, integer keys int64. Metrics go
    # through Python's float(), exact for the repr written (to_numeric was seen a few ulp off on the GPU image).
    typed = df.apply(lambda col: col.map(float).astype("float64") if col.name in METRICS
                     else pd.to_numeric(col) if _numeric(col) else col)
    if parquet.exists():
        typed = pd.concat([read_parquet(parquet), typed], ignore_index=True)
    keys = [c for c in typed.columns if c not in METRICS]
    typed = typed.drop_duplicates(keys, keep="last").reset_index(drop=True)
    write_with(parquet, lambda tmp: typed.to_parquet(tmp, compression="zstd", index=False), "the parquet table")
    return len(typed)


def read_parquet(parquet: Path) -> pd.DataFrame:
    """A table written before; damaged, it is one line (its perf txt holds every row again)."""
    try:
        return pd.read_parquet(parquet)
    except Exception as exc:  # pyarrow raises its own classes for every kind of damage
        raise AlignError(f"{parquet} is not a readable parquet table ({str(exc).splitlines()[0][:200]})",
                         f"move it away: it is rebuilt from {Path(parquet).stem}.txt") from None


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _numeric(col: pd.Series) -> bool:
    try:
        pd.to_numeric(col)
        return True
    except (ValueError, TypeError):
        return False


def write_meta(folder: Path, meta: dict) -> Path:
    """``collection_meta.yaml``: a small YAML mapping written without a YAML library."""
    path = Path(folder) / "collection_meta.yaml"
    lines: list[str] = []

    def emit(obj, indent: int) -> None:
        pad = "  " * indent
        for k, v in obj.items():
            if isinstance(v, dict):
                lines.append(f"{pad}{k}:")
                emit(v, indent + 1)
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")

    emit(meta, 0)
    write_text(path, "\n".join(lines) + "\n", "the collection metadata")
    return path


def _scalar(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def append_jsonl(path: Path, record: dict) -> None:
    """One JSON line appended under the file's flock (workers append side by side), whole or not at
    all (a full disk); a line a kill cut short is ended first, so it costs only its own record."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, default=str) + "\n").encode()
    with _locked(path) as fd:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        _write_whole(fd, line, size)


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
