"""Per-report work of ``align kernels`` / ``nvtx`` / ``ops`` as Dask tasks, and the combination of
their results: one table with a ``report`` column, a row group per report and an ``ALL`` group over
every report together.

The ``ALL`` figures are exact, not averages of averages: each task returns, besides its report's own
summary (the same numbers ``align kernels FILE`` prints), the raw values a summary is made of (kernel
or range durations, per-forward family counts), and the client summarises those together with the
very function that summarises one report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from align.errors import AlignError, arg

ALL = "ALL"


@dataclass
class ManyReports:
    """A question answered for several reports: ``per_report`` (a ``report`` column first), ``overall``
    (every report together) and ``reports`` (the files, in the order given)."""

    reports: list[str]
    per_report: pd.DataFrame
    overall: pd.DataFrame

    def table(self, limit: int | None = None) -> pd.DataFrame:
        """``overall`` as report ``ALL``, then each report's rows (at most ``limit`` of each)."""
        parts = [self.overall.assign(report=ALL)] + [g for _, g in self.per_report.groupby("report", sort=False)]
        parts = [p.head(limit) if limit else p for p in parts]
        df = pd.concat(parts, ignore_index=True)
        return df[["report"] + [c for c in df.columns if c != "report"]]


def label(path: str, paths: Sequence[str]) -> str:
    """A report's short name in tables: the fewest trailing path parts that tell it from the other
    reports (a store entry's report.sqlite is named by its folder)."""
    from align.store import REPORT, SQLITE

    def parts(p: str) -> tuple[str, ...]:
        q = Path(p)
        return (q.parent if q.name in (SQLITE, REPORT) else q).parts

    mine, others = parts(path), [parts(p) for p in paths if str(p) != str(path)]
    for n in range(1, len(mine) + 1):
        if all(o[-n:] != mine[-n:] for o in others):
            return "/".join(mine[-n:])
    return str(path)


