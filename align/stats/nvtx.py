"""CPU-side NVTX range statistics: the numbers of ``nsys stats --report nvtx_sum``.

What a profile without GPU work (a CPU program, or CUDA traced but never called) can still say:
how long each range took on the CPU, per range name and style. Built as plain rows (no pandas):
the ranges are one SQL read and the groups are few.
"""

from __future__ import annotations

from align.lazy import pd

from align.attribute.markers import range_name
from align.attribute.nvtx_rows import range_rows
from align.numbers import plain_stats, round_tenth
from align.profile.reader import Profile
from align.rows import Rows

NVTX_SUM_HEADER = {"time_pct": "Time (%)", "total_ns": "Total Time (ns)", "instances": "Instances",
                   "avg_ns": "Avg (ns)", "med_ns": "Med (ns)", "min_ns": "Min (ns)", "max_ns": "Max (ns)",
                   "stddev_ns": "StdDev (ns)", "style": "Style", "range": "Range"}
DTYPES = {"time_pct": "float64", "total_ns": "int64", "instances": "int64", "avg_ns": "float64",
          "med_ns": "float64", "min_ns": "int64", "max_ns": "int64", "stddev_ns": "float64"}


def nvtx_sum_rows(profile: Profile, raw_names: bool = False) -> Rows:
    """Per (range name, style): total, instances, avg, med, min, max and stddev of the ranges'
    durations, and their share of all range time; ranges that never ended are left out, as nsys does.
    Layer-wise markers are grouped by module path unless ``raw_names``."""
    return sum_rows_of(range_durations(profile, raw_names))


def range_durations(profile: Profile, raw_names: bool = False) -> dict[tuple[str, str], list[int]]:
    """The durations of the ranges that ended, per (``domain:text``, style): what one report's, or
    several reports' (their lists joined), :func:`sum_rows_of` is made of; a layer-wise marker's text
    is its module path (markers.shown) unless ``raw_names``."""
    groups: dict[tuple[str, str], list[int]] = {}
    for _, start, end, open_end, *_, domain, text, style in range_rows(profile):
        if not open_end:
            groups.setdefault((range_name(domain, text, raw_names), style), []).append(end - start)
    return groups


def sum_rows_of(groups: dict[tuple[str, str], list[int]]) -> Rows:
    whole = sum(sum(v) for v in groups.values())
    out = []
    for (name, style), durations in groups.items():
        total, n, avg, med, lo, hi, sd = plain_stats(durations)
        out.append((round_tenth(total * 100.0 / whole) if whole else None, total, n, avg, med, lo, hi, sd, style, name))
    return Rows(list(NVTX_SUM_HEADER), out).sort([("total_ns", False), ("instances", False), ("range", True)])


def nvtx_sum(profile: Profile) -> pd.DataFrame:
    """:func:`nvtx_sum_rows` as a DataFrame."""
    return nvtx_sum_rows(profile).to_frame(DTYPES)
