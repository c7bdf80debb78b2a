"""CPU-side NVTX range statistics: the numbers of ``nsys stats --report nvtx_sum``.

What a profile without GPU work (a CPU program, or CUDA traced but never called) can still say:
how long each range took on the CPU, per range name and style.
"""

from __future__ import annotations

import pandas as pd

from align.attribute.ranges import load_ranges
from align.profile.reader import Profile
from align.numbers import group_stats, round_tenth

NVTX_SUM_HEADER = {"time_pct": "Time (%)", "total_ns": "Total Time (ns)", "instances": "Instances",
                   "avg_ns": "Avg (ns)", "med_ns": "Med (ns)", "min_ns": "Min (ns)", "max_ns": "Max (ns)",
                   "stddev_ns": "StdDev (ns)", "style": "Style", "range": "Range"}


def nvtx_sum(profile: Profile) -> pd.DataFrame:
    """Per (range name, style): total, instances, avg, med, min, max and stddev of the ranges'
    durations, and their share of all range time; ranges that never ended are left out, as nsys does."""
    r = load_ranges(profile).df
    closed = r[r["open_end"] == 0]
    df = pd.DataFrame({"range": closed["name"].astype(str), "style": closed["style"].astype(str),
                       "dur": (closed["end"] - closed["start"]).astype("int64")})
    if df.empty:
        return pd.DataFrame(columns=list(NVTX_SUM_HEADER))
    s = group_stats(df, ["range", "style"], "dur").reset_index()
    out = pd.DataFrame({"total_ns": s["total"].astype("int64"), "instances": s["count"].astype("int64"),
                        "avg_ns": s["avg"], "med_ns": s["med"], "min_ns": s["min"].astype("int64"),
                        "max_ns": s["max"].astype("int64"), "stddev_ns": s["stddev"], "style": s["style"],
                        "range": s["range"]})
    out.insert(0, "time_pct", (out["total_ns"] * 100.0 / out["total_ns"].sum()).map(round_tenth))
    out = out.sort_values(["total_ns", "instances", "range"], ascending=[False, False, True], kind="stable")
    return out.reset_index(drop=True)
