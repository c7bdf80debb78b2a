"""NVTX ranges and their GPU projection as plain rows: ``align nvtx`` on a small export without pandas.

The columnar projection (``projection.py``) pays ~0.4 s to import pandas and numpy before it reads
a byte; on a mock-layer export of a few thousand ranges and launches the same rules run in plain
Python in a few milliseconds. Same rules, same order of ties: tests hold this module to the
columnar one on every shipped profile and every synthetic edge case, and both to nsys's reports.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from pathlib import Path

from align.attribute.markers import range_name
from align.errors import ProfileError
from align.numbers import plain_stats, round_tenth
from align.profile.reader import Profile
from align.profile.schema import NVTX_TABLE, RUNTIME_TABLE, pid_of, string_join
from align.rows import Rows

NO_RANGE = -1
# below this export size the plain projection answers first (bench/speed.py measures the crossing)
PLAIN_BELOW_BYTES = 8 << 20

RANGE_COLUMNS = ["range_id", "start", "end", "open_end", "gtid", "pid", "tid", "domain", "text", "style"]


def range_query(profile: Profile) -> str | None:
    """SQL for the ranges nsys's projection reports see (``RANGE_COLUMNS``, in table order), or
    None for a profile without an NVTX table. Shared by the columnar and the plain projection."""
    s = profile.schema
    if not s.has(NVTX_TABLE):
        return None
    et = s.event_type
    pp = [et("NvtxPushPopRange"), et("NvtxtPushPopRange")]
    se = [et("NvtxStartEndRange"), et("NvtxtStartEndRange")]
    codes = ",".join(str(c) for c in pp + se if c >= 0)
    ncols = s.columns(NVTX_TABLE)
    text = "coalesce(sid.value, e.text, '')" if "textId" in ncols else "coalesce(e.text, '')"
    text_join = string_join("sid", "e.textId") if "textId" in ncols else ""
    end_tid = "AND e.endGlobalTid IS NULL" if "endGlobalTid" in ncols else ""
    domain_text = "coalesce(dsid.value, d.text)" if "textId" in ncols else "d.text"
    domain_join = string_join("dsid", "d.textId") if "textId" in ncols else ""
    has_domain = "domainId" in ncols
    domains = (f"""domains AS (
        SELECT {pid_of('d.globalTid')} AS pid, d.domainId AS id, min({domain_text}) AS name
        FROM {NVTX_TABLE} AS d {domain_join}
        WHERE d.eventType = {et('NvtxDomainCreate')} GROUP BY 1, 2
    )""" if has_domain else "")
    domain_sel = "coalesce(dm.name, '')" if has_domain else "''"
    domain_on = (f"LEFT JOIN domains AS dm ON dm.id = e.domainId AND dm.pid = {pid_of('e.globalTid')}"
                 if has_domain else "")
    last = profile.conn.execute(f'SELECT max(start), max("end") FROM {NVTX_TABLE} WHERE eventType IN ({codes})').fetchone()
    maxts = max((v for v in last if v is not None), default=0)
    return f"""
{"WITH " + domains if has_domain else ""}
SELECT e.rowid AS range_id, e.start AS start, coalesce(e."end", {maxts}) AS "end",
       CASE WHEN e."end" IS NULL THEN 1 ELSE 0 END AS open_end,
       e.globalTid AS gtid, {pid_of('e.globalTid')} AS pid, (e.globalTid & 16777215) AS tid,
       {domain_sel} AS domain, {text} AS text,
       CASE WHEN e.eventType IN ({','.join(map(str, pp))}) THEN 'PushPop' ELSE 'StartEnd' END AS style
