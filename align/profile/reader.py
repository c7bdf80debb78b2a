"""Read an nsys SQLite export into pandas, whatever nsys version wrote it.

The file is opened read-only and never modified. Accessors return one DataFrame each, with ids
decoded (pid/tid from globalPid/globalTid, names from StringIds, codes from the ENUM tables).
Summaries are computed in SQL (``align.stats``); the accessors here load whole tables, so use them
for inspection, or pass ``where``/``limit`` on large profiles.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
from pathlib import Path

from align.lazy import np, pd

from align.errors import AlignError, ProfileError
from align.profile import check
from align.profile.engine import Engine, readonly_uri
from align.rows import Rows
from align.profile.schema import (KERNEL_TABLE, NVTX_TABLE, PID_MASK, RUNTIME_TABLE, STRINGS_TABLE, Schema, pid_of,
                                  string_join, tid_of)

SQLITE_MAGIC = b"SQLite format 3\x00"

NVTX_STYLES = {
    "NvtxPushPopRange": "PushPop",
    "NvtxtPushPopRange": "PushPop",
    "NvtxStartEndRange": "StartEnd",
    "NvtxtStartEndRange": "StartEnd",
    "NvtxMark": "Mark",
}


def is_sqlite(path: str | os.PathLike) -> bool:
    """True for a complete SQLite header (an interrupted nsys export leaves a zeroed one)."""
    try:
        with open(path, "rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except OSError:
        return False


NSYS_REPORT_MAGIC = b"NVIDIA "  # an .nsys-rep (or .qdrep) opens "NVIDIA Tegra Profiler Report"


def check_file(path: Path) -> None:
    """Raise the one line that says what ``path`` is when it is no SQLite file to read as it lies:
    missing, a folder, unreadable, empty, an nsys report not yet exported, a broken header, or a
    write left beside it unfinished (a hot journal, or a WAL file not yet merged)."""
    export = f"align export {path.with_suffix('.nsys-rep')}"
    if not path.exists():
        raise ProfileError(f"{path}: no such file", "pass an nsys SQLite export or .nsys-rep")
    if path.is_dir():
        raise ProfileError(f"{path} is a folder, not an export file", "pass the .sqlite file inside it, or its store name")
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise ProfileError(f"cannot read {path}: {(exc.strerror or str(exc)).lower()}",
                           "check the file's permissions (ls -l), or read it as its owner") from None
    if not head:
        raise ProfileError(f"{path} is empty (0 bytes): an interrupted export leaves one", f"re-export it: {export}")
    if head.startswith(NSYS_REPORT_MAGIC):
        raise ProfileError(f"{path} is an nsys report (.nsys-rep), not its SQLite export",
                           "give it a name ending in .nsys-rep and pass that (align exports it), or run align export on it")
    if head != SQLITE_MAGIC:
        raise ProfileError(f"{path} is not an SQLite file (an interrupted export leaves a broken one)",
                           f"re-export it: {export}")
    for suffix, what, fix in (("-journal", "a program is writing it, or stopped mid-write", "roll that write back"),
                              ("-wal", "it is in WAL mode, with writes not yet merged into it", "merge them")):
        beside = path.with_name(path.name + suffix)
        if beside.is_file() and beside.stat().st_size > 0:
            raise ProfileError(f"{path}: {what} ({beside.name} lies beside it)",
                               f"wait for the writing program; if none runs, {fix} by opening it once: "
                               f"sqlite3 {path} 'PRAGMA wal_checkpoint(TRUNCATE)' (or {export})")


def _open_readonly(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(readonly_uri(path), uri=True, check_same_thread=False)
    try:
        conn.execute("SELECT sqrt(4.0)")
    except sqlite3.OperationalError:  # SQLite built without its math functions
        conn.create_function("sqrt", 1, lambda x: None if x is None else math.sqrt(x), deterministic=True)
    return conn


class Profile:
    """One nsys SQLite export. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        check_file(self.path)
        check.opened(self.path)
        self.conn = _open_readonly(self.path)
        try:
            self.schema = Schema(self.conn)
            self.engine = Engine(self.path, self.conn, self.schema.renames)
            self._strings: pd.Series | None = None
            self._has_kernels: bool | None = None
            if not self.schema.export_meta and not self.schema.has(STRINGS_TABLE):
                raise ProfileError(f"{self.path} is an SQLite file but not an nsys export",
                                   "export a report with: align export REPORT.nsys-rep")
            check.validate(self.conn, self.path)
        except BaseException:
            self.conn.close()
            raise

    def __enter__(self) -> "Profile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.engine.close()
        self.conn.close()

    def __repr__(self) -> str:
        return f"Profile({str(self.path)!r}, nsys {self.product_version}, schema {self.schema_version})"

    # ---- metadata -------------------------------------------------------------------------
    @property
    def schema_version(self) -> str | None:
        return self.schema.schema_version

    @property
    def product_version(self) -> str | None:
        return self.schema.product_version

    @property
    def export_meta(self) -> dict[str, str]:
        return dict(self.schema.export_meta)

    @property
    def capture_meta(self) -> dict[str, str]:
        return dict(self.schema.capture_meta)

    @property
    def has_kernels(self) -> bool:
        """Whether the export holds a kernel: nsys writes no table for none, and an emptied one holds none."""
        if self._has_kernels is None:
            self._has_kernels = self.schema.has(KERNEL_TABLE) and self.conn.execute(
                f"SELECT 1 FROM {KERNEL_TABLE} LIMIT 1").fetchone() is not None
        return self._has_kernels

    @property
    def has_nvtx(self) -> bool:
        return self.schema.has(NVTX_TABLE)

    @property
    def has_cuda_api(self) -> bool:
        return self.schema.has(RUNTIME_TABLE)

    def require(self, what: str) -> Profile:
        """This profile, when it holds ``what`` (kernels or nvtx); else the one-line error that says how
        to capture it."""
        if what == "kernels" and not self.has_kernels:
            raise AlignError(f"{self.path} has no CUDA kernel data",
                             "profile the program's CUDA activity (align profile traces it by default) on a GPU machine")
        if what == "nvtx" and not self.has_nvtx:
            raise AlignError(f"{self.path} has no NVTX data",
                             "mark ranges with NVTX and keep NVTX in the trace (align profile traces it by default)")
        return self

    def sql(self, query: str, params: tuple | dict = ()) -> pd.DataFrame:
        """Run a read-only query; the escape hatch for anything the accessors do not cover."""
        return pd.read_sql_query(query, self.conn, params=params)

    def frame(self, query: str) -> pd.DataFrame:
        """A large read-only query on the columnar engine (DuckDB when installed); portable SQL only."""
        return self.engine.frame(query)

    def strings(self) -> pd.Series:
        """The export's strings by id (kernel names, range texts): one read, shared by every user."""
        if self._strings is None:
            self._strings = self.sql(f"SELECT id, value FROM {STRINGS_TABLE}").set_index("id")["value"]
        return self._strings

    def count(self, table: str) -> int:
        if not self.schema.has(table):
            return 0
        return int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def summary(self) -> dict:
        """What the profile holds: versions, row counts, GPUs, time span."""
        span = None
        if self.schema.has("ANALYSIS_DETAILS"):
            row = self.conn.execute("SELECT startTime, stopTime, duration FROM ANALYSIS_DETAILS").fetchone()
            if row:
                span = {"start_ns": row[0], "stop_ns": row[1], "duration_ns": row[2]}
        return {
            "path": str(self.path),
            "nsys_version": self.product_version,
            "schema_version": self.schema_version,
            "kernels": self.count(KERNEL_TABLE),
            "nvtx_events": self.count(NVTX_TABLE),
            "cuda_api_calls": self.count(RUNTIME_TABLE),
            "memcpy": self.count("CUPTI_ACTIVITY_KIND_MEMCPY"),
            "memset": self.count("CUPTI_ACTIVITY_KIND_MEMSET"),
            "graph_node_events": self.count(self.schema.graph_node_table) if self.schema.graph_node_table else 0,
            "gpus": self._gpu_names(),
            "processes": self.process_count(),
            "session": span,
            "has_kernels": self.has_kernels,
            "cuda_graph_trace": next((v for k, v in self.schema.capture_meta.items()
                                      if k.endswith("CUDA_GRAPH_TRACE_OPTIONS:MODE")), None),
        }

    # ---- kernels ---------------------------------------------------------------------------
    def kernels(self, where: str | None = None, limit: int | None = None, launch: bool = True) -> pd.DataFrame:
        """One row per kernel execution, in start order.

        ``launch`` joins the CUDA API call that launched it (by correlationId within the process,
        as nsys does) to add the launching thread and API name.
        """
        if not self.has_kernels:
            return pd.DataFrame(columns=KERNEL_COLUMNS)
        df = self.sql(self._kernel_query(where, limit, launch))
        df["name"] = df["demangled_name"].fillna(df["short_name"])
        return df

    def kernel_rows(self, where: str | None = None, limit: int | None = None, launch: bool = True) -> Rows:
        """:meth:`kernels` as plain rows, for a caller that needs no DataFrame."""
        if not self.has_kernels:
            return Rows(list(KERNEL_COLUMNS))
        cur = self.conn.execute(self._kernel_query(where, limit, launch))
        cols = [d[0] for d in cur.description]
        dn, sn = cols.index("demangled_name"), cols.index("short_name")
        return Rows(cols + ["name"], [r + (r[dn] if r[dn] is not None else r[sn],) for r in cur])

    def _kernel_query(self, where: str | None, limit: int | None, launch: bool) -> str:
        s = self.schema
        k = KERNEL_TABLE
        cols = [
            "k.start AS start", "k.end AS end", "k.end - k.start AS duration",
            s.col(k, "deviceId", "device_id", "k"), s.col(k, "contextId", "context_id", "k"),
            s.col(k, "greenContextId", "green_context_id", "k"), s.col(k, "streamId", "stream_id", "k"),
            s.col(k, "correlationId", "correlation_id", "k"),
            f"{pid_of('k.globalPid')} AS pid" if "globalPid" in s.columns(k) else "NULL AS pid",
            s.col(k, "graphNodeId", "graph_node_id", "k"), s.col(k, "gridId", "grid_id", "k"),
            s.col(k, "gridX", "grid_x", "k"), s.col(k, "gridY", "grid_y", "k"), s.col(k, "gridZ", "grid_z", "k"),
            s.col(k, "blockX", "block_x", "k"), s.col(k, "blockY", "block_y", "k"), s.col(k, "blockZ", "block_z", "k"),
            s.col(k, "registersPerThread", "registers_per_thread", "k"),
            s.col(k, "staticSharedMemory", "static_shared_memory", "k"),
            s.col(k, "dynamicSharedMemory", "dynamic_shared_memory", "k"),
            s.col(k, "launchType", "launch_type", "k"),
            "dn.value AS demangled_name", "sn.value AS short_name", "mn.value AS mangled_name",
        ]
        joins = [
            self._string_join(k, "demangledName", "dn"),
            self._string_join(k, "shortName", "sn"),
            self._string_join(k, "mangledName", "mn"),
        ]
        if launch and self.has_cuda_api and {"correlationId", "globalPid"} <= s.columns(k):
            cols += [f"{tid_of('r.globalTid')} AS tid", "rn.value AS launch_api"]
            joins.append(
                f"LEFT JOIN {RUNTIME_TABLE} AS r ON r.correlationId = k.correlationId "
                f"AND (r.globalTid & {PID_MASK}) = k.globalPid " + string_join("rn", "r.nameId")
            )
        else:
            cols += ["NULL AS tid", "NULL AS launch_api"]
        q = f"SELECT {', '.join(cols)} FROM {k} AS k {' '.join(joins)}"
        if where:
            q += f" WHERE {where}"
        q += " ORDER BY k.start, k.correlationId" if "correlationId" in s.columns(k) else " ORDER BY k.start"
        if limit is not None:
            q += f" LIMIT {int(limit)}"
        return q

    def _string_join(self, table: str, column: str, alias: str) -> str:
        if column in self.schema.columns(table):
            return string_join(alias, f"k.{column}")
        return f"LEFT JOIN (SELECT NULL AS id, NULL AS value) AS {alias} ON 0"

    # ---- NVTX ------------------------------------------------------------------------------
    def nvtx(self, marks: bool = True) -> pd.DataFrame:
        """NVTX ranges (push/pop and start/end) and, with ``marks``, instantaneous marks.

        ``text`` is resolved from ``text`` or the registered-string ``textId``; ``domain`` and
        ``category`` are named from their create events in the same process; ``depth`` is the
        push/pop nesting level on the thread (0 = outermost).
        """
        s = self.schema
        if not self.has_nvtx:
            return pd.DataFrame(columns=NVTX_COLUMNS)
        et = s.event_type
        styles = {et(name): style for name, style in NVTX_STYLES.items() if et(name) >= 0}
        if not marks:
            styles = {code: st for code, st in styles.items() if st != "Mark"}
        n = NVTX_TABLE
        cols = [
            "e.start AS start", "e.end AS end", "e.end - e.start AS duration", "e.eventType AS event_type",
            f"{self._nvtx_text_sql()} AS text", s.col(n, "domainId", "domain_id", "e", "0"),
            s.col(n, "category", "category_id", "e"), s.col(n, "color", "color", "e"),
            s.col(n, "rangeId", "range_id", "e"), s.col(n, "globalTid", "global_tid", "e"),
            s.col(n, "endGlobalTid", "end_global_tid", "e"),
            f"{pid_of('e.globalTid')} AS pid", f"{tid_of('e.globalTid')} AS tid",
        ]
        codes = ",".join(str(c) for c in styles)
        df = self.sql(f"SELECT {', '.join(cols)} FROM {n} AS e {self._nvtx_text_join()} "
                      f"WHERE e.eventType IN ({codes}) ORDER BY e.globalTid, e.start, e.end DESC")
        df[["end", "duration"]] = df[["end", "duration"]].astype("Int64")
        df["style"] = df["event_type"].map(styles)
        df = self._name_domains(df)
        df["depth"] = _pushpop_depth(df)
        return df.sort_values(["start", "depth"], kind="stable").reset_index(drop=True)

    def _name_domains(self, df: pd.DataFrame) -> pd.DataFrame:
        et = self.schema.event_type
        names = self.sql(
            f"SELECT {pid_of('e.globalTid')} AS pid, e.domainId AS domain_id, e.category AS category_id, "
            f"e.eventType AS event_type, {self._nvtx_text_sql()} AS text FROM {NVTX_TABLE} AS e "
            f"{self._nvtx_text_join()} WHERE e.eventType IN ({et('NvtxDomainCreate')}, {et('NvtxCategory')})"
        ) if "domainId" in self.schema.columns(NVTX_TABLE) else pd.DataFrame(
            columns=["pid", "domain_id", "category_id", "event_type", "text"])
        domains = names[names["event_type"] == et("NvtxDomainCreate")][["pid", "domain_id", "text"]]
        domains = domains.drop_duplicates(["pid", "domain_id"], keep="last").rename(columns={"text": "domain"})
        cats = names[names["event_type"] == et("NvtxCategory")][["pid", "domain_id", "category_id", "text"]]
        cats = cats.drop_duplicates(["pid", "domain_id", "category_id"], keep="last").rename(columns={"text": "category"})
        df = df.merge(domains, on=["pid", "domain_id"], how="left")
        df = df.merge(cats, on=["pid", "domain_id", "category_id"], how="left")
        return df

    def _nvtx_text_sql(self) -> str:
        """Range text: inline ``text``, or a registered string through ``textId`` (use with _nvtx_text_join)."""
        return "coalesce(e.text, sid.value)" if "textId" in self.schema.columns(NVTX_TABLE) else "e.text"

    def _nvtx_text_join(self) -> str:
        return string_join("sid", "e.textId") if "textId" in self.schema.columns(NVTX_TABLE) else ""

    # ---- CUDA API, graphs, devices, processes ----------------------------------------------
    def cuda_api(self, where: str | None = None) -> pd.DataFrame:
        """CUDA runtime and driver API calls (both live in one table; ``api`` says which)."""
        if not self.has_cuda_api:
            return pd.DataFrame(columns=API_COLUMNS)
        df = self.sql(self._api_query(where))
        df["base_name"] = df["name"].str.replace(API_VERSION, "", regex=True)
        return df

    def cuda_api_rows(self, where: str | None = None, limit: int | None = None) -> Rows:
        """:meth:`cuda_api` as plain rows (the first ``limit``), for a caller that needs no DataFrame."""
        if not self.has_cuda_api:
            return Rows(list(API_COLUMNS))
        cur = self.conn.execute(self._api_query(where) + (f" LIMIT {int(limit)}" if limit is not None else ""))
        cols = [d[0] for d in cur.description]
        at = cols.index("name")
        version = re.compile(API_VERSION)
        return Rows(cols + ["base_name"], [r + (version.sub("", r[at]) if r[at] is not None else None,) for r in cur])

    def _api_query(self, where: str | None) -> str:
        s = self.schema
        r = RUNTIME_TABLE
        classes = s.event_classes
        runtime = classes.get("TRACE_PROCESS_EVENT_CUDA_RUNTIME", 0)
        driver = classes.get("TRACE_PROCESS_EVENT_CUDA_DRIVER", 1)
        api = (f"CASE r.eventClass WHEN {runtime} THEN 'runtime' WHEN {driver} THEN 'driver' ELSE 'other' END"
               if "eventClass" in s.columns(r) else "NULL")
        q = (f"SELECT r.start AS start, r.end AS end, r.end - r.start AS duration, {api} AS api, "
             f"n.value AS name, {s.col(r, 'correlationId', 'correlation_id', 'r')}, "
             f"{s.col(r, 'returnValue', 'return_value', 'r')}, "
             f"{pid_of('r.globalTid')} AS pid, {tid_of('r.globalTid')} AS tid "
             f"FROM {r} AS r {string_join('n', 'r.nameId')}")
        if where:
            q += f" WHERE {where}"
        return q + " ORDER BY r.start"

    def graph_nodes(self) -> pd.DataFrame:
        """CUDA graph node creation events: captured nodes and their instantiated clones."""
        t = self.schema.graph_node_table
        if t is None:
            return pd.DataFrame(columns=["start", "end", "pid", "tid", "graph_node_id", "original_graph_node_id", "name"])
        s = self.schema
        return self.sql(
            f"SELECT g.start AS start, g.end AS end, {pid_of('g.globalTid')} AS pid, {tid_of('g.globalTid')} AS tid, "
            f"g.graphNodeId AS graph_node_id, {s.col(t, 'originalGraphNodeId', 'original_graph_node_id', 'g')}, "
            f"n.value AS name FROM {t} AS g {string_join('n', 'g.nameId')} ORDER BY g.start"
        )

    def graph_node_origins(self) -> pd.DataFrame:
        """For each graph node id that kernels can carry, the captured node it was cloned from and
        when and on which thread that node was created (its capture-time call).

        nsys writes two creation events for an instantiated node (one without, one with
        ``originalGraphNodeId``); captured nodes have no original and map to themselves.
        """
        g = self.graph_nodes()
        cols = ["graph_node_id", "original_graph_node_id", "capture_start", "capture_pid", "capture_tid"]
        if g.empty:
            return pd.DataFrame(columns=cols)
        orig = g.groupby("graph_node_id")["original_graph_node_id"].max()
        root = orig.fillna(pd.Series(orig.index, index=orig.index, dtype="float64")).astype("int64")
        first = g.drop_duplicates("graph_node_id").set_index("graph_node_id")
        out = pd.DataFrame({"graph_node_id": root.index.astype("int64"), "original_graph_node_id": root.to_numpy()})
        created = first.loc[out["original_graph_node_id"].where(out["original_graph_node_id"].isin(first.index),
                                                                out["graph_node_id"])]
        out["capture_start"] = created["start"].to_numpy()
        out["capture_pid"] = created["pid"].to_numpy()
        out["capture_tid"] = created["tid"].to_numpy()
        return out[cols]

    def _gpu_names(self) -> list[str]:
        if "name" not in self.schema.columns("TARGET_INFO_GPU"):
            return []
        return [r[0] for r in self.conn.execute("SELECT name FROM TARGET_INFO_GPU")]

    def process_count(self) -> int:
        """len(self.processes()), counted in SQLite."""
        if not self.schema.has("PROCESSES"):
            return 0
        active = self._active_pids()
        return sum(1 for (pid,) in self.conn.execute(f"SELECT {pid_of('globalPid')} FROM PROCESSES") if pid in active)

    def gpus(self) -> pd.DataFrame:
        if not self.schema.has("TARGET_INFO_GPU"):
            return pd.DataFrame(columns=["device_id", "name"])
        df = self.sql("SELECT * FROM TARGET_INFO_GPU")
        return df.rename(columns={"id": "device_id"})

    def processes(self, all: bool = False) -> pd.DataFrame:
        """Processes in the report; by default only those with traced activity (PROCESSES lists the whole machine)."""
        if not self.schema.has("PROCESSES"):
            return pd.DataFrame(columns=["pid", "name"])
        df = self.sql(f"SELECT {pid_of('globalPid')} AS pid, name, globalPid AS global_pid FROM PROCESSES")
        if all:
            return df
        active = self._active_pids()
        return df[df["pid"].isin(active)].reset_index(drop=True)

    def _active_pids(self) -> set[int]:
        parts = []
        for table, col in ((NVTX_TABLE, "globalTid"), (RUNTIME_TABLE, "globalTid"), (KERNEL_TABLE, "globalPid"),
                           ("OSRT_API", "globalTid")):
            if self.schema.has(table):
                parts.append(f"SELECT DISTINCT {pid_of(col)} AS pid FROM {table}")
        if not parts:
            return set()
        return {int(r[0]) for r in self.conn.execute(" UNION ".join(parts))}

    def threads(self, all: bool = False) -> pd.DataFrame:
        """Threads with traced activity (NVTX, CUDA API, OS runtime) and their names where nsys has one;
        ``all`` lists every named thread on the machine instead."""
        named = (self.sql("SELECT t.globalTid AS global_tid, s.value AS name, t.priority AS priority "
                          f"FROM ThreadNames AS t {string_join('s', 't.nameId')}")
                 if self.schema.has("ThreadNames") else pd.DataFrame(columns=["global_tid", "name", "priority"]))
        named = named.drop_duplicates("global_tid", keep="last")
        if all:
            df = named
        else:
            parts = [f"SELECT DISTINCT globalTid AS global_tid FROM {t}"
                     for t in (NVTX_TABLE, RUNTIME_TABLE, "OSRT_API") if self.schema.has(t)]
            active = self.sql(" UNION ".join(parts)) if parts else pd.DataFrame(columns=["global_tid"])
            df = active.merge(named, on="global_tid", how="left")
        gt = df["global_tid"].to_numpy(dtype=np.int64)
        df.insert(0, "pid", (gt >> 24) & 0xFFFFFF)
        df.insert(1, "tid", gt & 0xFFFFFF)
        return df.sort_values(["pid", "tid"]).reset_index(drop=True)


