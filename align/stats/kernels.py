"""Per-kernel summary with the numbers of ``nsys stats --report cuda_gpu_kern_sum``.

Computed entirely in SQLite, so a profile with millions of kernels is summarised without loading
its kernel table. nsys's own SQL uses ``median()``/``stdev()`` from its bundled SQLite; here the
median is taken with window functions (mean of the two middle values for even counts) and the
standard deviation is the sample one (n-1), two-pass, as nsys computes them. Values are rounded to
0.1 ns with SQLite's ``round`` like nsys's report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from align.lazy import pd

from align.errors import AlignError, ProfileError
from align.profile.reader import Profile
from align.rows import Rows
from align.profile.schema import KERNEL_TABLE, string_join
from align.numbers import round_tenth

if TYPE_CHECKING:
    import numpy as np

NAME_COLUMNS = {"demangled": "demangledName", "short": "shortName", "mangled": "mangledName"}

SUMMARY_COLUMNS = ["time_pct", "total_ns", "instances", "avg_ns", "med_ns", "min_ns", "max_ns", "stddev_ns",
                   "grid", "block", "name"]

# Column headers of `nsys stats --format csv` for this report (2023.x and later; 2022.4's
# gpukernsum adds GridXYZ/BlockXYZ before Name and groups by them too: ``by_launch=True``).
NSYS_CSV_HEADER = {
    "time_pct": "Time (%)", "total_ns": "Total Time (ns)", "instances": "Instances", "avg_ns": "Avg (ns)",
    "med_ns": "Med (ns)", "min_ns": "Min (ns)", "max_ns": "Max (ns)", "stddev_ns": "StdDev (ns)",
    "grid": "GridXYZ", "block": "BlockXYZ", "name": "Name",
}

SORT_KEYS = {"total": ("total_ns", False), "instances": ("instances", False), "avg": ("avg_ns", False),
             "med": ("med_ns", False), "min": ("min_ns", False), "max": ("max_ns", False),
             "stddev": ("stddev_ns", False), "name": ("name", True)}


def kernel_summary(profile: Profile, name: str = "demangled", by_launch: bool = False,
                   sort: str = "total", limit: int | None = None, where: str | None = None) -> pd.DataFrame:
    """One row per kernel name (and launch shape with ``by_launch``), like ``cuda_gpu_kern_sum``.

    ``name``: ``demangled`` (nsys's default), ``short`` (nsys's ``:base``) or ``mangled``; a
    missing name falls back to the demangled one, as nsys does. ``where`` filters kernel rows
    with an SQL condition on ``CUPTI_ACTIVITY_KIND_KERNEL`` columns.
    """
    rows = kernel_rows(profile, name=name, by_launch=by_launch, sort=sort, limit=limit, where=where)
    if not profile.has_kernels:
        return pd.DataFrame(columns=rows.columns)
    return rows.to_frame({c: t for c, t in DTYPES.items() if c in rows.columns})


DTYPES = {"time_pct": "float64", "total_ns": "int64", "instances": "int64", "avg_ns": "float64",
          "med_ns": "float64", "min_ns": "int64", "max_ns": "int64", "stddev_ns": "float64"}


def kernel_rows(profile: Profile, name: str = "demangled", by_launch: bool = False,
                sort: str = "total", limit: int | None = None, where: str | None = None) -> Rows:
    """:func:`kernel_summary` as plain rows: the aggregation runs in the database and the few
    rows left are finished here, so the CLI answers without pandas."""
    if name not in NAME_COLUMNS:
        raise AlignError(f"unknown name kind {name!r}", f"use one of {', '.join(NAME_COLUMNS)}")
    if sort not in SORT_KEYS:
        raise AlignError(f"unknown sort key {sort!r}", f"use one of {', '.join(SORT_KEYS)}")
    columns = SUMMARY_COLUMNS if by_launch else [c for c in SUMMARY_COLUMNS if c not in ("grid", "block")]
    if not profile.has_kernels:
        return Rows(columns)

    key_cols, key = _key(profile, name, by_launch)
    filt = f"WHERE {where}" if where else ""
    d = f'SELECT {key_cols}, "end" - start AS dur FROM {KERNEL_TABLE} {filt}'
    if profile.engine.duck is not None:
        # DuckDB has exact median and sample stddev aggregates and runs them on all cores.
        agg = f"""
