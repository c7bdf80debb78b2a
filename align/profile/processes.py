"""Processes and ranks of a profile, and the SQL filter that restricts analyses to one of them.

A system-wide capture of a server holds every worker process (one per GPU, like MPI ranks). The
rank of a process is read from the GPU it runs its kernels on when each such process uses one
GPU of its own: rank r is the process on device r, as TP/PP engines place ranks.
"""

from __future__ import annotations

from align.lazy import pd

from align.errors import AlignError, arg
from align.profile.reader import Profile
from align.profile.schema import KERNEL_TABLE, NVTX_TABLE, RUNTIME_TABLE, pid_of


def process_table(profile: Profile) -> pd.DataFrame:
    """One row per process with traced activity: kernels and their devices, NVTX and CUDA API counts."""
    procs = profile.processes()
    s = profile.schema
    parts = {}
    if s.has(KERNEL_TABLE):
        k = profile.sql(f"SELECT {pid_of('globalPid')} AS pid, count(*) AS kernels, "
                        f"group_concat(DISTINCT deviceId) AS devices FROM {KERNEL_TABLE} GROUP BY 1")
        parts["k"] = k.set_index("pid")
    for table, col in ((NVTX_TABLE, "nvtx_events"), (RUNTIME_TABLE, "cuda_api_calls")):
        if s.has(table):
            parts[col] = profile.sql(f"SELECT {pid_of('globalTid')} AS pid, count(*) AS {col} FROM {table} "
                                     f"GROUP BY 1").set_index("pid")
    df = procs[["pid", "name"]].set_index("pid")
    for part in parts.values():
        df = df.join(part, how="outer")
    df = df.reset_index()
    for col in ("kernels", "nvtx_events", "cuda_api_calls"):
        df[col] = df[col].fillna(0).astype("int64") if col in df else 0
    if "devices" not in df:
        df["devices"] = None
    df["rank"] = _ranks(df)
    return df[["pid", "name", "rank", "devices", "kernels", "nvtx_events", "cuda_api_calls"]].sort_values(
        ["rank", "pid"], na_position="last").reset_index(drop=True)


def _ranks(df: pd.DataFrame) -> pd.Series:
    gpu = df[df["kernels"] > 0]
    single = gpu["devices"].astype(str).str.fullmatch(r"\d+")
    if len(gpu) == 0 or not single.all() or gpu["devices"].duplicated().any():
        return pd.Series([pd.NA] * len(df), dtype="Int64")
    by_pid = dict(zip(gpu["pid"], gpu["devices"].astype(int)))
    return df["pid"].map(by_pid).astype("Int64")


def gpu_filter(profile: Profile, pid: int | None = None, device: int | None = None, rank: int | None = None
               ) -> str | None:
    """An SQL condition on GPU-work tables (globalPid, deviceId) for one process, device or rank."""
    if rank is not None:
        if pid is not None:
            raise AlignError(f"{arg('rank')} and {arg('pid')} both pick a process", "pass one of them")
        table = process_table(profile)
        hit = table[table["rank"] == rank]
        if hit.empty:
            ranks = table["rank"].dropna().tolist()
            raise AlignError(f"no rank {rank} in {profile.path}",
                             f"ranks found: {ranks}" if ranks else "ranks are known only when every GPU process "
                             f"uses one GPU of its own; pass {arg('pid', 'PID')} (see align processes)")
        pid = int(hit.iloc[0]["pid"])
    if pid is not None or device is not None:
        table = process_table(profile)
        working = table[table["kernels"] > 0]
        if pid is not None and pid not in set(working["pid"]):
            raise AlignError(f"no process {pid} with GPU work in {profile.path}",
                             f"processes with kernels: {sorted(int(x) for x in working['pid'])} (see align processes)")
        devices = {d for ds in working["devices"].dropna() for d in str(ds).split(",") if d.strip()}
        if device is not None and str(device) not in {d.strip() for d in devices}:
            raise AlignError(f"no GPU {device} ran kernels in {profile.path}",
                             f"GPUs with kernels: {', '.join(sorted(d.strip() for d in devices)) or 'none'}")
    conds = []
    if pid is not None:
        conds.append(f"{pid_of('globalPid')} = {int(pid)}")
    if device is not None:
        conds.append(f"deviceId = {int(device)}")
    return " AND ".join(conds) or None
