"""NVTX → GPU projection: which GPU work each NVTX range launched, at launch time or at capture time.

Launch time is nsys's rule (``nvtx_gpu_proj_sum`` / ``nvtx_kern_sum``): an op belongs to every
range on the launching thread that encloses its API call. For a kernel replayed from a CUDA graph
(``--cuda-graph-trace=node``) that is the range around ``cudaGraphLaunch``; the ranges around
the *capture* of its node (the per-layer ranges of a graph-replayed decode step) are found from
``graphNodeId`` → the node it was cloned from → that node's creation call, matched the same way.

Each call is matched once, to its innermost push/pop range; sums over "every enclosing range"
are then pushed up the range tree level by level, so no (range, kernel) pairs are built.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from align.attribute.launches import KEY_SHIFT, GpuOps, load_gpu_ops
from align.attribute.nvtx_rows import PROJ_SUM_HEADER
from align.attribute.ranges import NO_RANGE, Ranges, innermost_pushpop, load_ranges, startend_pairs
from align.profile.reader import Profile
from align.numbers import group_stats, round_tenth

KERN_SUM_HEADER = {
    "range": "NVTX Range", "style": "Style", "pid": "PID", "tid": "TID", "range_instances": "NVTX Inst",
    "kernel_instances": "Kern Inst", "total_ns": "Total Time (ns)", "avg_ns": "Avg (ns)", "med_ns": "Med (ns)",
    "min_ns": "Min (ns)", "max_ns": "Max (ns)", "stddev_ns": "StdDev (ns)", "kernel": "Kernel Name",
}
VM_MASK = ~((1 << 48) - 1)


@dataclass
class Membership:
    """(range index, item index) pairs: item i lies in range r."""

    range_idx: np.ndarray
    item_idx: np.ndarray


@dataclass
class Located:
    """Where a set of intervals (calls, or node captures) sit among the ranges."""

    inner: np.ndarray          # innermost enclosing push/pop range, or -1
    se_ranges: np.ndarray      # start/end ranges enclosing ...
    se_items: np.ndarray       # ... these intervals

    def members(self, r: Ranges) -> Membership:
        """Every (range, interval) enclosure: the push/pop chain up from ``inner``, plus start/end ranges."""
        ranges, items = [self.se_ranges], [self.se_items]
        idx = np.flatnonzero(self.inner >= 0)
        cur = self.inner[idx]
        while len(cur):
            ranges.append(cur)
            items.append(idx)
            cur = r.pp_parent[cur]
            keep = cur >= 0
            cur, idx = cur[keep], idx[keep]
        return Membership(np.concatenate(ranges), np.concatenate(items))


def locate(r: Ranges, gtid: np.ndarray, qstart: np.ndarray, qend: np.ndarray) -> Located:
    inner = innermost_pushpop(r, gtid, qstart, qend)
    se_r, se_q = startend_pairs(r, gtid, qstart, qend)
    return Located(inner=inner, se_ranges=se_r, se_items=se_q)


class Projection:
    """Ranges, launch calls and who-contains-whom for one profile; computed once, queried many ways."""

    def __init__(self, profile: Profile, where: str | None = None, call_durations: bool = False,
                 raw_names: bool = False):
        """``where``: an SQL condition on globalPid/deviceId keeping one process or GPU (see
        align.profile.processes.gpu_filter); ``call_durations``: keep how long each launching CUDA
        API call took (``launches["api_ns"]``, int32, -1 where the call was not traced);
        ``raw_names``: name layer-wise markers by their whole text, not their module path."""
        self.profile = profile
        self.ranges: Ranges = load_ranges(profile, raw_names)
        self.gpu: GpuOps = load_gpu_ops(profile, where)
        L = self.gpu.launches
        self.calls: Located = locate(self.ranges, L["gtid"].to_numpy(np.int64), L["api_start"].to_numpy(np.int64),
                                     L["api_end"].to_numpy(np.int64))
        # the calls' intervals are only needed to place them; keep memory for the rest
        api_ns = None
        if call_durations:
            api_ns = np.where(L["gtid"].to_numpy() >= 0, np.minimum(L["api_end"].to_numpy() - L["api_start"].to_numpy(),
                                                                    np.iinfo(np.int32).max), -1).astype(np.int32)
        self.gpu.launches = L.drop(columns=["api_start", "api_end"])
        if api_ns is not None:
            self.gpu.launches["api_ns"] = api_ns

    def without_spans(self) -> None:
        """Drop the launched work's spans (only nsys's projection sums read them): less memory for
        a caller that needs which range holds each launch, not how long it ran."""
        self.gpu.launches = self.gpu.launches.drop(columns=["op_start", "op_end"])

    def release_gpu_ops(self) -> None:
        """Free the GPU-op tables once a caller has taken what it needs; ranges and calls stay."""
        self.gpu = None

    # ---- nsys's launch-time view ------------------------------------------------------------
    @cached_property
    def range_projection(self) -> pd.DataFrame:
        """Per range: projected start/end over the GPU work its calls launched, and the number of
        those calls (= distinct correlation ids). Ranges that launched nothing are absent."""
        r, L, c = self.ranges, self.gpu.launches, self.calls
        n = len(r)
        # one spare slot (index n) collects the calls that lie in no range
        lo = np.full(n + 1, np.iinfo(np.int64).max, np.int64)
        hi = np.full(n + 1, np.iinfo(np.int64).min, np.int64)
        op_start, op_end = L["op_start"].to_numpy(np.int64), L["op_end"].to_numpy(np.int64)
        slot = np.where(c.inner >= 0, c.inner, n)
        np.minimum.at(lo, slot, op_start)
        np.maximum.at(hi, slot, op_end)
        cnt = np.bincount(slot, minlength=n + 1).astype(np.int64)
        del slot
        lo, hi, cnt = lo[:n], hi[:n], cnt[:n]
        depth = r.pp_depth
        for d in range(int(depth.max()) if n else 0, 0, -1):  # children's totals into their parents
            idx = np.flatnonzero((depth == d) & (cnt > 0))
            par = r.pp_parent[idx]
            np.minimum.at(lo, par, lo[idx])
            np.maximum.at(hi, par, hi[idx])
            np.add.at(cnt, par, cnt[idx])
        if len(c.se_ranges):
            se = pd.DataFrame({"r": c.se_ranges, "s": op_start[c.se_items], "e": op_end[c.se_items]}).groupby("r").agg(
                s=("s", "min"), e=("e", "max"), n=("s", "size"))
            idx = se.index.to_numpy()
            lo[idx], hi[idx], cnt[idx] = se["s"].to_numpy(), se["e"].to_numpy(), se["n"].to_numpy()
        has = np.flatnonzero(cnt > 0)
        return pd.DataFrame({"proj_start": lo[has], "proj_end": hi[has], "gpu_ops": cnt[has]}, index=has)

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
        return proj_sum_of(self.range_table())

    def kern_sum(self, name: str = "demangled") -> pd.DataFrame:
        """The rows of ``nsys stats --report nvtx_kern_sum``: kernels per (range, thread, kernel name);
        a kernel counts in every range that encloses its launch, and outside all ranges under no name."""
        ops = self.gpu.ops
        kern = ops[ops["kind"] == 0]
        names = kernel_names(self.profile, kern, name)
        m = self.calls.members(self.ranges)
        pairs = pd.DataFrame({"range": m.range_idx, "launch": m.item_idx})
        k = pd.DataFrame({"kernel": kern.index.to_numpy(), "launch": kern["launch"].to_numpy(),
                          "duration": (kern["end"] - kern["start"]).to_numpy(), "kernel_name": names})
        inside = k.merge(pairs, on="launch", how="inner")
        outside = k[~k["kernel"].isin(inside["kernel"])].assign(range=NO_RANGE)
        rows = pd.concat([inside, outside], ignore_index=True)
        L = self.gpu.launches
        launch = rows["launch"].to_numpy()
        ok = launch >= 0
        safe = np.maximum(launch, 0)
        rows["pid"] = np.where(ok, (L["key"].to_numpy()[safe] >> KEY_SHIFT) if len(L) else 0, -1)
        rows["tid"] = np.where(ok, (L["gtid"].to_numpy()[safe] & 0xFFFFFF) if len(L) else 0, -1)
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

    # ---- capture-time view of CUDA-graph kernels --------------------------------------------
    @cached_property
    def captures(self) -> tuple[pd.DataFrame, Located]:
        """Graph nodes (as ``graph_node_origins``) and where each node's capture sits among the ranges."""
        origins = self.profile.graph_node_origins()
        if origins.empty:
            return origins, Located(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64))
        gt = (origins["capture_pid"].to_numpy(np.int64) << 24) | origins["capture_tid"].to_numpy(np.int64)
        gt = gt | self._vm_bits()
        t = origins["capture_start"].to_numpy(np.int64)
        return origins, locate(self.ranges, gt, t, t)

    @property
    def capture_members(self) -> tuple[pd.DataFrame, Membership]:
        origins, loc = self.captures
        return origins, loc.members(self.ranges)

    @property
    def call_members(self) -> Membership:
        return self.calls.members(self.ranges)

    def _vm_bits(self) -> int:
        """The high bits of globalTid above pid and tid (the same for every thread of a capture)."""
        for arr in (self.ranges.gtid, self.gpu.launches["gtid"].to_numpy()):
            if len(arr):
                return int(arr[0]) & VM_MASK
        return 0


def kernel_names(profile: Profile, kern: pd.DataFrame, name: str = "demangled") -> np.ndarray:
    """Names of kernel rows by id (short names fall back to demangled ones)."""
    strings = profile.strings()
    ids = kern["short_id"].where(kern["short_id"] >= 0, kern["name_id"]) if name == "short" else kern["name_id"]
    return strings.reindex(ids.to_numpy()).to_numpy(dtype=object)


def nvtx_gpu_proj_sum(profile: Profile) -> pd.DataFrame:
    return Projection(profile).gpu_proj_sum()


def nvtx_kern_sum(profile: Profile, name: str = "demangled") -> pd.DataFrame:
    return Projection(profile).kern_sum(name)


PROJ_SUM_INPUT = ["name", "style", "proj_duration", "range_duration", "gpu_ops", "level", "children"]


def proj_sum_of(t: pd.DataFrame) -> pd.DataFrame:
    """``nvtx_gpu_proj_sum`` rows from range-table rows (:meth:`Projection.range_table`, at least
    ``PROJ_SUM_INPUT``): of one report, or of several concatenated."""
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
