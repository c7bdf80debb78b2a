"""NVTX ranges as arrays, and the "which ranges enclose this CPU call" query, without nested loops.

A kernel belongs to an NVTX range when the CUDA API call that launched it lies inside the range
on the same thread (nsys's rule). Push/pop ranges on one thread nest properly, so the ranges that
enclose a call are its innermost enclosing range and that range's ancestors: one binary search in
the thread's ranges sorted by start (pre-order), then a walk up parent links, vectorised over all
calls at once. Start/end ranges may overlap anything; they are few and matched directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from align.profile.reader import Profile
from align.attribute.markers import range_name
from align.attribute.nvtx_rows import NO_RANGE, range_query


@dataclass
class Ranges:
    """All NVTX ranges of a profile, in pre-order per thread (thread, start, longest first).

    ``parent`` is the tightest enclosing range on the same thread (nsys's definition, any
    style), ``level`` its depth (0 = outermost), ``pp_parent`` the enclosing push/pop range used
    for the fast query. Row positions are the range indices used everywhere else.
    """

    df: pd.DataFrame
    gtid: np.ndarray
    start: np.ndarray
    end: np.ndarray
    pushpop: np.ndarray
    pp_parent: np.ndarray
    parent: np.ndarray
    level: np.ndarray

    def __len__(self) -> int:
        return len(self.df)

    @property
    def pp_depth(self) -> np.ndarray:
        """Depth along push/pop parents; ranges are processed level by level with it."""
        if not hasattr(self, "_pp_depth"):
            self._pp_depth = _levels(self.pp_parent)
        return self._pp_depth

    def nearest_on_chain(self, mark: np.ndarray, outermost: bool = False) -> np.ndarray:
        """For each range, the nearest (or ``outermost``) range on its push/pop chain, itself
        included, for which ``mark`` is true; -1 where none is."""
        out = np.where(mark, np.arange(len(mark)), NO_RANGE)
        depth = self.pp_depth
        for d in range(1, int(depth.max()) + 1 if len(depth) else 0):
            idx = np.flatnonzero(depth == d)
            from_parent = out[self.pp_parent[idx]]
            if outermost:
                out[idx] = np.where(from_parent >= 0, from_parent, out[idx])
            else:
                out[idx] = np.where(out[idx] >= 0, out[idx], from_parent)
        return out


def load_ranges(profile: Profile, raw_names: bool = False) -> Ranges:
    """Ranges as nsys's projection reports see them: push/pop and start/end ranges that end on the
    thread they started on, an open end closed at the last NVTX timestamp, and the name written
    ``domain:text`` (``:text`` in the default domain), a layer-wise marker's text shown as its
    module path unless ``raw_names`` (markers.shown)."""
    df = _range_rows(profile, raw_names)
    df = df.sort_values(["gtid", "start", "end"], ascending=[True, True, False], kind="stable").reset_index(drop=True)
    gtid = df["gtid"].to_numpy(np.int64)
    start = df["start"].to_numpy(np.int64)
    end = df["end"].to_numpy(np.int64)
    pushpop = (df["style"] == "PushPop").to_numpy()
    pp_parent = _laminar_parents(gtid, start, end, pushpop)
    parent = _tightest_parents(gtid, start, end, pushpop, pp_parent)
    level = _levels(parent)
    df["level"] = level
    return Ranges(df=df, gtid=gtid, start=start, end=end, pushpop=pushpop, pp_parent=pp_parent,
                  parent=parent, level=level)


INT_COLS = ("range_id", "start", "end", "open_end", "gtid", "pid", "tid")


def _range_rows(profile: Profile, raw_names: bool = False) -> pd.DataFrame:
    cols = ["range_id", "start", "end", "open_end", "gtid", "pid", "tid", "domain", "text", "name", "style"]
    query = range_query(profile)
    if query is None:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in INT_COLS else "object") for c in cols})
    # range texts repeat (one per layer and step): categoricals keep one copy of each string
    parts = [c.astype({k: "category" for k in ("domain", "text", "style")}) for c in profile.engine.chunks(query)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in INT_COLS else "object") for c in cols})
    df = pd.concat([p.drop(columns=["domain", "text", "style"]) for p in parts], ignore_index=True)
    for k in ("domain", "text", "style"):
        df[k] = union_categoricals([p[k] for p in parts])
    pair = pd.MultiIndex.from_arrays([df["domain"].cat.codes, df["text"].cat.codes])
    codes, uniq = pd.factorize(pair)
    texts = df["text"].cat.categories
    labels = [range_name(df["domain"].cat.categories[d] if d >= 0 else "", texts[t] if t >= 0 else "", raw_names)
              for d, t in uniq]
    df["name"] = pd.Categorical.from_codes(codes, categories=pd.Index(labels).unique()) if len(set(labels)) == len(labels) \
        else pd.Categorical(np.array(labels, dtype=object)[codes])
    # categories in first-seen order would follow the engine's scan order (DuckDB reads in
    # parallel): sorted, they are the same everywhere, and sorting by them sorts by text
    for k in ("domain", "text", "style", "name"):
        df[k] = df[k].cat.reorder_categories(sorted(df[k].cat.categories))
    return df[cols]


def _laminar_parents(gtid: np.ndarray, start: np.ndarray, end: np.ndarray, pushpop: np.ndarray) -> np.ndarray:
    """Enclosing push/pop range of each push/pop range (pre-order arrays), -1 for roots.

    Push/pop ranges nest, so a range's depth is the number of ranges open at its start on its
    thread, and its parent is the latest earlier range (in pre-order) one level up.
    """
    parent = np.full(len(start), NO_RANGE, np.int64)
    idx = np.flatnonzero(pushpop)
    if len(idx) == 0:
        return parent
    s, e, t = start[idx], end[idx], gtid[idx]
    n = len(idx)
    # open/close sweep; a zero-length range closes just after it opens; closes before opens at a tie
    time = np.concatenate([2 * s, 2 * e + (e == s)])
    delta = np.concatenate([np.ones(n, np.int64), -np.ones(n, np.int64)])
    order_key = np.concatenate([np.arange(n), np.arange(n)])
    order = np.lexsort((order_key, delta, time, np.concatenate([t, t])))
    running = np.cumsum(delta[order]) - delta[order]
    depth = np.empty(n, np.int64)
    is_open = order < n
    depth[order[is_open]] = running[is_open]
    local_parent = np.full(n, NO_RANGE, np.int64)
    positions = np.arange(n)
    for d in range(1, int(depth.max()) + 1 if n else 0):
        children = positions[depth == d]
        candidates = positions[depth == d - 1]
        if len(children) == 0 or len(candidates) == 0:
            continue
        k = np.searchsorted(candidates, children, side="left") - 1
        ok = k >= 0
        local_parent[children[ok]] = candidates[k[ok]]
    bad = (local_parent >= 0) & ((t != t[np.maximum(local_parent, 0)]) | (e > e[np.maximum(local_parent, 0)]))
    local_parent[bad] = NO_RANGE  # not properly nested (should not happen for push/pop)
    parent[idx] = np.where(local_parent >= 0, idx[np.maximum(local_parent, 0)], NO_RANGE)
    return parent


def innermost_pushpop(r: Ranges, gtid: np.ndarray, qstart: np.ndarray, qend: np.ndarray,
                      chunk: int = 1 << 20) -> np.ndarray:
    """Index of the innermost push/pop range enclosing each interval [qstart, qend] on thread
    ``gtid``, or -1. All other enclosing push/pop ranges are its ancestors (``pp_parent``).
    Queries are handled in chunks so temporaries stay small next to the inputs."""
    out = np.full(len(qstart), NO_RANGE, np.int64)
    idx = np.flatnonzero(r.pushpop)
    if len(idx) == 0 or len(qstart) == 0:
        return out
    t, s = r.gtid[idx], r.start[idx]
    threads, first = np.unique(t, return_index=True)
    bounds = np.append(first, len(t))
    for lo in range(0, len(qstart), chunk):
        hi = min(lo + chunk, len(qstart))
        out[lo:hi] = _innermost_chunk(r, idx, s, threads, bounds, gtid[lo:hi], qstart[lo:hi], qend[lo:hi])
    return out


def _innermost_chunk(r, idx, s, threads, bounds, gtid, qstart, qend) -> np.ndarray:
    out = np.full(len(qstart), NO_RANGE, np.int64)
    q_thread = np.searchsorted(threads, gtid)
    q_ok = (q_thread < len(threads)) & (threads[np.minimum(q_thread, len(threads) - 1)] == gtid)
    cand = np.full(len(qstart), NO_RANGE, np.int64)
    for k in np.unique(q_thread[q_ok]):
        lo, hi = bounds[k], bounds[k + 1]
        sel = np.flatnonzero(q_ok & (q_thread == k))
        pos = np.searchsorted(s[lo:hi], qstart[sel], side="right") - 1
        ok = pos >= 0
        cand[sel[ok]] = idx[lo + pos[ok]]
    # walk up until the candidate also covers the interval's end
    active = np.flatnonzero(cand >= 0)
    while len(active):
        c = cand[active]
        covered = r.end[c] >= qend[active]
        done = active[covered]
        out[done] = cand[done]
        rest = active[~covered]
        cand[rest] = r.pp_parent[cand[rest]]
        active = rest[cand[rest] >= 0]
    return out


def startend_pairs(r: Ranges, gtid: np.ndarray, qstart: np.ndarray, qend: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(range index, query index) for every start/end range that encloses a query on its thread."""
    se = np.flatnonzero(~r.pushpop)
    if len(se) == 0 or len(qstart) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    order = np.lexsort((qstart, gtid))
    g_sorted, s_sorted = gtid[order], qstart[order]
    ranges_out, queries_out = [], []
    for i in se:
        lo = np.searchsorted(g_sorted, r.gtid[i], side="left")
        hi = np.searchsorted(g_sorted, r.gtid[i], side="right")
        a = lo + np.searchsorted(s_sorted[lo:hi], r.start[i], side="left")
        b = lo + np.searchsorted(s_sorted[lo:hi], r.end[i], side="right")
        q = order[a:b]
        q = q[qend[q] <= r.end[i]]
        ranges_out.append(np.full(len(q), i, np.int64))
        queries_out.append(q)
    return np.concatenate(ranges_out), np.concatenate(queries_out)


