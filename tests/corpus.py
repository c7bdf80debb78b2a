"""Damaged copies of a shipped example export, each broken one way, for the bad-input tests."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
from pathlib import Path

from align.profile.schema import KERNEL_TABLE


def _sql(statement: str):
    def damage(path: Path) -> None:
        con = sqlite3.connect(path)
        con.executescript(statement)
        con.commit()
        con.close()
    return damage


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
}


def damaged(source: Path, kind: str, folder: Path) -> Path:
    """A copy of ``source`` (an export) with damage ``kind`` applied, in ``folder``."""
    out = Path(folder) / f"{kind}.sqlite"
    shutil.copy(source, out)
    os.chmod(out, 0o644)
    DAMAGES[kind](out)
    return out
