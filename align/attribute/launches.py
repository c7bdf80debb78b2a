"""GPU work joined to the CPU call that launched it.

nsys gives every kernel, memcpy and memset the ``correlationId`` of its launching CUDA API call;
ids are unique per process, so the join key is (pid, correlation id). A CUDA-graph launch is one
call whose correlation id is shared by every node it replays.

Rows are streamed from the profile in chunks and folded into compact numpy arrays: the GPU ops'
keys are sorted once to give one row per launch with the span of its work, and the CUDA API table
is then streamed past that sorted key array. Peak memory stays a few arrays of the launch count,
which matters at millions of kernels (bench/attribution.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from align.lazy import np, pd

from align.profile.reader import Profile
from align.profile.schema import KERNEL_TABLE, RUNTIME_TABLE

GPU_OP_TABLES = {"kernel": KERNEL_TABLE, "memcpy": "CUPTI_ACTIVITY_KIND_MEMCPY", "memset": "CUPTI_ACTIVITY_KIND_MEMSET"}
KIND_CODES = {"kernel": 0, "memcpy": 1, "memset": 2}
KIND_NAMES = ("kernel", "memcpy", "memset")
KEY_SHIFT = 40  # key = pid << 40 | correlation id
PID = "((({col}) >> 24) & 16777215)"
KEY = f"(({PID} << {KEY_SHIFT}) | coalesce(correlationId, 0))"


def ops_query(profile: Profile, extra: bool, where: str | None = None) -> str | None:
    """GPU work of all kinds; ``where`` (on globalPid/deviceId) keeps one process or device."""
    parts = []
    s = profile.schema
    for kind, table in GPU_OP_TABLES.items():
        if not s.has(table):
            continue
        cols = s.columns(table)
        select = [f"{KEY.format(col='globalPid')} AS key", "start", '"end"']
        if extra:
            is_kernel = kind == "kernel"
            select = [f"{KIND_CODES[kind]} AS kind"] + select + [
                f"coalesce({'demangledName' if is_kernel and 'demangledName' in cols else 'NULL'}, -1) AS name_id",
                f"coalesce({'shortName' if is_kernel and 'shortName' in cols else 'NULL'}, -1) AS short_id",
                f"coalesce({'graphNodeId' if 'graphNodeId' in cols else 'NULL'}, -1) AS graph_node_id",
            ]
        parts.append(f"SELECT {', '.join(select)} FROM {table}" + (f" WHERE {where}" if where else ""))
    return " UNION ALL ".join(parts) if parts else None


def _count_ops(profile: Profile, where: str | None = None) -> int:
    if not where:
        return sum(profile.count(t) for t in GPU_OP_TABLES.values())
    return sum(int(profile.conn.execute(f"SELECT count(*) FROM {t} WHERE {where}").fetchone()[0])
               for t in GPU_OP_TABLES.values() if profile.schema.has(t))


def _fill(profile: Profile, query: str, n: int, dtypes: dict[str, type]) -> dict[str, np.ndarray]:
    """Stream a query's rows into preallocated arrays of length ``n``."""
    out = {c: np.empty(n, dt) for c, dt in dtypes.items()}
    at = 0
    for chunk in profile.engine.chunks(query):
        k = len(chunk)
        for c in dtypes:
            out[c][at:at + k] = chunk[c].to_numpy()
        at += k
    return {c: a[:at] for c, a in out.items()}


def load_launches(profile: Profile, where: str | None = None) -> pd.DataFrame:
    """One row per launch (pid, correlation id) in key order: the span of the GPU work it
    launched and, where the CUDA API was traced, the launching call's thread and interval
    (``gtid`` -1 where it was not)."""
    cols = ("key", "gtid", "api_start", "api_end", "op_start", "op_end")
    query = ops_query(profile, extra=False, where=where)
    if query is None:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols})
    ops = _fill(profile, query, _count_ops(profile, where), {"key": np.int64, "start": np.int64, "end": np.int64})
    order = np.argsort(ops["key"], kind="stable")
    for c in ("key", "start", "end"):  # permute one column at a time to keep one spare copy at most
        ops[c] = ops[c][order]
    del order
    key = ops.pop("key")
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    launch_key = key[first]
    del key
    op_start = np.minimum.reduceat(ops.pop("start"), first) if len(first) else np.empty(0, np.int64)
    op_end = np.maximum.reduceat(ops.pop("end"), first) if len(first) else np.empty(0, np.int64)
    del first
    n = len(launch_key)
    gtid = np.full(n, -1, np.int64)
    api_start = np.zeros(n, np.int64)
    api_end = np.zeros(n, np.int64)
    if profile.schema.has(RUNTIME_TABLE) and n:
        rq = f'SELECT {KEY.format(col="globalTid")} AS key, globalTid AS gtid, start, "end" FROM {RUNTIME_TABLE}'
        for chunk in profile.engine.chunks(rq):
            k = chunk["key"].to_numpy(np.int64)
            pos = np.searchsorted(launch_key, k)
            pos_c = np.minimum(pos, n - 1)
            hit = (launch_key[pos_c] == k)
            hit &= gtid[pos_c] < 0  # the first call with that key wins
            idx = pos_c[hit]
            gtid[idx] = chunk["gtid"].to_numpy(np.int64)[hit]
            api_start[idx] = chunk["start"].to_numpy(np.int64)[hit]
            api_end[idx] = chunk["end"].to_numpy(np.int64)[hit]
    # copy=False: keep the arrays as they are instead of consolidating them into one new block
    return pd.DataFrame({"key": launch_key, "gtid": gtid, "api_start": api_start, "api_end": api_end,
                         "op_start": op_start, "op_end": op_end}, copy=False)


def load_ops(profile: Profile, launches: pd.DataFrame, where: str | None = None) -> pd.DataFrame:
    """One row per GPU operation (kernels, then memcpy, then memset, each in table order) with
    its kind code, times, name ids, graph node (-1 if none) and launch row (-1 if its launch
    call was not traced)."""
    dtypes = {"kind": np.int8, "key": np.int64, "start": np.int64, "end": np.int64, "name_id": np.int32,
              "short_id": np.int32, "graph_node_id": np.int64}
    query = ops_query(profile, extra=True, where=where)
    if query is None:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in ("kind", "start", "end", "name_id", "short_id",
                                                                     "graph_node_id", "launch")})
    ops = _fill(profile, query, _count_ops(profile, where), dtypes)
    launch_key = launches["key"].to_numpy(np.int64)
    traced = launches["gtid"].to_numpy(np.int64) >= 0
    pos = np.searchsorted(launch_key, ops["key"])
    n = len(launch_key)
    pos_c = np.minimum(pos, max(n - 1, 0))
    hit = (launch_key[pos_c] == ops["key"]) & traced[pos_c] if n else np.zeros(len(pos), bool)
    del ops["key"]
    ops["launch"] = np.where(hit, pos_c, -1)
    return pd.DataFrame(ops, copy=False)


@dataclass
class GpuOps:
    """Launch calls and (on demand) the GPU operations of a profile."""

    profile: Profile
    launches: pd.DataFrame
    where: str | None = None
    _ops: pd.DataFrame | None = None

    @property
    def ops(self) -> pd.DataFrame:
        if self._ops is None:
            self._ops = load_ops(self.profile, self.launches, self.where)
        return self._ops

    @property
    def traced(self) -> np.ndarray:
        """Launches whose CUDA API call is in the profile."""
        return self.launches["gtid"].to_numpy() >= 0


def load_gpu_ops(profile: Profile, where: str | None = None) -> GpuOps:
    return GpuOps(profile=profile, launches=load_launches(profile, where), where=where)