FROM {NVTX_TABLE} AS e {text_join} {domain_on}
WHERE e.eventType IN ({codes}) {end_tid}
"""


def damaged(profile: Profile) -> None:
    """Raise the one-line error for an export whose times are not integers (SQLite compares text
    with numbers where the columnar path fails to convert them)."""
    from align.profile.check import diagnose

    raise ProfileError(f"{profile.path}: {diagnose(profile.path) or 'range or launch times that are not integers'}")


def wants_plain(path: Path | str) -> bool:
    """Whether the export is small enough for the plain projection to beat importing pandas."""
    try:
        return Path(path).stat().st_size < PLAIN_BELOW_BYTES
    except OSError:
        return False


@dataclass
class PlainRanges:
    """The ranges of :func:`range_query` in pre-order per thread (thread, start, longest first),
    with the parent links of ``ranges.Ranges``: ``pp_parent`` (enclosing push/pop range),
    ``parent`` (nsys's tightest enclosing range of any style) and ``level`` (-1 on a cycle)."""

    rows: list[tuple]
    gtid: list[int]
    start: list[int]
    end: list[int]
    pushpop: list[bool]
    pp_parent: list[int]
    parent: list[int] = field(default_factory=list)
    level: list[int] = field(default_factory=list)
    # push/pop ranges per thread: (starts, range indices), in pre-order
    threads: dict[int, tuple[list[int], list[int]]] = field(default_factory=dict)
    raw_names: bool = False  # layer-wise markers by their whole text, not their module path

    def __len__(self) -> int:
        return len(self.rows)

    def name(self, i: int) -> str:
        r = self.rows[i]
        return range_name(r[7], r[8], self.raw_names)

    def innermost(self, gtid: int, qstart: int, qend: int) -> int:
        """The innermost push/pop range on ``gtid`` enclosing [qstart, qend], or -1."""
        thread = self.threads.get(gtid)
        if thread is None:
            return NO_RANGE
        pos = bisect_right(thread[0], qstart) - 1
        if pos < 0:
            return NO_RANGE
        c = thread[1][pos]
        while c >= 0 and self.end[c] < qend:
            c = self.pp_parent[c]
        return c


def range_rows(profile: Profile) -> list[tuple]:
    """The rows of :func:`range_query` (``RANGE_COLUMNS``), their times and threads checked to be
    integers (a damaged export is one line, not a traceback)."""
    query = range_query(profile)
    rows = profile.engine.rows(query)[1] if query else []
    if not all(type(r[1]) is int and type(r[2]) is int and type(r[4]) is int for r in rows):
        damaged(profile)
    return rows


def plain_ranges(profile: Profile, raw_names: bool = False) -> PlainRanges:
    rows = range_rows(profile)
    rows.sort(key=lambda r: (r[4], r[1], -r[2]))  # stable: ties keep table order
    gtid = [r[4] for r in rows]
    start = [r[1] for r in rows]
    end = [r[2] for r in rows]
    pushpop = [r[9] == "PushPop" for r in rows]
    r = PlainRanges(rows=rows, gtid=gtid, start=start, end=end, pushpop=pushpop,
                    pp_parent=_laminar_parents(gtid, start, end, pushpop), raw_names=raw_names)
    for i, pp in enumerate(pushpop):
        if pp:
            starts, idx = r.threads.setdefault(gtid[i], ([], []))
            starts.append(start[i])
            idx.append(i)
    r.parent = _tightest_parents(r)
    r.level = levels(r.parent)
    return r


def _laminar_parents(gtid: list[int], start: list[int], end: list[int], pushpop: list[bool]) -> list[int]:
    """Enclosing push/pop range of each push/pop range: its depth is the number of ranges open at
    its start on its thread (a close and an open at the same time: the close first; a zero-length
    range closes just after it opens), its parent the latest earlier range one level up."""
    parent = [NO_RANGE] * len(start)
    thread, open_ends, last_at = None, [], {}
    for i in range(len(start)):
        if not pushpop[i]:
            continue
        if gtid[i] != thread:
            thread, open_ends, last_at = gtid[i], [], {}
        while open_ends and open_ends[0] <= 2 * start[i]:
            heapq.heappop(open_ends)
        depth = len(open_ends)
        if depth:
            p = last_at.get(depth - 1, NO_RANGE)
            parent[i] = p if p >= 0 and end[i] <= end[p] else NO_RANGE
        last_at[depth] = i
        heapq.heappush(open_ends, 2 * end[i] + (end[i] == start[i]))
    return parent


def _tightest_parents(r: PlainRanges) -> list[int]:
    """nsys's parent: the enclosing range on the same thread with the least slack, any style; a
    start/end range starts from its innermost push/pop container and may adopt any range it holds."""
    parent = list(r.pp_parent)
    se = [i for i in range(len(r)) if not r.pushpop[i]]
    if not se:
        return parent
    for i in se:
        parent[i] = r.innermost(r.gtid[i], r.start[i], r.end[i])
    big = 1 << 62
    slack = [(r.start[i] - r.start[p]) + (r.end[p] - r.end[i]) if p >= 0 else big for i, p in enumerate(parent)]
    by_thread: dict[int, list[int]] = {}
    for i, g in enumerate(r.gtid):
        by_thread.setdefault(g, []).append(i)
    for i in se:
        for j in by_thread[r.gtid[i]]:
            if j != i and r.start[j] >= r.start[i] and r.end[j] <= r.end[i]:
                s = (r.start[j] - r.start[i]) + (r.end[i] - r.end[j])
                if s < slack[j]:
                    parent[j], slack[j] = i, s
    return parent


def levels(parent: list[int]) -> list[int]:
    """Depth in the parent forest; -1 for a range whose chain never reaches a root (a cycle of
    identical intervals, which nsys's recursive tree never reaches either)."""
    out = []
    for i in range(len(parent)):
        depth, cur = 0, parent[i]
        while cur >= 0 and depth <= len(parent):
            depth, cur = depth + 1, parent[cur]
        out.append(depth if cur < 0 else -1)
    return out


def plain_launches(profile: Profile) -> list[tuple[int, int, int, int, int]]:
    """One (gtid, api_start, api_end, op_start, op_end) per launch (pid, correlation id): the span
    of the GPU work it launched and its launching call (gtid -1 where the call was not traced)."""
    from align.attribute.launches import KEY, ops_query  # SQL text only: no numpy

    query = ops_query(profile, extra=False)
    if query is None:
        return []
    # SQLite compares text with numbers where DuckDB refuses to read it: count such rows there
    bad = "0" if profile.engine.duck is not None else \
        'sum(typeof(start) != \'integer\' OR typeof("end") != \'integer\')'
    spans = profile.engine.rows(f'SELECT key, min(start), max("end"), {bad} FROM ({query}) AS o GROUP BY key')[1]
    if any(bad for *_, bad in spans):
        damaged(profile)
    spans = [(k, s, e) for k, s, e, _ in spans]
    calls: dict[int, tuple[int, int, int]] = {}
    if profile.schema.has(RUNTIME_TABLE) and spans:
        wanted = {k for k, _, _ in spans}
        cur = profile.conn.execute(f'SELECT {KEY.format(col="globalTid")}, globalTid, start, "end" FROM {RUNTIME_TABLE}')
        for key, g, s, e in cur:
            if key in wanted and key not in calls:  # the first call with that key wins
                if type(s) is not int or type(e) is not int:
                    damaged(profile)
                calls[key] = (g, s, e)
    return [calls.get(k, (-1, 0, 0)) + (s, e) for k, s, e in spans]


def range_projection(r: PlainRanges, launches: list[tuple[int, int, int, int, int]]) -> dict[int, tuple[int, int, int]]:
    """Per range that launched GPU work: (projected start, projected end, calls). A call counts in
    its innermost push/pop range and every push/pop range above it, and in each start/end range
    that holds it on its thread."""
    n = len(r)
    lo, hi, cnt = [0] * n, [0] * n, [0] * n
    for g, s, e, os_, oe in launches:
        i = r.innermost(g, s, e)
        if i >= 0:
            lo[i], hi[i] = (min(lo[i], os_), max(hi[i], oe)) if cnt[i] else (os_, oe)
            cnt[i] += 1
    by_depth: dict[int, list[int]] = {}
    for i, d in enumerate(levels(r.pp_parent)):
        if d > 0:
            by_depth.setdefault(d, []).append(i)
    for d in sorted(by_depth, reverse=True):  # children's totals into their parents, deepest first
        for i in by_depth[d]:
            if cnt[i]:
                p = r.pp_parent[i]
                lo[p], hi[p] = (min(lo[p], lo[i]), max(hi[p], hi[i])) if cnt[p] else (lo[i], hi[i])
                cnt[p] += cnt[i]
    se = [i for i in range(n) if not r.pushpop[i]]
    if se:
        calls: dict[int, list[tuple[int, int, int, int]]] = {}
        for g, s, e, os_, oe in launches:
            calls.setdefault(g, []).append((s, e, os_, oe))
        for g in calls:
            calls[g].sort(key=lambda c: c[0])
        starts = {g: [c[0] for c in v] for g, v in calls.items()}
        for i in se:
            held = calls.get(r.gtid[i], [])
            a = bisect_left(starts.get(r.gtid[i], []), r.start[i])
            b = bisect_right(starts.get(r.gtid[i], []), r.end[i])
            inside = [c for c in held[a:b] if c[1] <= r.end[i]]
            if inside:
                lo[i], hi[i], cnt[i] = min(c[2] for c in inside), max(c[3] for c in inside), len(inside)
    return {i: (lo[i], hi[i], cnt[i]) for i in range(n) if cnt[i]}


TRACE_COLUMNS = ["range_index", "range_id", "name", "style", "start", "end", "proj_start", "proj_duration",
                 "range_duration", "gpu_ops", "children", "level"]


def range_table_rows(profile: Profile, raw_names: bool = False) -> Rows:
    """Every range that launched GPU work, with nsys's trace columns (``nvtx_gpu_proj_trace``)."""
    r = plain_ranges(profile, raw_names)
    proj = range_projection(r, plain_launches(profile))
    children: dict[int, int] = {}
    for i in proj:
        if r.parent[i] >= 0:
            children[r.parent[i]] = children.get(r.parent[i], 0) + 1
    out = []
    for i in sorted(proj):
        lo, hi, n = proj[i]
        row = r.rows[i]
        out.append((i, row[0], r.name(i), row[9], r.start[i], r.end[i], lo, hi - lo, r.end[i] - r.start[i], n,
                    children.get(i, 0), r.level[i] if r.level[i] >= 0 else None))
    return Rows(list(TRACE_COLUMNS), out)


PROJ_SUM_HEADER = {
    "range": "Range", "style": "Style", "total_proj_ns": "Total Proj Time (ns)",
    "total_range_ns": "Total Range Time (ns)", "instances": "Range Instances", "proj_avg_ns": "Proj Avg (ns)",
    "proj_med_ns": "Proj Med (ns)", "proj_min_ns": "Proj Min (ns)", "proj_max_ns": "Proj Max (ns)",
    "proj_stddev_ns": "Proj StdDev (ns)", "total_gpu_ops": "Total GPU Ops", "avg_gpu_ops": "Avg GPU Ops",
    "avg_level": "Avg Range Lvl", "avg_children": "Avg Num Child",
}

def _mean_tenth(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return round_tenth(sum(present) / len(present)) if present else None


def gpu_proj_sum_rows(profile: Profile, raw_names: bool = False) -> Rows:
    """The numbers of ``nsys stats --report nvtx_gpu_proj_sum`` as plain rows (columns as
    ``Projection.gpu_proj_sum``); layer-wise markers grouped by module path unless ``raw_names``."""
    t = range_table_rows(profile, raw_names)
    groups: dict[tuple[str, str], list[tuple]] = {}
    for row in t.rows:
        groups.setdefault((row[2], row[3]), []).append(row)
    out = []
    for (name, style), rows in groups.items():
        total, count, avg, med, lo, hi, sd = plain_stats([x[7] for x in rows])
        out.append((name, style, total, sum(x[8] for x in rows), count, avg, med, lo, hi, sd, sum(x[9] for x in rows),
                    _mean_tenth([x[9] for x in rows]), _mean_tenth([x[11] for x in rows]),
                    _mean_tenth([x[10] for x in rows])))
    return Rows(list(PROJ_SUM_HEADER), out).sort([("total_proj_ns", False), ("range", True), ("style", True)])
