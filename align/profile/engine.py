"""Columnar reads of large tables: DuckDB's SQLite reader when it is installed, else SQLite.

Moving millions of rows from SQLite into Python through the ``sqlite3`` module costs about a
microsecond per value; DuckDB's SQLite scanner reads them into columns natively and runs joins
and aggregations on all cores (bench/attribution.py measures both). Queries passed here are
written in the SQL both engines accept (``"end"`` quoted, no two-argument ``max``).
DuckDB is chosen by size: below ``DUCKDB_FROM_BYTES`` SQLite answers before DuckDB would have
loaded (bench/speed.py measures where they cross). ``ALIGN_ENGINE=sqlite`` or ``duckdb`` forces one.
"""

from __future__ import annotations

import glob
import os
import sqlite3
from pathlib import Path

from align.lazy import pd


def _sqlite_extension() -> str | None:
    try:
        import duckdb_extension_sqlite_scanner as ext
    except ImportError:
        return None
    found = glob.glob(os.path.join(os.path.dirname(ext.__file__), "extensions", "*", "sqlite_scanner.duckdb_extension"))
    return found[0] if found else None


DUCKDB_FROM_BYTES = 8 << 20


def in_wal_mode(path: Path) -> bool:
    """Whether the SQLite file at ``path`` is in WAL mode (bytes 18 and 19 of its header are 2)."""
    try:
        with open(path, "rb") as f:
            return f.read(20)[18:20] == b"\x02\x02"
    except OSError:
        return False


def readonly_uri(path: Path) -> str:
    """The URI that opens the export read-only; a WAL-mode one (nsys never writes one; a tool that
    opened it for writing may switch it) as immutable, else SQLite leaves -wal and -shm files beside it."""
    from urllib.parse import quote

    return f"file:{quote(str(Path(path).resolve()))}?mode=ro" + ("&immutable=1" if in_wal_mode(path) else "")


def wants_duckdb(path: Path) -> bool:
    """``ALIGN_ENGINE`` (auto, sqlite or duckdb), else the export's size; never for a WAL-mode file,
    beside which DuckDB's SQLite reader would leave -wal and -shm files."""
    if in_wal_mode(path):
        return False
    choice = os.environ.get("ALIGN_ENGINE", "auto")
    if choice in ("sqlite", "duckdb"):
        return choice == "duckdb"
    try:
        return path.stat().st_size >= DUCKDB_FROM_BYTES
    except OSError:
        return False


def open_duckdb(path: Path, renames: dict[str, dict[str, str]] | None = None):
    """A DuckDB connection with the export attached read-only as the default schema, or None;
    ``renames`` (schema.renamed_columns) become views found before the export's own tables."""
    if not wants_duckdb(path):
        return None
    try:
        import duckdb
    except ImportError:
        return None
    ext = _sqlite_extension()
    try:
        # ALIGN_DUCKDB_THREADS: a share of the cores, where several processes read at once (align.scale)
        threads = int(os.environ.get("ALIGN_DUCKDB_THREADS") or 0) or os.cpu_count() or 1
        # the extension is the file of our pinned duckdb-extension-sqlite-scanner package; checking its
        # signature hashes 35 MB on every command (~0.08 s of a 0.2 s answer)
        con = duckdb.connect(config={"threads": threads, "allow_unsigned_extensions": bool(ext)})
        con.execute(f"LOAD '{ext}'" if ext else "LOAD sqlite_scanner")
        quoted = str(path.resolve()).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS profile (TYPE sqlite, READ_ONLY)")
        con.execute("USE profile")
        if renames:
            from align.profile.schema import view_select

            for table, cols in renames.items():
                con.execute(f'CREATE VIEW memory.main."{table}" AS {view_select(cols, f"profile.{table}")}')
            con.execute("SET search_path = 'memory.main,profile.main'")
        return con
    except Exception:  # no usable extension (offline, version mismatch): fall back to SQLite
        return None


class Engine:
    """Runs a query on DuckDB when available, else on the profile's SQLite connection."""

    def __init__(self, path: Path, conn: sqlite3.Connection, renames: dict | None = None):
        self.path = path
        self.conn = conn
        self.renames = renames
        self._duck = None
        self._tried = False

    @property
    def duck(self):
        if not self._tried:
            self._tried = True
            self._duck = open_duckdb(self.path, self.renames)
        return self._duck

    @property
    def name(self) -> str:
        return "duckdb" if self.duck is not None else "sqlite"

    def frame(self, query: str) -> pd.DataFrame:
        if self.duck is not None:
            return self.duck.execute(query).df()
        cur = self.conn.execute(query)
        cols = [d[0] for d in cur.description]
        return pd.DataFrame.from_records(cur.fetchall(), columns=cols)

    def rows(self, query: str) -> tuple[list[str], list[tuple]]:
        """(column names, rows) of a small result, without pandas."""
        if self.duck is not None:
            res = self.duck.execute(query)
            return [d[0] for d in res.description], res.fetchall()
        cur = self.conn.execute(query)
        return [d[0] for d in cur.description], cur.fetchall()

    def chunks(self, query: str, rows: int = 1 << 18):
        """The result in pieces of about ``rows`` rows, so a caller can fold millions of rows into
        compact arrays without holding the whole result twice."""
        if self.duck is not None:
            res = self.duck.execute(query)
            vectors = max(1, rows // 2048)
            while True:
                df = res.fetch_df_chunk(vectors)
                if df is None or len(df) == 0:
                    return
                yield df
        else:
            cur = self.conn.execute(query)
            cols = [d[0] for d in cur.description]
            while True:
                batch = cur.fetchmany(rows)
                if not batch:
                    return
                yield pd.DataFrame.from_records(batch, columns=cols)

    def close(self) -> None:
        if self._duck is not None:
            self._duck.close()
            self._duck = None
