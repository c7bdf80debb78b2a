#!/usr/bin/env python3
"""Synthetic scale-up of a real profile: its kernel, memcpy, memset, CUDA API, NVTX and graph-node
rows replicated N times, each copy shifted past the previous one in time, with correlation ids,
graph node ids and NVTX row ids kept unique. The result is a valid nsys export with the real
rows' names, nesting and timing, only longer. It says so in its META_DATA_EXPORT
(``ALIGN_SYNTHETIC_SCALEUP``).

    python bench/scaleup.py SOURCE.sqlite OUT.sqlite --copies N
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import time
from pathlib import Path

ROW_TABLES = {
    # table: (time columns, id columns offset per copy)
    "CUPTI_ACTIVITY_KIND_KERNEL": (("start", "end"), ("correlationId", "graphNodeId")),
    "CUPTI_ACTIVITY_KIND_MEMCPY": (("start", "end"), ("correlationId", "graphNodeId")),
    "CUPTI_ACTIVITY_KIND_MEMSET": (("start", "end"), ("correlationId", "graphNodeId")),
    "CUPTI_ACTIVITY_KIND_RUNTIME": (("start", "end"), ("correlationId",)),
    "NVTX_EVENTS": (("start", "end"), ()),
    "CUDA_GRAPH_NODE_EVENTS": (("start", "end"), ("graphNodeId", "originalGraphNodeId")),
}
NVTX_REPLICATED = (34, 59, 60, 70, 71)  # marks and ranges; domain/category definitions stay single


def scale_up(source: Path, out: Path, copies: int) -> dict:
    shutil.copyfile(source, out)
    db = sqlite3.connect(out)
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    lo, hi = db.execute(
        "SELECT min(m), max(x) FROM (SELECT min(start) AS m, max(end) AS x FROM CUPTI_ACTIVITY_KIND_RUNTIME "
        "UNION ALL SELECT min(start), max(coalesce(end, start)) FROM NVTX_EVENTS "
        "UNION ALL SELECT min(start), max(end) FROM CUPTI_ACTIVITY_KIND_KERNEL)").fetchone()
    span = (hi - lo) + 1_000_000  # a 1 ms gap between copies
    corr_span = 1 + max(db.execute(f"SELECT coalesce(max(correlationId), 0) FROM {t}").fetchone()[0]
                        for t in ("CUPTI_ACTIVITY_KIND_RUNTIME", "CUPTI_ACTIVITY_KIND_KERNEL") if t in tables)
    node_span = 1 << 40
    db.execute(f"CREATE TEMP TABLE copies AS WITH RECURSIVE c(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM c "
               f"WHERE k < {copies - 1}) SELECT k FROM c")
    t0 = time.perf_counter()
    for table, (times, ids) in ROW_TABLES.items():
        if table not in tables:
            continue
        cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
        exprs = []
        for c in cols:
            if c in times:
                exprs.append(f"{c} + c.k * {span}")
            elif c == "correlationId" and c in ids:
                exprs.append(f"{c} + c.k * {corr_span}")
            elif c in ids:
                exprs.append(f"{c} + c.k * {node_span}")
            else:
                exprs.append(c)
        where = f"WHERE t.eventType IN ({','.join(map(str, NVTX_REPLICATED))})" if table == "NVTX_EVENTS" else ""
        db.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(exprs)} FROM {table} AS t, copies AS c "
                   f"{where}")
        db.commit()
    meta = "META_DATA_EXPORT" if "META_DATA_EXPORT" in tables else "EXPORT_META_DATA"
    db.execute(f"INSERT INTO {meta} VALUES ('ALIGN_SYNTHETIC_SCALEUP', ?)",
               (f"{copies} copies of {source.name}, shifted by {span} ns",))
    db.execute("UPDATE ANALYSIS_DETAILS SET stopTime = stopTime + ?, duration = duration + ?",
               ((copies - 1) * span, (copies - 1) * span)) if "ANALYSIS_DETAILS" in tables else None
    db.commit()
    kernels = db.execute("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL").fetchone()[0]
    db.close()
    return {"kernels": kernels, "copies": copies, "seconds": round(time.perf_counter() - t0, 1),
            "mb": round(out.stat().st_size / 1e6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--copies", type=int, required=True)
    args = ap.parse_args()
    print(scale_up(args.source, args.out, args.copies))


if __name__ == "__main__":
    main()
