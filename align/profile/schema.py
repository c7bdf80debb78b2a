"""What an nsys SQLite export holds, across exporter versions.

nsys writes tables lazily (only those with data) and renames tables and columns between releases
(``EXPORT_META_DATA`` in 2022.4 became ``META_DATA_EXPORT``; ``CUDA_GRAPH_EVENTS`` became
``CUDA_GRAPH_NODE_EVENTS``). Everything here looks before it reads.
"""

from __future__ import annotations

import sqlite3
from functools import cached_property


# Fallbacks for exports without ENUM tables; ids 0-133 are identical in 2022.4 and 2025.3.
DEFAULT_EVENT_TYPES = {
    "NvtxCategory": 33,
    "NvtxMark": 34,
    "NvtxThread": 39,
    "NvtxPushPopRange": 59,
    "NvtxStartEndRange": 60,
    "NvtxtPushPopRange": 70,
    "NvtxtStartEndRange": 71,
    "NvtxDomainCreate": 75,
    "NvtxDomainDestroy": 76,
}
DEFAULT_EVENT_CLASSES = {"TRACE_PROCESS_EVENT_CUDA_RUNTIME": 0, "TRACE_PROCESS_EVENT_CUDA_DRIVER": 1}

KERNEL_TABLE = "CUPTI_ACTIVITY_KIND_KERNEL"
RUNTIME_TABLE = "CUPTI_ACTIVITY_KIND_RUNTIME"
NVTX_TABLE = "NVTX_EVENTS"
STRINGS_TABLE = "StringIds"
EXPORT_META_TABLES = ("META_DATA_EXPORT", "EXPORT_META_DATA")
GRAPH_NODE_TABLES = ("CUDA_GRAPH_NODE_EVENTS", "CUDA_GRAPH_EVENTS")

# Other spellings of the columns align reads: (table, the name align's SQL uses) -> the names other
# nsys releases give it. An export spelling one otherwise is read through a view that restores
# align's name (:func:`adapt_sqlite`, and the DuckDB engine's twin), so a column renamed by a new
# nsys release is one entry here, and a renamed table one more name in the tuples above.
COLUMN_SPELLINGS: dict[tuple[str, str], tuple[str, ...]] = {}


def renamed_columns(tables: frozenset[str], columns_of) -> dict[str, dict[str, str]]:
    """{table: {align's name: this export's spelling}} for the columns this export spells otherwise;
    ``columns_of(table)`` gives a table's column names."""
    out: dict[str, dict[str, str]] = {}
    for (table, name), others in COLUMN_SPELLINGS.items():
        if table not in tables:
            continue
        cols = columns_of(table)
        found = next((o for o in others if o in cols), None)
        if name not in cols and found is not None:
            out.setdefault(table, {})[name] = found
    return out


def view_select(renames: dict[str, str], source: str) -> str:
    """The SELECT of a view over ``source`` that adds each column under align's name (rowid kept)."""
    extra = ", ".join(f'"{theirs}" AS "{ours}"' for ours, theirs in renames.items())
    return f"SELECT rowid AS rowid, *, {extra} FROM {source}"


