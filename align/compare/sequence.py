"""One forward's kernel sequence of the mock aligned with the E2E's, to see where they diverge.

A minimum edit-distance alignment over kernel families (TensorRT-LLM's layer-wise benchmark
parser aligns graph and eager runs the same way, with a common supersequence): each row is a
kernel on both sides (``=``), a substitution (``~``), a kernel only the mock launches (``+``) or
one only the E2E run launches (``-``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MAX_LEN = 5000


def representative_forward(items: pd.DataFrame, forwards: pd.DataFrame, phase: str) -> pd.DataFrame:
    """The kept forward of ``phase`` with the median latency, its kernels in GPU start order."""
    kept = forwards[forwards["kept"] & (forwards["phase"] == phase)].sort_values("latency_ns", kind="stable")
    if kept.empty:
        return items.iloc[0:0]
    fw = kept.iloc[(len(kept) - 1) // 2]["forward"]
    return items[items["forward"] == fw].sort_values("start", kind="stable")


def edit_alignment(a: list[str], b: list[str]) -> list[tuple[int | None, int | None]]:
    """Index pairs of a minimum edit-distance alignment of ``a`` and ``b`` (None: gap)."""
    n, m = len(a), len(b)
    if n > MAX_LEN or m > MAX_LEN:
        raise ValueError(f"sequences of {n} and {m} kernels are too long to align (limit {MAX_LEN})")
    cost = np.zeros((n + 1, m + 1), np.int32)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    b_arr = np.array(b, dtype=object)
    for i in range(1, n + 1):
        sub = cost[i - 1, :-1] + (b_arr != a[i - 1])
        row = np.minimum(sub, cost[i - 1, 1:] + 1)
        # insertions along the row need a running pass
        out = cost[i]
        out[0] = i
        for j in range(1, m + 1):
            out[j] = min(row[j - 1], out[j - 1] + 1)
    pairs = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i, j] == cost[i - 1, j - 1] + (a[i - 1] != b[j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            pairs.append((i - 1, None))
            i -= 1
        else:
            pairs.append((None, j - 1))
            j -= 1
    return pairs[::-1]


def aligned_sequences(mock_fw: pd.DataFrame, e2e_fw: pd.DataFrame) -> pd.DataFrame:
    """Rows of the alignment of two forwards' kernels (each with family, name, duration)."""
    a = mock_fw["family"].astype(str).tolist()
    b = e2e_fw["family"].astype(str).tolist()
    rows = []
    for k, (i, j) in enumerate(edit_alignment(a, b)):
        mi = mock_fw.iloc[i] if i is not None else None
        ej = e2e_fw.iloc[j] if j is not None else None
        if mi is not None and ej is not None:
            op = "=" if a[i] == b[j] else "~"
        else:
            op = "+" if mi is not None else "-"
        rows.append({"step": k, "op": op,
                     "mock_family": a[i] if i is not None else None, "e2e_family": b[j] if j is not None else None,
                     "mock_ns": int(mi["duration"]) if mi is not None else None,
                     "e2e_ns": int(ej["duration"]) if ej is not None else None,
                     "mock_name": str(mi["name"]) if mi is not None else None,
                     "e2e_name": str(ej["name"]) if ej is not None else None})
    return pd.DataFrame(rows, columns=["step", "op", "mock_family", "e2e_family", "mock_ns", "e2e_ns",
                                       "mock_name", "e2e_name"])
