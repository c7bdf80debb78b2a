"""Damaged copies of a shipped example export, each broken one way, for the bad-input tests."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
from pathlib import Path

from align.profile.schema import KERNEL_TABLE, NVTX_TABLE, RUNTIME_TABLE


def _sql(statement: str):
    def damage(path: Path) -> None:
        con = sqlite3.connect(path)
        con.executescript(statement)
        con.commit()
        con.close()
    return damage


def _loosened(table: str, update: str):
    """Rebuild ``table`` without its NOT NULL constraints (as a tool that rewrites an export may), then
    run ``update``: the NULLs and disorder nsys itself never writes."""
    return _sql(f"ALTER TABLE {table} RENAME TO _old; CREATE TABLE {table} AS SELECT * FROM _old; "
                f"DROP TABLE _old; {update}")


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _overwrite_pages(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 3)
        f.write(random.Random(0).randbytes(8192))


DAMAGES = {
    "truncated": _truncate,
    "overwritten-pages": _overwrite_pages,
    "no-stringids": _sql("DROP TABLE StringIds;"),
    "renamed-column": _sql(f"ALTER TABLE {KERNEL_TABLE} RENAME COLUMN start TO startx;"),
    "text-in-integer-column": _sql(f"UPDATE {KERNEL_TABLE} SET start = 'abc' WHERE rowid = 3;"),
    "dangling-string-id": _sql(f"UPDATE {KERNEL_TABLE} SET demangledName = 99999999 WHERE rowid = 3;"),
    "null-end": _loosened(KERNEL_TABLE, f"UPDATE {KERNEL_TABLE} SET end = NULL WHERE rowid % 5 = 0;"),
    "null-start": _loosened(KERNEL_TABLE, f"UPDATE {KERNEL_TABLE} SET start = NULL WHERE rowid = 7;"),
    "null-device": _loosened(KERNEL_TABLE, f"UPDATE {KERNEL_TABLE} SET deviceId = NULL WHERE rowid % 4 = 0;"),
    "null-stream": _loosened(KERNEL_TABLE, f"UPDATE {KERNEL_TABLE} SET streamId = NULL WHERE rowid = 9;"),
    "end-before-start": _sql(f"UPDATE {KERNEL_TABLE} SET end = start - 1000 WHERE rowid % 6 = 0;"),
    "negative-start": _sql(f"UPDATE {KERNEL_TABLE} SET start = -5 WHERE rowid = 11;"),
    "absurd-end": _sql(f"UPDATE {KERNEL_TABLE} SET end = 9223372036854775807 WHERE rowid = 5;"),
    "third-of-strings-gone": _sql("DELETE FROM StringIds WHERE id % 3 = 0;"),
    "null-api-end": _loosened(RUNTIME_TABLE, f"UPDATE {RUNTIME_TABLE} SET end = NULL WHERE rowid % 7 = 0;"),
    "range-ends-before-start": _sql(f"UPDATE {NVTX_TABLE} SET end = start - 1 WHERE end IS NOT NULL AND rowid % 2 = 0;"),
}


def damaged(source: Path, kind: str, folder: Path) -> Path:
    """A copy of ``source`` (an export) with damage ``kind`` applied, in ``folder``."""
    out = Path(folder) / f"{kind}.sqlite"
    shutil.copy(source, out)
    os.chmod(out, 0o644)
    DAMAGES[kind](out)
    return out
