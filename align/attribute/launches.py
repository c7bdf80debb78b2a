"""GPU work joined to the CPU call that launched it.

nsys gives every kernel, memcpy and memset the ``correlationId`` of its launching CUDA API call;
ids are unique per process, so the join also matches the process. A CUDA-graph launch is one
call whose correlation id is shared by every node it replays. The join and the per-call spans
run in the profile's columnar engine; only the results come into Python, as compact columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from align.profile.reader import Profile
from align.profile.schema import KERNEL_TABLE, RUNTIME_TABLE

GPU_OP_TABLES = {"kernel": KERNEL_TABLE, "memcpy": "CUPTI_ACTIVITY_KIND_MEMCPY", "memset": "CUPTI_ACTIVITY_KIND_MEMSET"}
KIND_CODES = {"kernel": 0, "memcpy": 1, "memset": 2}
KIND_NAMES = np.array(["kernel", "memcpy", "memset"], dtype=object)
PID = "((({col}) >> 24) & 16777215)"


def _ops_union(profile: Profile, extra: bool) -> str | None:
    parts = []
    for kind, table in GPU_OP_TABLES.items():
        s = profile.schema
        if not s.has(table):
            continue
        cols = s.columns(table)
        select = [f"{KIND_CODES[kind]} AS kind", "start", '"end"', "correlationId AS corr",
                  f"{PID.format(col='globalPid')} AS pid"]
        if extra:
            is_kernel = kind == "kernel"
            select += [
                f"coalesce({'demangledName' if is_kernel and 'demangledName' in cols else 'NULL'}, -1) AS name_id",
                f"coalesce({'shortName' if is_kernel and 'shortName' in cols else 'NULL'}, -1) AS short_id",
                f"coalesce({'graphNodeId' if 'graphNodeId' in cols else 'NULL'}, -1) AS graph_node_id",
            ]
        parts.append(f"SELECT {', '.join(select)} FROM {table}")
    return " UNION ALL ".join(parts) if parts else None


def load_launches(profile: Profile) -> pd.DataFrame:
    """One row per CUDA API call that launched GPU work, ordered by (pid, correlation id):
    its thread (``gtid``), the call's interval and the span of the GPU work it launched."""
    empty = pd.DataFrame({c: pd.Series(dtype="int64") for c in
                          ("gtid", "api_start", "api_end", "op_start", "op_end", "pid", "corr")})
    ops = _ops_union(profile, extra=False)
    if ops is None or not profile.schema.has(RUNTIME_TABLE):
        return empty
    query = f"""
WITH o AS ({ops}),
per AS (SELECT pid, corr, min(start) AS op_start, max("end") AS op_end FROM o GROUP BY pid, corr),
rt AS (SELECT start, "end", globalTid AS gtid, {PID.format(col='globalTid')} AS pid, correlationId AS corr
       FROM {RUNTIME_TABLE})
SELECT rt.gtid AS gtid, rt.start AS api_start, rt."end" AS api_end, per.op_start AS op_start,
       per.op_end AS op_end, per.pid AS pid, per.corr AS corr
FROM per JOIN rt ON rt.pid = per.pid AND rt.corr = per.corr
ORDER BY per.pid, per.corr, rt.start
"""
    df = profile.frame(query)
    return df.astype({c: "int64" for c in empty.columns}) if len(df) else empty


def load_ops(profile: Profile, launches: pd.DataFrame) -> pd.DataFrame:
    """One row per GPU operation (kernels, then memcpy, then memset, each in table order) with
    its kind code, times, name ids, graph node (-1 if none) and launch row (-1 if not traced)."""
    cols = ("kind", "start", "end", "name_id", "short_id", "graph_node_id", "launch")
    ops = _ops_union(profile, extra=True)
    if ops is None:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols})
    df = profile.frame(f"SELECT * FROM ({ops}) AS o")
    key_l = (launches["pid"].to_numpy(np.int64) << 40) | launches["corr"].to_numpy(np.int64)
    key_o = (df["pid"].to_numpy(np.int64) << 40) | df["corr"].fillna(-1).to_numpy(np.int64)
    pos = np.searchsorted(key_l, key_o)
    hit = (pos < len(key_l)) & (key_l[np.minimum(pos, max(len(key_l) - 1, 0))] == key_o) if len(key_l) else \
        np.zeros(len(df), bool)
    out = pd.DataFrame({
        "kind": df["kind"].to_numpy(np.int8),
        "start": df["start"].to_numpy(np.int64),
        "end": df["end"].to_numpy(np.int64),
        "name_id": df["name_id"].to_numpy(np.int64),
        "short_id": df["short_id"].to_numpy(np.int64),
        "graph_node_id": df["graph_node_id"].to_numpy(np.int64),
        "launch": np.where(hit, pos, -1).astype(np.int64),
    })
    return out


@dataclass
class GpuOps:
    """Launch calls and (on demand) the GPU operations of a profile."""

    profile: Profile
    launches: pd.DataFrame
    _ops: pd.DataFrame | None = None

    @property
    def ops(self) -> pd.DataFrame:
        if self._ops is None:
            self._ops = load_ops(self.profile, self.launches)
        return self._ops


def load_gpu_ops(profile: Profile) -> GpuOps:
    return GpuOps(profile=profile, launches=load_launches(profile))