# ---- kernels -----------------------------------------------------------------------------------
def kernels_task(path: str, name: str, by_launch: bool, select: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
    """One report: its kernel summary (as ``align kernels``) and every kernel's duration, per kernel."""
    from align.loader import load
    from align.profile.processes import gpu_filter
    from align.stats.kernels import kernel_durations, kernel_rows

    with load(path) as p:
        where = gpu_filter(p.require("kernels"), **select)
        return kernel_rows(p, name=name, by_launch=by_launch, where=where).to_frame(), \
            kernel_durations(p, name, by_launch, where)


def kernels_many(paths: Sequence[str], name: str = "demangled", by_launch: bool = False, sort: str = "total",
                 select: dict[str, Any] | None = None, **dask: Any) -> ManyReports:
    """``align kernels`` over several reports (``dask``: ``scheduler``, ``workers``, ``progress``)."""
    from align.scale.reports import map_reports
    from align.stats.kernels import merge_durations, summarize_durations

    results = map_reports(kernels_task, list(paths), name, by_launch, select or {}, **dask)
    per = pd.concat([rows.assign(report=label(p, paths)) for p, (rows, _) in zip(paths, results)], ignore_index=True)
    overall = summarize_durations(merge_durations([d for _, d in results]), by_launch=by_launch, sort=sort)
    return ManyReports(list(paths), per, overall)


# ---- NVTX --------------------------------------------------------------------------------------
def nvtx_task(path: str, cpu: bool) -> tuple[pd.DataFrame, Any]:
    """One report: its NVTX summary (GPU projection, or CPU-side times with ``cpu`` or without CUDA
    activity) and the values behind it; (None, None) for a report that needs the other view."""
    from align.loader import load

    with load(path) as p:
        if cpu or not p.require("nvtx").has_cuda_api:
            from align.stats.nvtx import DTYPES, range_durations, sum_rows_of

            groups = range_durations(p)
            return sum_rows_of(groups).to_frame(DTYPES), ("cpu", groups)
        from align.attribute.projection import PROJ_SUM_INPUT, Projection, proj_sum_of

        t = Projection(p).range_table()
        slim = t[PROJ_SUM_INPUT] if not t.empty else pd.DataFrame(columns=PROJ_SUM_INPUT)
        return proj_sum_of(t), ("gpu", slim)


def nvtx_many(paths: Sequence[str], cpu: bool = False, **dask: Any) -> tuple[ManyReports, str]:
    """``align nvtx`` over several reports, and which view it is (``gpu`` or ``cpu``): the GPU
    projection summary, or the CPU-side range times when ``cpu`` or when no report has CUDA activity.
    Reports of both kinds together are bad input (their numbers do not add up)."""
    from align.scale.reports import map_reports

    results = map_reports(nvtx_task, list(paths), cpu, **dask)
    kinds = {kind for _, (kind, _) in results}
    if len(kinds) > 1:
        gpu = [label(p, paths) for p, (_, (k, _)) in zip(paths, results) if k == "gpu"]
        raise AlignError(f"some reports have CUDA activity ({', '.join(gpu[:3])}) and some do not",
                         f"pass {arg('cpu', 'True')} for the CPU-side range times of all, or only reports with GPU work")
    kind = kinds.pop()
    per = pd.concat([rows.assign(report=label(p, paths)) for p, (rows, _) in zip(paths, results)], ignore_index=True)
    if kind == "cpu":
        from align.stats.nvtx import DTYPES, sum_rows_of

        groups: dict = {}
        for _, (_, g) in results:
            for key, values in g.items():
                groups.setdefault(key, []).extend(values)
        overall = sum_rows_of(groups).to_frame(DTYPES)
    else:
        from align.attribute.projection import proj_sum_of

        overall = proj_sum_of(pd.concat([t for _, (_, t) in results], ignore_index=True))
    return ManyReports(list(paths), per, overall), kind


# ---- ops ---------------------------------------------------------------------------------------
def ops_task(path: str, op: str | None, range_pattern: str | None, iter_range: str | None, phase: str | None,
             skip: int, auto_skip: bool, name: str, ops_file: str | None, select: dict[str, Any]
             ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """One report: the op's per-forward family table (as ``align ops --op``), its kept forwards'
    family counts and times, and the kept forwards per phase."""
    from align.attribute.ops import OpView
    from align.loader import load
    from align.ops.registry import load_registry
    from align.profile.processes import gpu_filter

    registry = load_registry(ops_file)
    with load(path) as p:
        view = OpView(p.require("kernels"), registry, name=name, where=gpu_filter(p, **select))
        rows = view.require_items(op, range_pattern=range_pattern, iter_pattern=iter_range)
        fw = view.per_forward(rows, skip=skip, auto_skip=auto_skip, phase=phase)
    kept = fw.forwards[fw.forwards["kept"]]
    return fw.families, fw.by_forward, {str(k): int(v) for k, v in kept.groupby("phase", observed=True).size().items()}


def pooled_families(parts: Sequence[tuple[pd.DataFrame, dict[str, int]]]) -> pd.DataFrame:
    """Per (phase, family), medians over the kept forwards of every part together (a forward without
    the family counts 0 kernels and 0 ns, as in one report's table)."""
    import numpy as np

    n_fw: dict[str, int] = {}
    frames = []
    for i, (by_forward, kept) in enumerate(parts):
        for ph, n in kept.items():
            n_fw[ph] = n_fw.get(ph, 0) + n
        frames.append(by_forward.assign(forward=[f"{i}:{f}" for f in by_forward["forward"]],
                                        phase=by_forward["phase"].astype(str)))
    cols = ["phase", "family", "forwards", "count_per_forward", "latency_per_forward_ns", "share_pct"]
    fam = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    out = []
    for (ph, family), g in fam.groupby(["phase", "family"], sort=False, observed=True):
        n = n_fw.get(str(ph), len(g))
        counts, lats = np.zeros(n), np.zeros(n)
        counts[: len(g)] = g["count"].to_numpy()
        lats[: len(g)] = g["latency_ns"].to_numpy()
        out.append({"phase": ph, "family": family, "forwards": n, "count_per_forward": float(np.median(counts)),
                    "latency_per_forward_ns": float(np.median(lats))})
    df = pd.DataFrame(out, columns=cols[:-1])
    if df.empty:
        return pd.DataFrame(columns=cols)
    total = df.groupby("phase")["latency_per_forward_ns"].transform("sum")
    df["share_pct"] = (100 * df["latency_per_forward_ns"] / total).round(1)
    return df.sort_values(["phase", "latency_per_forward_ns"], ascending=[True, False], kind="stable").reset_index(drop=True)


def ops_many(paths: Sequence[str], op: str | None = None, range_pattern: str | None = None,
             iter_range: str | None = None, phase: str | None = None, skip: int = 0, auto_skip: bool = True,
             name: str = "short", ops_file: str | None = None, select: dict[str, Any] | None = None,
             **dask: Any) -> ManyReports:
    """``align ops --op`` over several reports: each report's table, and ``ALL`` pooling their forwards."""
    from align.scale.reports import map_reports

    results = map_reports(ops_task, list(paths), op, range_pattern, iter_range, phase, skip, auto_skip, name,
                          None if ops_file is None else str(ops_file), select or {}, **dask)
    per = pd.concat([fams.assign(report=label(p, paths)) for p, (fams, _, _) in zip(paths, results)],
                    ignore_index=True)
    return ManyReports(list(paths), per, pooled_families([(bf, kept) for _, bf, kept in results]))
