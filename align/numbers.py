"""Summary statistics with the conventions of ``nsys stats``: sample standard deviation (0 for a
single value), median as the mean of the two middle values, and rounding to 0.1 like nsys 2025.3.

SQLite's own ``round`` changed behaviour across versions (nsys 2022.4 and Python's SQLite before
3.43 turn 5052.95, which is 5052.9499... in binary, into 5053.0; nsys 2025.3 gives 5052.9), so
rounding is done here: the exact binary value, half away from zero. tests/data/rounding*.csv
hold both nsys versions' answers.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

from align.lazy import pd


def round_tenth(value: float | None) -> float | None:
    """Round to 0.1 as nsys 2025.3 does."""
    if value is None or value != value:
        return None
    return float(Decimal(value).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def plain_stats(values: list[int]) -> tuple[int, int, float | None, float | None, int, int, float]:
    """:func:`group_stats` of one group as plain numbers: (total, count, avg, med, min, max, stddev)."""
    n = len(values)
    total = sum(values)
    mean = total / n
    ordered = sorted(values)
    med = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return total, n, round_tenth(mean), round_tenth(med), ordered[0], ordered[-1], round_tenth(sd)


def group_stats(df: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """total, count, avg, med, min, max, stddev of ``value`` per group, rounded as nsys rounds."""
    g = df.groupby(by, sort=False, dropna=False)[value]
    out = pd.DataFrame({"total": g.sum(), "count": g.size(), "avg": g.mean(), "med": g.median(),
                        "min": g.min(), "max": g.max(), "stddev": g.std(ddof=1).fillna(0.0)})
    for c in ("avg", "med", "stddev"):
        out[c] = out[c].map(round_tenth).astype("float64")
    return out
