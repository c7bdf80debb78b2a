"""What is wrong with a damaged export, in one line: asked only after reading one has failed.

A truncated or overwritten file, a dropped table, a renamed column, text where nsys writes
integers, a string id with no string: each breaks a query somewhere deep inside a command; the
command then names the file and the damage instead of showing the query's traceback.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from urllib.parse import quote

from align.profile.schema import KERNEL_TABLE, NVTX_TABLE, RUNTIME_TABLE, STRINGS_TABLE, adapt_sqlite, string_join

# per table: the columns align reads that must hold integers, and the string-id columns
EXPECTED = {
    KERNEL_TABLE: (("start", "end", "globalPid", "correlationId"), ("demangledName", "shortName")),
    RUNTIME_TABLE: (("start", "end", "globalTid", "correlationId"), ("nameId",)),
    NVTX_TABLE: (("start", "eventType"), ()),
}

AGAIN = ": export the report again (align export REPORT.nsys-rep)"
_opened: list[Path] = []
_lock = threading.Lock()


def opened(path: Path) -> None:
    """Remember an export this process opened, for :func:`damage_report`."""
    with _lock:
        if path not in _opened:
            _opened.append(path)


def diagnose(path: Path) -> str | None:
    """The damage found in the export at ``path``, or None when it looks as nsys writes it."""
    try:
        conn = sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return f"cannot open it ({exc})"
    try:
        ok = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        if ok != "ok":
            return f"the database is damaged ({' '.join(ok.replace('***', '').split())[:200]}){AGAIN}"
        adapt_sqlite(conn)  # a column another nsys release spells otherwise is not damage
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if STRINGS_TABLE not in tables:
            return f"it has no StringIds table{AGAIN}"
        for table, (ints, ids) in EXPECTED.items():
            if table not in tables:
                continue
            cols = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            missing = [c for c in ints + ids if c not in cols and c not in ("shortName", "correlationId")]
            if missing:
                return f"{table} lacks column(s) {', '.join(missing)}{AGAIN}"
            probes = [(c, f'typeof(t."{c}") != \'integer\'', "are not integers") for c in ints] + \
                     [(c, "s.id IS NULL", "name strings that StringIds lacks") for c in ids]
            for c, wrong, what in probes:
                if c not in cols:
                    continue
                join = string_join("s", f't."{c}"')
                bad = conn.execute(f'SELECT count(*) FROM {table} AS t {join} '
                                   f'WHERE t."{c}" IS NOT NULL AND {wrong}').fetchone()[0]
                if bad:
                    return f"{bad} row(s) of {table}.{c} {what}{AGAIN}"
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            return "it is locked by another program writing it: wait for that program to finish"
        return f"it cannot be read ({exc}){AGAIN}"
    except sqlite3.Error as exc:
        return f"it cannot be read ({exc}){AGAIN}"
    finally:
        conn.close()
    return None


def damage_report() -> str | None:
    """``<file>: <damage>`` for the first damaged export this process opened, or None."""
    with _lock:
        paths = list(_opened)
    for p in paths:
        found = diagnose(p)
        if found:
            return f"{p}: {found}"
    return None