def adapt_sqlite(conn: sqlite3.Connection) -> dict[str, dict[str, str]]:
    """Shadow each table of ``conn`` that spells a column otherwise with a TEMP view of the same name
    (SQLite looks in temp before main); returns the renames made."""
    tables = frozenset(r[0] for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'"))
    renames = renamed_columns(tables, lambda t: {r[1] for r in conn.execute(f'PRAGMA main.table_info("{t}")')})
    for table, cols in renames.items():
        conn.execute(f'CREATE TEMP VIEW IF NOT EXISTS "{table}" AS {view_select(cols, f"main.{table}")}')
    return renames


# globalTid = [vm/host bits][24-bit pid][24-bit tid]; globalPid has the tid bits cleared.
def string_join(alias: str, id_expr: str) -> str:
    """SQL joining the string of id ``id_expr`` as ``alias.value`` (the export's string table)."""
    return f"LEFT JOIN {STRINGS_TABLE} AS {alias} ON {alias}.id = {id_expr}"


PID_SQL = "(({col} >> 24) & 16777215)"
TID_SQL = "({col} & 16777215)"
PID_MASK = "~16777215"  # clears the tid bits; a literal 0xFFFFFFFFFF000000 would overflow int64 in SQL


def pid_of(col: str) -> str:
    return PID_SQL.format(col=col)


def tid_of(col: str) -> str:
    return TID_SQL.format(col=col)


class Schema:
    """Tables, columns and enum codes of one export, read once."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.renames = adapt_sqlite(conn)
        self._columns: dict[str, frozenset[str]] = {}

    @cached_property
    def tables(self) -> frozenset[str]:
        return frozenset(r[0] for r in self.conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'"))

    def has(self, table: str) -> bool:
        return table in self.tables

    def columns(self, table: str) -> frozenset[str]:
        if not self.has(table):
            return frozenset()
        if table not in self._columns:  # PRAGMA finds a TEMP view of adapt_sqlite before the table
            self._columns[table] = frozenset(r[1] for r in self.conn.execute(f'PRAGMA table_info("{table}")'))
        return self._columns[table]

    def col(self, table: str, column: str, alias: str | None = None, prefix: str | None = None,
            default: str = "NULL") -> str:
        """``prefix.column AS alias`` when the column exists, else ``default AS alias``."""
        alias = alias or column
        if column in self.columns(table):
            return f"{prefix + '.' if prefix else ''}{column} AS {alias}"
        return f"{default} AS {alias}"

    def first_table(self, names: tuple[str, ...], needs: str | None = None) -> str | None:
        for t in names:
            if self.has(t) and (needs is None or needs in self.columns(t)):
                return t
        return None

    def _enum(self, table: str, defaults: dict[str, int]) -> dict[str, int]:
        if self.has(table) and {"id", "name"} <= self.columns(table):
            rows = self.conn.execute(f"SELECT name, id FROM {table}").fetchall()
            if rows:
                return {name: int(i) for name, i in rows}
        return dict(defaults)

    @cached_property
    def event_types(self) -> dict[str, int]:
        """NVTX and other event type codes by name, from ``ENUM_NSYS_EVENT_TYPE``."""
        return self._enum("ENUM_NSYS_EVENT_TYPE", DEFAULT_EVENT_TYPES)

    @cached_property
    def event_classes(self) -> dict[str, int]:
        return self._enum("ENUM_NSYS_EVENT_CLASS", DEFAULT_EVENT_CLASSES)

    def event_type(self, name: str) -> int:
        return self.event_types.get(name, DEFAULT_EVENT_TYPES.get(name, -1))

    @cached_property
    def export_meta(self) -> dict[str, str]:
        table = self.first_table(EXPORT_META_TABLES)
        if table is None:
            return {}
        return {k: v for k, v in self.conn.execute(f"SELECT name, value FROM {table}")}

    @cached_property
    def capture_meta(self) -> dict[str, str]:
        if not self.has("META_DATA_CAPTURE"):
            return {}
        return {k: v for k, v in self.conn.execute("SELECT name, value FROM META_DATA_CAPTURE")}

    @property
    def schema_version(self) -> str | None:
        return self.export_meta.get("EXPORT_SCHEMA_VERSION")

    @property
    def product_version(self) -> str | None:
        return self.export_meta.get("EXPORT_PRODUCT_VERSION")

    @cached_property
    def graph_node_table(self) -> str | None:
        # 2022.4's CUDA_GRAPH_EVENTS held node creation; newer ones reuse that name for graph-level
        # events (graphId, no graphNodeId), so the column decides.
        return self.first_table(GRAPH_NODE_TABLES, needs="graphNodeId")
