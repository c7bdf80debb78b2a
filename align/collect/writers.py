"""Perf files: the seed's ``*_perf.txt`` (CSV, header written once) appended by several worker
processes, and the parquet + ``collection_meta.yaml`` layout aiconfigurator 0.12 loads.

Appends take an exclusive lock file created with ``O_CREAT | O_EXCL`` (atomic on local disks and
on NFSv3+), write one whole line, flush and fsync, then drop the lock; a lock left by a killed
writer is broken after ``STALE_LOCK_S``. On NFS this is NOT fully safe: breaking a stale lock
relies on file mtimes and clocks that differ between hosts, and appends from several hosts are
only ordered by NFS's close-to-open consistency. Keep a collection's output folder on a local
disk, or run one writer host per folder.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import time
from pathlib import Path

import pandas as pd

from align.errors import AlignError

BASE_COLUMNS = ["framework", "version", "device", "op_name", "kernel_source"]
METRICS = ("latency", "power", "power_limit")
STALE_LOCK_S = 60.0
LOCK_WAIT_S = 30.0


class LockTimeout(AlignError):
    exit_code = 1


class _Lock:
    def __init__(self, path: Path):
        self.path = Path(str(path) + ".lock")

    def __enter__(self) -> "_Lock":
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                os.write(fd, f"{os.getpid()}\n".encode())
                os.close(fd)
                return self
            except FileExistsError:
                try:
                    if time.time() - self.path.stat().st_mtime > STALE_LOCK_S:
                        # rename is atomic: of several breakers exactly one removes it
                        os.rename(self.path, f"{self.path}.stale.{os.getpid()}")
                        os.unlink(f"{self.path}.stale.{os.getpid()}")
                        continue
                except FileNotFoundError:
                    continue
                if time.monotonic() > deadline:
                    raise LockTimeout(f"could not lock {self.path} for {LOCK_WAIT_S:.0f} s",
                                      "another writer holds it; remove it if no collection is running")
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


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
    with _Lock(path):
        exists = path.exists() and path.stat().st_size > 0
        if exists:
            with open(path, newline="") as f:
                first = f.readline().rstrip("\n")
            if first.split(",") != header:
                raise AlignError(f"{path} has columns {first!r}, this row has {','.join(header)!r}",
                                 "resume with the same settings (power measurement on or off), or use another --out")
        else:
            w.writeheader()
        w.writerow(row)
        with open(path, "a", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())


def repair(path: Path) -> int:
    """Drop a trailing partial line (a writer killed mid-write); returns the bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    with _Lock(path):
        data = path.read_bytes()
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return len(data) - keep


def dedupe(path: Path, key_fields: list[str]) -> int:
    """Keep one row per case key (the last one written, as the parquet does); returns the rows
    removed. The file is rewritten whole and swapped in, under its lock."""
    path = Path(path)
    with _Lock(path):
        rows = read_rows(path)
        if rows.empty or not set(key_fields) <= set(rows.columns):
            return 0
        kept = rows.drop_duplicates(key_fields, keep="last")
        removed = len(rows) - len(kept)
        if removed:
            tmp = path.with_suffix(path.suffix + ".tmp")
            with open(tmp, "w", newline="") as f:
                kept.to_csv(f, index=False, lineterminator="\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        return removed


def read_rows(path: Path) -> pd.DataFrame:
    """All complete rows, as strings (the identity of a row is its text)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    text = path.read_text()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


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
        typed = pd.concat([pd.read_parquet(parquet), typed], ignore_index=True)
    keys = [c for c in typed.columns if c not in METRICS]
    typed = typed.drop_duplicates(keys, keep="last").reset_index(drop=True)
    tmp = parquet.with_suffix(".parquet.tmp")
    typed.to_parquet(tmp, compression="zstd", index=False)
    os.replace(tmp, parquet)
    return len(typed)


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
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
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


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