def _tightest_parents(gtid, start, end, pushpop, pp_parent) -> np.ndarray:
    """nsys's parent: the enclosing range on the same thread with the least slack, any style."""
    parent = pp_parent.copy()
    se = np.flatnonzero(~pushpop)
    if len(se) == 0:
        return parent
    r = Ranges(df=pd.DataFrame(), gtid=gtid, start=start, end=end, pushpop=pushpop, pp_parent=pp_parent,
               parent=pp_parent, level=np.zeros(len(start), np.int64))
    # start/end ranges' tightest push/pop container
    parent[se] = innermost_pushpop(r, gtid[se], start[se], end[se])
    # any start/end range that encloses a range may be tighter than what it has
    slack = np.where(parent >= 0, (start - start[np.maximum(parent, 0)]) + (end[np.maximum(parent, 0)] - end),
                     np.iinfo(np.int64).max)
    everyone = np.arange(len(start))
    for i in se:
        inside = everyone[(gtid == gtid[i]) & (start >= start[i]) & (end <= end[i]) & (everyone != i)]
        s = (start[inside] - start[i]) + (end[i] - end[inside])
        better = s < slack[inside]
        parent[inside[better]] = i
        slack[inside[better]] = s[better]
    return parent


def _levels(parent: np.ndarray) -> np.ndarray:
    """Depth in the parent forest. Ranges on a cycle (identical intervals that each enclose the
    other) get -1: nsys's recursive tree never reaches them either."""
    level = np.zeros(len(parent), np.int64)
    active = np.flatnonzero(parent >= 0)
    cur = parent[active]
    steps = 0
    while len(active):
        level[active] += 1
        cur = parent[cur]
        keep = cur >= 0
        active, cur = active[keep], cur[keep]
        steps += 1
        if steps > len(parent):
            level[active] = -1
            break
    return level
