"""Build small synthetic nsys exports for edge cases the real profiles do not cover.

Table and column names follow the two real schemas we see (nsys 2022.4 / schema 3.0.0 and nsys
2025.3 / schema 3.20.3, see the shipped examples); only what a test asks for is written, as nsys
writes tables lazily.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

PID = 4242
VM = 1 << 48


def gtid(pid: int, tid: int) -> int:
    return VM | (pid << 24) | tid


def gpid(pid: int) -> int:
    return VM | (pid << 24)


class Synth:
    def __init__(self, path: Path, schema: str = "3.20.3"):
        self.path = Path(path)
        self.schema = schema
        self.new = schema != "3.0.0"
        self.conn = sqlite3.connect(self.path)
        self.strings: dict[str, int] = {}
        self.conn.execute("CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL)")
        meta = "META_DATA_EXPORT" if self.new else "EXPORT_META_DATA"
        self.conn.execute(f"CREATE TABLE {meta} (name TEXT, value TEXT)")
        product = "2025.3.2.0" if self.new else "2022.4.2.1"
        self.conn.executemany(f"INSERT INTO {meta} VALUES (?, ?)",
                              [("EXPORT_SCHEMA_VERSION", schema), ("EXPORT_PRODUCT_VERSION", product)])

    def sid(self, value: str | None) -> int | None:
        if value is None:
            return None
        if value not in self.strings:
            self.strings[value] = len(self.strings) + 1
            self.conn.execute("INSERT INTO StringIds VALUES (?, ?)", (self.strings[value], value))
        return self.strings[value]

    def enums(self) -> "Synth":
        self.conn.execute("CREATE TABLE ENUM_NSYS_EVENT_TYPE (id INTEGER PRIMARY KEY, name TEXT, label TEXT)")
        self.conn.executemany("INSERT INTO ENUM_NSYS_EVENT_TYPE VALUES (?, ?, ?)",
                              [(i, n, n) for n, i in [("NvtxCategory", 33), ("NvtxMark", 34), ("NvtxThread", 39),
                                                      ("NvtxPushPopRange", 59), ("NvtxStartEndRange", 60),
                                                      ("NvtxtPushPopRange", 70), ("NvtxtStartEndRange", 71),
                                                      ("NvtxDomainCreate", 75), ("NvtxDomainDestroy", 76)]])
        self.conn.execute("CREATE TABLE ENUM_NSYS_EVENT_CLASS (id INTEGER PRIMARY KEY, name TEXT, label TEXT)")
        self.conn.executemany("INSERT INTO ENUM_NSYS_EVENT_CLASS VALUES (?, ?, ?)",
                              [(0, "TRACE_PROCESS_EVENT_CUDA_RUNTIME", "CUDA runtime"),
                               (1, "TRACE_PROCESS_EVENT_CUDA_DRIVER", "CUDA driver")])
        return self

    def nvtx_table(self) -> None:
        extra = ", binaryData BLOB" if self.new else ""
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS NVTX_EVENTS (start INTEGER NOT NULL, end INTEGER, eventType INTEGER NOT NULL, "
            "rangeId INTEGER, category INTEGER, color INTEGER, text TEXT, globalTid INTEGER, endGlobalTid INTEGER, "
            "textId INTEGER, domainId INTEGER, uint64Value INTEGER, int64Value INTEGER, doubleValue REAL, "
            f"uint32Value INTEGER, int32Value INTEGER, floatValue REAL, jsonTextId INTEGER, jsonText TEXT{extra})")

    def nvtx(self, start: int, end: int | None, text: str | None = None, *, tid: int = PID, pid: int = PID,
             event_type: int = 59, domain: int = 0, registered: bool = False, category: int | None = None) -> None:
        self.nvtx_table()
        text_col, text_id = (None, self.sid(text)) if registered else (text, None)
        self.conn.execute(
            "INSERT INTO NVTX_EVENTS (start, end, eventType, category, text, globalTid, textId, domainId) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (start, end, event_type, category, text_col, gtid(pid, tid), text_id, domain))

    def kernel_table(self) -> None:
        green = "greenContextId INTEGER, " if self.new else ""
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS CUPTI_ACTIVITY_KIND_KERNEL (start INTEGER NOT NULL, end INTEGER NOT NULL, "
            f"deviceId INTEGER, contextId INTEGER, {green}streamId INTEGER, correlationId INTEGER, globalPid INTEGER, "
            "demangledName INTEGER, shortName INTEGER, mangledName INTEGER, launchType INTEGER, cacheConfig INTEGER, "
            "registersPerThread INTEGER, gridX INTEGER, gridY INTEGER, gridZ INTEGER, blockX INTEGER, blockY INTEGER, "
            "blockZ INTEGER, staticSharedMemory INTEGER, dynamicSharedMemory INTEGER, localMemoryPerThread INTEGER, "
            "localMemoryTotal INTEGER, gridId INTEGER, sharedMemoryExecuted INTEGER, graphNodeId INTEGER, "
            "sharedMemoryLimitConfig INTEGER)")

    def kernel(self, start: int, end: int, name: str, *, short: str | None = None, mangled: str | None = None,
               corr: int = 0, pid: int = PID, grid=(1, 1, 1), block=(128, 1, 1), stream: int = 7,
               graph_node: int | None = None) -> None:
        self.kernel_table()
        self.conn.execute(
            "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL (start, end, deviceId, contextId, streamId, correlationId, "
            "globalPid, demangledName, shortName, mangledName, gridX, gridY, gridZ, blockX, blockY, blockZ, "
            "registersPerThread, staticSharedMemory, dynamicSharedMemory, graphNodeId) "
            "VALUES (?, ?, 0, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 32, 0, 0, ?)",
            (start, end, stream, corr, gpid(pid), self.sid(name), self.sid(short or name), self.sid(mangled),
             *grid, *block, graph_node))

    def runtime(self, start: int, end: int, name: str, corr: int, *, pid: int = PID, tid: int = PID,
                event_class: int = 0) -> None:
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS CUPTI_ACTIVITY_KIND_RUNTIME (start INTEGER NOT NULL, end INTEGER NOT NULL, "
            "eventClass INTEGER NOT NULL, globalTid INTEGER, correlationId INTEGER, nameId INTEGER NOT NULL, "
            "returnValue INTEGER NOT NULL, callchainId INTEGER)")
        self.conn.execute("INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME VALUES (?, ?, ?, ?, ?, ?, 0, NULL)",
                          (start, end, event_class, gtid(pid, tid), corr, self.sid(name)))

    def graph_node(self, start: int, node: int, original: int | None, *, pid: int = PID, tid: int = PID) -> None:
        table = "CUDA_GRAPH_NODE_EVENTS" if self.new else "CUDA_GRAPH_EVENTS"
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (start INTEGER NOT NULL, end INTEGER, eventClass INTEGER NOT NULL, "
            "globalTid INTEGER, nameId INTEGER NOT NULL, graphNodeId INTEGER NOT NULL, originalGraphNodeId INTEGER)")
        self.conn.execute(f"INSERT INTO {table} VALUES (?, ?, 77, ?, ?, ?, ?)",
                          (start, start + 10, gtid(pid, tid), self.sid("Graph Node Creation"), node, original))

    def process(self, pid: int, name: str) -> None:
        self.conn.execute("CREATE TABLE IF NOT EXISTS PROCESSES (globalPid INTEGER, pid INTEGER, name TEXT)")
        self.conn.execute("INSERT INTO PROCESSES VALUES (?, ?, ?)", (gpid(pid), pid, name))

    def gpu(self, device_id: int, name: str) -> None:
        self.conn.execute("CREATE TABLE IF NOT EXISTS TARGET_INFO_GPU (vmId INTEGER, id INTEGER, name TEXT, "
                          "smCount INTEGER, chipName TEXT)")
        self.conn.execute("INSERT INTO TARGET_INFO_GPU VALUES (?, ?, ?, 132, 'GH100')", (VM, device_id, name))

    def close(self) -> Path:
        self.conn.commit()
        self.conn.close()
        return self.path