SELECT {key}, CAST(sum(dur) AS BIGINT) AS total, count(*) AS n, avg(dur) AS mean, min(dur) AS lo, max(dur) AS hi,
       median(dur) AS med, coalesce(stddev_samp(dur), 0.0) AS sd
FROM ({d}) AS d GROUP BY {key}"""
    else:
        # SQLite reads text in an integer column as 0 where DuckDB refuses it: such a row gets no
        # duration here, and the damage is named below
        d = (f'SELECT {key_cols}, CASE WHEN typeof(start) = \'integer\' AND typeof("end") = \'integer\' '
             f'THEN "end" - start END AS dur FROM {KERNEL_TABLE} {filt}')
        # One sort per name: the window gives each row its rank, the group's size and mean; one
        # grouping pass then takes the middle value(s) and the squared deviations from the mean.
        agg = f"""
WITH ranked AS (
    SELECT {key}, dur, row_number() OVER w AS rn, count(*) OVER w AS cnt, avg(dur) OVER w AS mean
    FROM ({d}) AS d
    WINDOW w AS (PARTITION BY {key} ORDER BY dur ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
SELECT {key}, sum(dur) AS total, count(dur) AS n, avg(dur) AS mean, min(dur) AS lo, max(dur) AS hi,
       avg(CASE WHEN rn IN ((cnt + 1) / 2, (cnt + 2) / 2) THEN dur END) AS med, count(*) - count(dur) AS bad,
       CASE WHEN count(*) > 1 THEN sqrt(sum((dur - mean) * (dur - mean)) / (count(*) - 1)) ELSE 0.0 END AS sd
FROM ranked GROUP BY {key}"""
    query = f"""
SELECT a.total AS total_ns, a.n AS instances, a.mean AS avg_ns, a.med AS med_ns, a.lo AS min_ns, a.hi AS max_ns,
       a.sd AS stddev_ns{", a.grid AS grid, a.block AS block" if by_launch else ""}, s.value AS name
       {", a.bad AS bad" if profile.engine.duck is None else ""}
FROM ({agg}) AS a {string_join("s", "a.name_id")}
"""
    names, found = profile.engine.rows(query)
    at = {c: i for i, c in enumerate(names)}
    if "bad" in at and any(r[at["bad"]] for r in found):
        from align.profile.check import diagnose

        raise ProfileError(f"{profile.path}: {diagnose(profile.path) or 'kernel times that are not integers'}")
    missing = [r for r in found if r[at["name"]] is None]
    if missing:
        n = sum(int(r[at["instances"]]) for r in missing)
        raise ProfileError(f"{profile.path}: {n} kernel(s) name a string id that StringIds lacks",
                           "the export is damaged: export the report again (align export REPORT.nsys-rep)")
    whole = sum(int(r[at["total_ns"]]) for r in found)
    out = []
    for r in found:
        total = int(r[at["total_ns"]])
        row = {"time_pct": round_tenth(total * 100.0 / whole) if whole else None, "total_ns": total,
               "instances": int(r[at["instances"]]), "avg_ns": round_tenth(r[at["avg_ns"]]),
               "med_ns": round_tenth(r[at["med_ns"]]), "min_ns": int(r[at["min_ns"]]),
               "max_ns": int(r[at["max_ns"]]), "stddev_ns": round_tenth(r[at["stddev_ns"]]),
               "grid": r[at["grid"]] if by_launch else None, "block": r[at["block"]] if by_launch else None,
               "name": r[at["name"]]}
        out.append(tuple(row[c] for c in columns))
    col, ascending = SORT_KEYS[sort]
    # nsys's order: total time descending, then instances, then name.
    keys = list(dict.fromkeys([col, "total_ns", "instances", "name"] + (["grid", "block"] if by_launch else [])))
    table = Rows(columns, out).sort([(k, ascending if k == col else k in ("instances", "name", "grid", "block"))
                                     for k in keys])
    return table.head(limit) if limit else table  # 0: all, as on the command line


def _key(profile: Profile, name: str, by_launch: bool) -> tuple[str, str]:
    """The SELECT columns naming a kernel (its string id, with grid and block by launch) and their names."""
    kcols = profile.schema.columns(KERNEL_TABLE)
    name_col = NAME_COLUMNS[name]
    name_expr = f"coalesce({name_col}, demangledName)" if name_col in kcols else "demangledName"
    launch = ("printf('%4d %4d %4d', gridX, gridY, gridZ)", "printf('%4d %4d %4d', blockX, blockY, blockZ)")
    key_cols = f"{name_expr} AS name_id" + (f", {launch[0]} AS grid, {launch[1]} AS block" if by_launch else "")
    return key_cols, "name_id" + (", grid, block" if by_launch else "")


def kernel_durations(profile: Profile, name: str = "demangled", by_launch: bool = False,
                     where: str | None = None) -> dict[tuple, np.ndarray]:
    """Every kernel's duration (ns, int64), grouped under the key :func:`kernel_rows` groups by
    (``(name,)``, or ``(name, grid, block)`` by launch): what several reports' summaries are combined
    from. Arrays, not a row per kernel, so they travel between processes as buffers."""
    import numpy as np

    if name not in NAME_COLUMNS:
        raise AlignError(f"unknown name kind {name!r}", f"use one of {', '.join(NAME_COLUMNS)}")
    if not profile.has_kernels:
        return {}
    key_cols, key = _key(profile, name, by_launch)
    filt = f"WHERE {where}" if where else ""
    d = profile.engine.frame(f'SELECT {key_cols}, "end" - start AS dur FROM {KERNEL_TABLE} {filt}')
    if d.empty:
        return {}
    names = dict(profile.engine.rows("SELECT id, value FROM StringIds")[1])
    codes, uniques = pd.factorize(pd.MultiIndex.from_frame(d[key.split(", ")]) if by_launch else d["name_id"])
    order = np.argsort(codes, kind="stable")
    cuts = np.flatnonzero(np.diff(codes[order])) + 1
    durs = d["dur"].to_numpy(np.int64)[order]
    out = {}
    for u, part in zip(uniques, np.split(durs, cuts)):
        k = (names.get(u[0]), u[1], u[2]) if by_launch else (names.get(u),)
        out[k] = part
    return out


def merge_durations(parts: list[dict[tuple, np.ndarray]]) -> dict[tuple, np.ndarray]:
    """Several reports' :func:`kernel_durations` as one."""
    import numpy as np

    lists: dict[tuple, list] = {}
    for part in parts:
        for k, v in part.items():
            lists.setdefault(k, []).append(v)
    return {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in lists.items()}


def summarize_durations(groups: dict[tuple, np.ndarray], by_launch: bool = False, sort: str = "total",
                        limit: int | None = None) -> pd.DataFrame:
    """:func:`kernel_rows`'s summary computed from :func:`kernel_durations` (of one report or of several
    merged), rounded and ordered as nsys does."""
    import numpy as np

    columns = SUMMARY_COLUMNS if by_launch else [c for c in SUMMARY_COLUMNS if c not in ("grid", "block")]
    if not groups:
        return pd.DataFrame(columns=columns)
    rows = []
    for k, v in groups.items():
        rows.append({"name": k[0], "grid": k[1] if by_launch else None, "block": k[2] if by_launch else None,
                     "total_ns": int(v.sum()), "instances": len(v), "avg_ns": round_tenth(float(v.mean())),
                     "med_ns": round_tenth(float(np.median(v))), "min_ns": int(v.min()), "max_ns": int(v.max()),
                     "stddev_ns": round_tenth(float(v.std(ddof=1))) if len(v) > 1 else 0.0})
    out = pd.DataFrame(rows)
    whole = int(out["total_ns"].sum())
    out["time_pct"] = (out["total_ns"] * 100.0 / whole).map(round_tenth) if whole else None
    col, ascending = SORT_KEYS[sort]
    order = list(dict.fromkeys([col, "total_ns", "instances", "name"] + (["grid", "block"] if by_launch else [])))
    out = out.sort_values(order, ascending=[ascending if k == col else k in ("instances", "name", "grid", "block")
                                            for k in order], kind="stable")
    out = out[columns].reset_index(drop=True)
    return out.head(limit) if limit else out


def to_nsys_csv_frame(summary: pd.DataFrame | Rows) -> pd.DataFrame | Rows:
    """The summary with nsys's CSV column headers, for scripts written against ``nsys stats``."""
    if isinstance(summary, Rows):
        return summary.rename(NSYS_CSV_HEADER)
    return summary.rename(columns=NSYS_CSV_HEADER)
