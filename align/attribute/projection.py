"""NVTX → GPU projection: which GPU work each NVTX range launched, at launch time or at capture time.

Launch time is nsys's rule (``nvtx_gpu_proj_sum`` / ``nvtx_kern_sum``): an op belongs to every
range on the launching thread that encloses its API call. For a kernel replayed from a CUDA graph
(``--cuda-graph-trace=node``) that is the range around ``cudaGraphLaunch``; the ranges around
the *capture* of its node (the per-layer ranges of a graph-replayed decode step) are found from
``graphNodeId`` → the node it was cloned from → that node's creation call, matched the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from align.attribute.launches import GpuOps, load_gpu_ops
from align.attribute.ranges import NO_RANGE, Ranges, innermost_pushpop, load_ranges, startend_pairs
from align.profile.reader import Profile
from align.stats.numbers import group_stats, round_tenth

PROJ_SUM_HEADER = {
    "range": "Range", "style": "Style", "total_proj_ns": "Total Proj Time (ns)",
    "total_range_ns": "Total Range Time (ns)", "instances": "Range Instances", "proj_avg_ns": "Proj Avg (ns)",
    "proj_med_ns": "Proj Med (ns)", "proj_min_ns": "Proj Min (ns)", "proj_max_ns": "Proj Max (ns)",
    "proj_stddev_ns": "Proj StdDev (ns)", "total_gpu_ops": "Total GPU Ops", "avg_gpu_ops": "Avg GPU Ops",
    "avg_level": "Avg Range Lvl", "avg_children": "Avg Num Child",
}
KERN_SUM_HEADER = {
    "range": "NVTX Range", "style": "Style", "pid": "PID", "tid": "TID", "range_instances": "NVTX Inst",
    "kernel_instances": "Kern Inst", "total_ns": "Total Time (ns)", "avg_ns": "Avg (ns)", "med_ns": "Med (ns)",
    "min_ns": "Min (ns)", "max_ns": "Max (ns)", "stddev_ns": "StdDev (ns)", "kernel": "Kernel Name",
}


@dataclass
class Membership:
    """(range index, item index) pairs: item i lies in range r. Items are calls or graph nodes."""

    range_idx: np.ndarray
    item_idx: np.ndarray


def enclosing(r: Ranges, gtid: np.ndarray, qstart: np.ndarray, qend: np.ndarray) -> tuple[np.ndarray, Membership]:
    """For each interval: its innermost push/pop range, and every (range, interval) enclosure pair
    (the push/pop chain up from the innermost one, plus start/end ranges)."""
    inner = innermost_pushpop(r, gtid, qstart, qend)
    ranges, items = [], []
    cur, idx = inner.copy(), np.arange(len(inner))
    keep = cur >= 0
    cur, idx = cur[keep], idx[keep]
    while len(cur):
        ranges.append(cur)
        items.append(idx)
        cur = r.pp_parent[cur]
        keep = cur >= 0
        cur, idx = cur[keep], idx[keep]
    se_r, se_q = startend_pairs(r, gtid, qstart, qend)
    ranges.append(se_r)
    items.append(se_q)
    return inner, Membership(np.concatenate(ranges) if ranges else np.empty(0, np.int64),
                             np.concatenate(items) if items else np.empty(0, np.int64))


class Projection:
    """Ranges, GPU ops and who-contains-whom for one profile; computed once, queried many ways."""

    def __init__(self, profile: Profile):
        self.profile = profile
        self.ranges: Ranges = load_ranges(profile)
        self.gpu: GpuOps = load_gpu_ops(profile)
        calls = self.gpu.calls
        self.call_inner, self.call_members = enclosing(
            self.ranges, calls["gtid"].to_numpy(np.int64), calls["start"].to_numpy(np.int64),
            calls["end"].to_numpy(np.int64))

    # ---- nsys's launch-time view ------------------------------------------------------------
    @cached_property
    def range_projection(self) -> pd.DataFrame:
        """Per range: projected start/end over the GPU ops its calls launched, and the number of
        those calls (= distinct correlation ids). Ranges that launched nothing are absent."""
        ops = self.gpu.ops
        launched = ops[ops["launch"] >= 0]
        per_call = launched.groupby("launch").agg(op_start=("start", "min"), op_end=("end", "max"))
        m = self.call_members
        pairs = pd.DataFrame({"range": m.range_idx, "launch": m.item_idx})
        pairs = pairs[pairs["launch"].isin(per_call.index)]
        pairs = pairs.join(per_call, on="launch")
        proj = pairs.groupby("range").agg(proj_start=("op_start", "min"), proj_end=("op_end", "max"),
                                          gpu_ops=("launch", "nunique"))
        return proj

    def range_table(self) -> pd.DataFrame:
        """Every range that launched GPU work, with nsys's trace columns (``nvtx_gpu_proj_trace``)."""
        r = self.ranges
        proj = self.range_projection
        df = r.df.iloc[proj.index].copy()
        df["proj_start"] = proj["proj_start"].to_numpy()
        df["proj_duration"] = (proj["proj_end"] - proj["proj_start"]).to_numpy()
        df["range_duration"] = df["end"] - df["start"]
        df["gpu_ops"] = proj["gpu_ops"].to_numpy()
        parents = r.parent
        has_ops = np.zeros(len(r), bool)
        has_ops[proj.index] = True
        child_counts = np.bincount(parents[(parents >= 0) & has_ops], minlength=len(r))
        df["children"] = child_counts[proj.index]
        df["level"] = np.where(r.level[proj.index] >= 0, r.level[proj.index], np.nan)
        df["parent"] = parents[proj.index]
        return df.reset_index().rename(columns={"index": "range_index"})

    def gpu_proj_sum(self) -> pd.DataFrame:
        """The numbers of ``nsys stats --report nvtx_gpu_proj_sum``, one row per (range name, style)."""
        t = self.range_table()
        if t.empty:
            return pd.DataFrame(columns=list(PROJ_SUM_HEADER))
        stats = group_stats(t, ["name", "style"], "proj_duration")
        extra = t.groupby(["name", "style"], sort=False).agg(
            total_range_ns=("range_duration", "sum"), total_gpu_ops=("gpu_ops", "sum"),
            avg_gpu_ops=("gpu_ops", "mean"), avg_level=("level", "mean"), avg_children=("children", "mean"))
        df = stats.join(extra).reset_index()
        for c in ("avg_gpu_ops", "avg_level", "avg_children"):
            df[c] = df[c].map(round_tenth).astype("float64")
        df = df.rename(columns={"name": "range", "total": "total_proj_ns", "count": "instances",
                                "avg": "proj_avg_ns", "med": "proj_med_ns", "min": "proj_min_ns",
                                "max": "proj_max_ns", "stddev": "proj_stddev_ns"})
        df = df.sort_values(["total_proj_ns", "range", "style"], ascending=[False, True, True], kind="stable")
        return df[list(PROJ_SUM_HEADER)].reset_index(drop=True)

    def kern_sum(self, name: str = "demangled") -> pd.DataFrame:
        """The rows of ``nsys stats --report nvtx_kern_sum``: kernels per (range, thread, kernel name);
        a kernel counts in every range that encloses its launch, and outside all ranges under no name."""
        ops = self.gpu.ops
        kern = ops[ops["kind"] == "kernel"]
        names = self._kernel_names(kern, name)
        m = self.call_members
        pairs = pd.DataFrame({"range": m.range_idx, "launch": m.item_idx})
        k = pd.DataFrame({"kernel": kern.index.to_numpy(), "launch": kern["launch"].to_numpy(),
                          "duration": (kern["end"] - kern["start"]).to_numpy(), "kernel_name": names})
        inside = k.merge(pairs, on="launch", how="inner")
        outside = k[~k["kernel"].isin(inside["kernel"])].assign(range=NO_RANGE)
        rows = pd.concat([inside, outside], ignore_index=True)
        calls = self.gpu.calls
        launch = rows["launch"].to_numpy()
        ok = launch >= 0
        rows["pid"] = np.where(ok, calls["pid"].to_numpy()[np.maximum(launch, 0)] if len(calls) else 0, -1)
        rows["tid"] = np.where(ok, (calls["gtid"].to_numpy()[np.maximum(launch, 0)] & 0xFFFFFF) if len(calls) else 0, -1)
        rdf = self.ranges.df
        rng = rows["range"].to_numpy()
        has = rng >= 0
        rows["range_name"] = np.where(has, rdf["name"].to_numpy()[np.maximum(rng, 0)] if len(rdf) else "", "")
        rows["style"] = np.where(has, rdf["style"].to_numpy()[np.maximum(rng, 0)] if len(rdf) else "", "")
        keys = ["pid", "tid", "range_name", "style", "kernel_name"]
        stats = group_stats(rows, keys, "duration")
        counts = rows.groupby(keys, sort=False).agg(
            range_instances=("range", lambda x: int((x[x >= 0]).nunique())), kernel_instances=("kernel", "nunique"))
        df = stats.join(counts).reset_index()
        df = df.rename(columns={"range_name": "range", "kernel_name": "kernel", "total": "total_ns", "avg": "avg_ns",
                                "med": "med_ns", "min": "min_ns", "max": "max_ns", "stddev": "stddev_ns"})
        df = df.sort_values(["range", "pid", "tid", "total_ns", "kernel"], ascending=[True, True, True, False, True],
                            kind="stable")
        df["range"] = df["range"].replace("", None)
        df["style"] = df["style"].replace("", None)
        df[["pid", "tid"]] = df[["pid", "tid"]].where(df[["pid", "tid"]] >= 0)
        return df[list(KERN_SUM_HEADER)].reset_index(drop=True)

    def _kernel_names(self, kern: pd.DataFrame, name: str) -> np.ndarray:
        strings = self.profile.sql("SELECT id, value FROM StringIds").set_index("id")["value"]
        col = {"demangled": "name_id", "short": "short_id"}.get(name, "name_id")
        ids = kern[col].fillna(kern["name_id"])
        return strings.reindex(ids.to_numpy()).to_numpy()

    # ---- capture-time view of CUDA-graph kernels --------------------------------------------
    @cached_property
    def capture_members(self) -> tuple[pd.DataFrame, Membership]:
        """Graph nodes (as ``graph_node_origins``) and the ranges enclosing each node's capture."""
        origins = self.profile.graph_node_origins()
        if origins.empty:
            return origins, Membership(np.empty(0, np.int64), np.empty(0, np.int64))
        gt = (origins["capture_pid"].to_numpy(np.int64) << 24) | origins["capture_tid"].to_numpy(np.int64)
        gt = gt | (self._vm_bits())
        t = origins["capture_start"].to_numpy(np.int64)
        _, members = enclosing(self.ranges, gt, t, t)
        return origins, members

    def _vm_bits(self) -> int:
        """The high bits of globalTid above pid and tid (same for every thread of a capture)."""
        if len(self.ranges):
            return int(self.ranges.gtid[0]) & ~((1 << 48) - 1)
        if len(self.gpu.calls):
            return int(self.gpu.calls["gtid"].iloc[0]) & ~((1 << 48) - 1)
        return 0


def nvtx_gpu_proj_sum(profile: Profile) -> pd.DataFrame:
    return Projection(profile).gpu_proj_sum()


def nvtx_kern_sum(profile: Profile, name: str = "demangled") -> pd.DataFrame:
    return Projection(profile).kern_sum(name)
