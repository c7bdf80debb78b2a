"""GPU work joined to the CPU call that launched it.

nsys gives every kernel, memcpy and memset the ``correlationId`` of its launching CUDA API call;
ids are unique per process, so the join also matches the process. A CUDA-graph launch is one
call whose correlation id is shared by every node it replays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from align.profile.reader import Profile
from align.profile.schema import KERNEL_TABLE, RUNTIME_TABLE

GPU_OP_TABLES = {"kernel": KERNEL_TABLE, "memcpy": "CUPTI_ACTIVITY_KIND_MEMCPY", "memset": "CUPTI_ACTIVITY_KIND_MEMSET"}
PID_BITS = 0xFFFFFF


@dataclass
class GpuOps:
    """One row per GPU operation (kernels first, then memcpy, memset), with its launch call.

    ``launch`` indexes :attr:`calls`; -1 when the call is not in the profile (CUDA API not traced).
    """

    ops: pd.DataFrame
    calls: pd.DataFrame


def load_gpu_ops(profile: Profile, kinds: tuple[str, ...] = ("kernel", "memcpy", "memset")) -> GpuOps:
    s = profile.schema
    frames = []
    for kind in kinds:
        table = GPU_OP_TABLES[kind]
        if not s.has(table):
            continue
        cols = s.columns(table)
        name = "demangledName" if kind == "kernel" and "demangledName" in cols else "NULL"
        short = "shortName" if kind == "kernel" and "shortName" in cols else "NULL"
        node = "graphNodeId" if "graphNodeId" in cols else "NULL"
        frames.append(profile.sql(
            f"SELECT '{kind}' AS kind, rowid AS row_id, start, end, correlationId AS corr, "
            f"(globalPid >> 24) & {PID_BITS} AS pid, {name} AS name_id, {short} AS short_id, {node} AS graph_node_id "
            f"FROM {table}"))
    ops = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["kind", "row_id", "start", "end", "corr", "pid", "name_id", "short_id", "graph_node_id"])
    calls = _calls(profile)
    ops["launch"] = _match(calls, ops)
    return GpuOps(ops=ops, calls=calls)


def _calls(profile: Profile) -> pd.DataFrame:
    if not profile.schema.has(RUNTIME_TABLE):
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in ("start", "end", "gtid", "pid", "corr", "name_id")})
    return profile.sql(
        f"SELECT start, end, globalTid AS gtid, (globalTid >> 24) & {PID_BITS} AS pid, correlationId AS corr, "
        f"nameId AS name_id FROM {RUNTIME_TABLE}")


def _match(calls: pd.DataFrame, ops: pd.DataFrame) -> np.ndarray:
    """Row of ``calls`` with the op's (pid, correlation id), by a sorted-key binary search."""
    out = np.full(len(ops), -1, np.int64)
    if calls.empty or ops.empty:
        return out
    key_c = (calls["pid"].to_numpy(np.int64) << 40) | calls["corr"].to_numpy(np.int64)
    key_o = (ops["pid"].to_numpy(np.int64) << 40) | ops["corr"].fillna(-1).to_numpy(np.int64)
    order = np.argsort(key_c, kind="stable")
    sorted_keys = key_c[order]
    pos = np.searchsorted(sorted_keys, key_o)
    hit = (pos < len(sorted_keys)) & (sorted_keys[np.minimum(pos, len(sorted_keys) - 1)] == key_o)
    out[hit] = order[pos[hit]]
    return out