KERNEL_COLUMNS = [
    "start", "end", "duration", "device_id", "context_id", "green_context_id", "stream_id", "correlation_id",
    "pid", "graph_node_id", "grid_id", "grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z",
    "registers_per_thread", "static_shared_memory", "dynamic_shared_memory", "launch_type",
    "demangled_name", "short_name", "mangled_name", "tid", "launch_api", "name",
]
NVTX_COLUMNS = [
    "start", "end", "duration", "event_type", "text", "domain_id", "category_id", "color", "range_id",
    "global_tid", "end_global_tid", "pid", "tid", "style", "domain", "category", "depth",
]
API_VERSION = r"_v\d+$"  # cudaLaunchKernel_v7000 -> cudaLaunchKernel
API_COLUMNS = ["start", "end", "duration", "api", "name", "correlation_id", "return_value", "pid", "tid", "base_name"]


def _pushpop_depth(df: pd.DataFrame) -> pd.Series:
    """Nesting level of each push/pop range on its thread, from a sweep over open/close events.

    Push/pop ranges nest properly per thread, so the depth at a range's start is the number of
    ranges opened before it on that thread and not yet closed. Vectorised: no per-row Python.
    """
    depth = pd.Series(pd.NA, index=df.index, dtype="Int64")
    pp = df[(df["style"] == "PushPop") & df["end"].notna()]
    if pp.empty:
        return depth
    n = len(pp)
    start = pp["start"].to_numpy(np.int64)
    end = pp["end"].to_numpy(np.int64)
    tid = np.concatenate([pp["global_tid"].to_numpy(np.int64)] * 2)
    # Doubled times let a zero-length range close just after its own open.
    time = np.concatenate([2 * start, 2 * end + (end == start)])
    delta = np.concatenate([np.ones(n, np.int64), -np.ones(n, np.int64)])
    # At equal times a close comes before an open (siblings touching); among opens at the same
    # time the longer range is the parent and opens first. Each thread's opens and closes
    # balance, so the running sum starts from zero on every thread.
    tiebreak = np.concatenate([-end, np.zeros(n, np.int64)])
    order = np.lexsort((tiebreak, delta, time, tid))
    level_before = np.cumsum(delta[order]) - delta[order]
    is_open = order < n
    result = np.empty(n, np.int64)
    result[order[is_open]] = level_before[is_open]
    depth.loc[pp.index] = result
    return depth
