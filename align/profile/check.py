"""Whether an export holds what nsys writes, in one line naming the table, the rows and the fix.

nsys writes an integer time, id or string id in every column align reads, NULL only where a column
may be empty (an NVTX mark's end), an end at or after each start, and a string for every string id.
A tool that rewrote the export, a hand edit, a truncated or overwritten file may break any of it;
a command would then sum NULL ends into ``mock_ns 9.22e18`` or print kernels named ``null``. So
:func:`validate` checks every export once as it is opened (:class:`align.Profile`, which every
command reads through), in one pass of SQL per table spread over the cores; and :func:`diagnose`
names the damage when a read fails anyway (a broken page the checks never read).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from align.errors import ProfileError
from align.profile.engine import readonly_uri
from align.profile.schema import (GRAPH_NODE_TABLES, KERNEL_TABLE, NVTX_TABLE, RUNTIME_TABLE, STRINGS_TABLE,
                                  adapt_sqlite)

INT_MAX = (1 << 63) - 1
TIME_LIMIT_NS = 1 << 62  # about 146 years: past it a value is no nanosecond time of a capture
GPU_SPAN_LIMIT_NS = 86_400 * 10**9  # one GPU operation lasting a day is a broken end, not a kernel
CHUNK_ROWS = 1 << 18  # rows one thread counts at a time


@dataclass(frozen=True)
class Col:
    """A column align reads: ``kind`` time, id (an integer) or name (a StringIds id); ``null``: nsys
    may leave it NULL; ``absent``: some nsys releases do not write it; ``negative``: nsys may write
    a value below 0, for what began before the session did (an NVTX domain created before a capture
    range opened, a graph node built before it; a GPU operation of the session never does)."""

    name: str
    kind: str
    null: bool = False
    absent: bool = False
    negative: bool = False


_GPU_OP = (Col("start", "time"), Col("end", "time"), Col("deviceId", "id"), Col("streamId", "id"))
RULES: dict[str, tuple[Col, ...]] = {
    KERNEL_TABLE: (*_GPU_OP, Col("globalPid", "id", null=True), Col("correlationId", "id", null=True, absent=True),
                   Col("demangledName", "name"), Col("shortName", "name", absent=True),
                   Col("mangledName", "name", null=True, absent=True)),
    "CUPTI_ACTIVITY_KIND_MEMCPY": _GPU_OP,
    "CUPTI_ACTIVITY_KIND_MEMSET": _GPU_OP,
    RUNTIME_TABLE: (Col("start", "time", negative=True), Col("end", "time", negative=True),
                    Col("globalTid", "id", null=True), Col("correlationId", "id", null=True, absent=True),
                    Col("nameId", "name")),
    NVTX_TABLE: (Col("start", "time", negative=True), Col("end", "time", null=True, negative=True),
                 Col("eventType", "id"), Col("globalTid", "id", null=True, absent=True),
                 Col("textId", "name", null=True, absent=True)),
    **{t: (Col("start", "time", negative=True), Col("graphNodeId", "id", negative=True),
           Col("nameId", "name", null=True, absent=True)) for t in GRAPH_NODE_TABLES},
    "ThreadNames": (Col("globalTid", "id", null=True, absent=True), Col("nameId", "name", null=True, absent=True)),
}
# a table of this name without this column is another table: newer nsys releases reuse
# CUDA_GRAPH_EVENTS for graph-level events (schema.Schema.graph_node_table decides the same way)
MARKED_BY = {t: "graphNodeId" for t in GRAPH_NODE_TABLES}
SPAN_LIMITS = {KERNEL_TABLE: GPU_SPAN_LIMIT_NS, "CUPTI_ACTIVITY_KIND_MEMCPY": GPU_SPAN_LIMIT_NS,
               "CUPTI_ACTIVITY_KIND_MEMSET": GPU_SPAN_LIMIT_NS}

AGAIN = "export the report again (align export REPORT.nsys-rep)"
_opened: list[Path] = []
_valid: set[tuple] = set()
_lock = threading.Lock()


def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


@dataclass
class _Tests:
    """One table's tests: ``rows`` (SQL true of a good row) and ``names`` (the string-id columns,
    each with whether it may be NULL) for the counting pass; ``fine``, the tests that tell what is
    wrong once it found something (SQL true of a good row, what the others have, in the order told)."""

    rows: str
    names: list[tuple[str, bool]]
    fine: list[tuple[str, str]]


def _tests(table: str, cols: dict[str, Col], thorough: bool) -> _Tests:
    """The tests of ``table``. The counting pass reads the times whole (NULL, text, sign and size in
    one BETWEEN) and the string ids once per distinct value; of an id it asks only for NULL (free
    where the table declares it NOT NULL) unless ``thorough``, as after a failed read."""
    rows, names, fine = [], [], []
    for c in cols.values():
        q = f'"{c.name}"'
        high = TIME_LIMIT_NS - 1 if c.kind == "time" else INT_MAX
        low = -high if c.negative else 0
        if c.kind == "name":
            names.append((c.name, c.null))
        elif c.kind == "time" or thorough:
            rows.append(f"({q} IS NULL OR {q} BETWEEN {low} AND {high})" if c.null else f"{q} BETWEEN {low} AND {high}")
        elif not c.null:
            rows.append(f"{q} IS NOT NULL")
        each = [] if c.null else [(f"{q} IS NOT NULL", f"have no {c.name} (NULL)")]
        each.append((f"{q} <= {INT_MAX}", f"hold {_a(c.name)} that is not an integer"))
        if c.kind == "name":
            each.append((f"{q} IN (SELECT id FROM {STRINGS_TABLE})",
                         f"name {_a(c.name)} string id that StringIds lacks"))
        elif not c.negative:
            each.append((f"{q} >= 0", f"have a negative {c.name}"))
        if c.kind == "time":
            each.append((f"{q} < {TIME_LIMIT_NS}", f"have {_a(c.name)} past 2^62 ns (146 years: not a time)"))
            if c.negative:
                each.append((f"{q} > -{TIME_LIMIT_NS}", f"have {_a(c.name)} before -2^62 ns (not a time)"))
        fine += [(f"({q} IS NULL OR {sql})" if c.null else sql, what) for sql, what in each]
    if {"start", "end"} <= set(cols):
        nullable = "\"end\" IS NULL OR " if cols["end"].null else ""
        span = SPAN_LIMITS.get(table, INT_MAX)
        rows.append(f'({nullable}"end" - start BETWEEN 0 AND {span})')
        fine.append((f'({nullable}"end" >= start)', "end before they start"))
        if table in SPAN_LIMITS:
            fine.append((f'({nullable}"end" - start <= {span})', "last longer than a day"))
    return _Tests(" AND ".join(rows) or "1", names, fine)


def _rowids(rows: tuple[int, int] | None, joiner: str) -> str:
    return f"rowid BETWEEN {rows[0]} AND {rows[1]} {joiner} " if rows else ""


def _count(conn: sqlite3.Connection, table: str, good: str, rows: tuple[int, int] | None = None) -> int:
    """Rows of ``table`` (those of rowid range ``rows``) where ``good`` is not true."""
    return conn.execute(f"SELECT count(*) FROM {table} WHERE {_rowids(rows, 'AND')}NOT coalesce({good}, 0)"
                        ).fetchone()[0]


def _any_bad(conn: sqlite3.Connection, table: str, tests: _Tests, rows: tuple[int, int] | None) -> bool:
    """Whether some row of ``table`` (of rowid range ``rows``) fails its tests: one pass, the string
    ids looked up once per distinct combination."""
    if not tests.names:
        return _count(conn, table, tests.rows, rows) > 0
    picked = ", ".join(f'"{n}" AS n{i}' for i, (n, _) in enumerate(tests.names))
    lacks = " OR ".join(f"{'n%d IS NOT NULL AND ' % i if null else 'n%d IS NULL OR ' % i}"
                        f"n{i} NOT IN (SELECT id FROM {STRINGS_TABLE})" for i, (_, null) in enumerate(tests.names))
    where = f"WHERE {_rowids(rows, '')}" if rows else ""
    q = (f"SELECT 1 FROM (SELECT DISTINCT {picked}, coalesce({tests.rows}, 0) AS ok FROM {table} {where}) "
         f"WHERE NOT ok OR {lacks} LIMIT 1")
    return conn.execute(q).fetchone() is not None


def _damaged_tables(conn: sqlite3.Connection, path: Path | None, tests: dict[str, _Tests]) -> list[str]:
    """The tables some row of which fails its tests; with ``path``, a large table is read in rowid
    ranges on all the cores (each thread on its own read-only connection: SQLite reads while Python
    waits)."""
    jobs: list[tuple[str, tuple[int, int] | None]] = []
    for t in tests:
        lo, hi = conn.execute(f"SELECT min(rowid), max(rowid) FROM {t}").fetchone()
        if lo is None or path is None or hi - lo < CHUNK_ROWS:
            jobs.append((t, None))
        else:
            jobs += [(t, (a, min(a + CHUNK_ROWS - 1, hi))) for a in range(lo, hi + 1, CHUNK_ROWS)]
    # ALIGN_DUCKDB_THREADS: the share of the cores align.scale gives each of several processes
    threads = min(len(jobs), int(os.environ.get("ALIGN_DUCKDB_THREADS") or 0) or os.cpu_count() or 1)
    if threads <= 1 or path is None:
        return list(dict.fromkeys(t for t, rows in jobs if _any_bad(conn, t, tests[t], rows)))
    local = threading.local()
    opened: list[sqlite3.Connection] = []

    def one(job: tuple[str, tuple[int, int] | None]) -> bool:
        if not hasattr(local, "conn"):
            local.conn = sqlite3.connect(readonly_uri(path), uri=True, check_same_thread=False)
            with _lock:
                opened.append(local.conn)
            adapt_sqlite(local.conn)
        return _any_bad(local.conn, job[0], tests[job[0]], job[1])

    from concurrent.futures import ThreadPoolExecutor

    try:
        with ThreadPoolExecutor(threads) as pool:
            found = list(pool.map(one, jobs))
    finally:
        for c in opened:
            c.close()
    return list(dict.fromkeys(t for (t, _), bad in zip(jobs, found) if bad))


def problem(conn: sqlite3.Connection, path: Path | None = None, thorough: bool = False) -> str | None:
    """The first way the export on ``conn`` differs from what nsys writes, as ``<n> of <m> rows of
    <table> <what>``, or None. When all is well, one pass over each table (on all the cores when
    ``path`` names the file); the counts that name the damage run only once something was found."""
    tables = {r[0] for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")}
    if STRINGS_TABLE not in tables:
        return "it has no StringIds table"
    tests = {}
    for table, rules in RULES.items():
        if table not in tables:
            continue
        present = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
        if table in MARKED_BY and MARKED_BY[table] not in present:
            continue
        missing = [c.name for c in rules if not c.absent and c.name not in present]
        if missing:
            return f"{table} lacks column(s) {', '.join(missing)}"
        tests[table] = _tests(table, {c.name: c for c in rules if c.name in present}, thorough)
    for table in _damaged_tables(conn, path, tests):
        total = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for sql, what in tests[table].fine:
            n = _count(conn, table, sql)
            if n:
                return f"{n} of {total} rows of {table} {what}"
        return f"rows of {table} hold values nsys never writes"
    return None


def _again(path: Path) -> str:
    """What to do about a damaged export: export its report again, named when it lies beside it."""
    report = path.with_suffix(".nsys-rep")
    return f"export the report again (align export {report})" if report.exists() else AGAIN


def _unreadable(exc: sqlite3.Error) -> str:
    if "locked" in str(exc):
        return "it is locked by another program writing it: wait for that program to finish"
    return f"it cannot be read ({exc}): {AGAIN}"


def validate(conn: sqlite3.Connection, path: Path) -> None:
    """Raise the one-line :class:`ProfileError` when the export at ``path`` (open on ``conn``) is not
    as nsys writes it; checked once per file and version of it in this process."""
    try:
        st = os.stat(path)
        key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    except OSError:
        key = None
    with _lock:
        if key in _valid:
            return
    try:
        found = problem(conn, Path(path))
    except sqlite3.Error as exc:  # a broken page, or a writer holding the file
        found = None if "locked" in str(exc) else diagnose(path)
        raise ProfileError(f"{path}: {found or _unreadable(exc)}") from None
    if found:
        raise ProfileError(f"{path}: {found}", f"the export is damaged: {_again(Path(path))}")
    if key is not None:
        with _lock:
            _valid.add(key)


def opened(path: Path) -> None:
    """Remember an export this process opened, for :func:`damage_report`."""
    with _lock:
        if path not in _opened:
            _opened.append(path)


def diagnose(path: Path) -> str | None:
    """The damage found in the export at ``path`` (SQLite's page check first), or None when it looks
    as nsys writes it."""
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True)
    except sqlite3.Error as exc:
        return f"cannot open it ({exc})"
    try:
        ok = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        if ok != "ok":
            return f"the database is damaged ({' '.join(ok.replace('***', '').split())[:200]}): {_again(Path(path))}"
        adapt_sqlite(conn)  # a column another nsys release spells otherwise is not damage
        found = problem(conn, thorough=True)
        return f"{found}: {_again(Path(path))}" if found else None
    except sqlite3.Error as exc:
        return _unreadable(exc)
    finally:
        conn.close()


def damage_report() -> str | None:
    """``<file>: <damage>`` for the first damaged export this process opened, or None."""
    with _lock:
        paths = list(_opened)
    for p in paths:
        found = diagnose(p)
        if found:
            return f"{p}: {found}"
    return None
