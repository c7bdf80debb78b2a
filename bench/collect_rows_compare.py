#!/usr/bin/env python3
"""Two collections of the same grid compared row by row (seed 001: a re-run within 2 %): every perf
file of A matched with B's on the case's fields (all but latency, power, power_limit and device),
the latency deviation of B from A per row, and per GPU of B where B's cases log says which ran where.

    python bench/collect_rows_compare.py A_DIR B_DIR [--limit-pct 2] [--format md|json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from align.collect import writers

METRICS = {"latency", "power", "power_limit", "device"}


def compare(a: Path, b: Path) -> pd.DataFrame:
    rows = []
    for fa in sorted(a.rglob("*_perf.txt")):
        fb = b / fa.relative_to(a)
        da, db = writers.read_rows(fa), writers.read_rows(fb) if fb.exists() else pd.DataFrame()
        keys = [c for c in da.columns if c not in METRICS]
        m = da.merge(db, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
        m["file"] = fa.name
        rows.append(m)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def where_ran(b: Path) -> dict[str, str]:
    log = b / ".align" / "cases.jsonl"
    if not log.exists():
        return {}
    out = {}
    for line in log.read_text().splitlines():
        r = json.loads(line)
        out[r["case"]] = str(r.get("cuda_visible_devices"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--limit-pct", type=float, default=2.0)
    ap.add_argument("--format", default="md", choices=["md", "json"])
    args = ap.parse_args()
    m = compare(args.a, args.b)
    both = m[m["_merge"] == "both"].copy()
    for c in ("latency_a", "latency_b"):
        both[c] = pd.to_numeric(both[c])
    both["dev_pct"] = 100 * (both["latency_b"] - both["latency_a"]) / both["latency_a"]
    runs = {}
    for d, tag in ((args.a, "a"), (args.b, "b")):
        log = d / ".align" / "cases.jsonl"
        runs[tag] = len(log.read_text().splitlines()) if log.exists() else 0
    gpus = pd.Series(list(where_ran(args.b).values())).value_counts().to_dict()
    summary = {"rows_a": int((m["_merge"] != "right_only").sum()), "rows_b": int((m["_merge"] != "left_only").sum()),
               "matched": len(both), "only_a": int((m["_merge"] == "left_only").sum()),
               "only_b": int((m["_merge"] == "right_only").sum()),
               "max_abs_dev_pct": round(float(both["dev_pct"].abs().max()), 3) if len(both) else None,
               "median_abs_dev_pct": round(float(both["dev_pct"].abs().median()), 3) if len(both) else None,
               "over_limit": int((both["dev_pct"].abs() >= args.limit_pct).sum()), "limit_pct": args.limit_pct,
               "b_cases_per_gpu": gpus}
    if args.format == "json":
        print(json.dumps({"summary": summary, "rows": json.loads(both.drop(columns="_merge").to_json(orient="records"))},
                         indent=1))
        return
    print(f"A = {args.a}, B = {args.b}\n")
    print("| " + " | ".join(summary) + " |\n|" + "---|" * len(summary))
    print("| " + " | ".join(str(v) for v in summary.values()) + " |\n")
    keys = [c for c in both.columns if c.endswith("_a") or c.endswith("_b") or c in ("file", "dev_pct")]
    print("| " + " | ".join(["file", "case"] + ["latency_a", "latency_b", "dev_pct"]) + " |\n|---|---|---|---|---|")
    case_cols = [c for c in both.columns if c not in keys and c not in ("_merge",) and not c.startswith(("framework",
                 "version", "op_name", "kernel_source", "model", "dtype"))]
    for _, r in both.iterrows():
        case = ", ".join(f"{c}={r[c]}" for c in case_cols)
        print(f"| {r['file']} | {case} | {r['latency_a']:.4f} | {r['latency_b']:.4f} | {r['dev_pct']:+.2f} |")


if __name__ == "__main__":
    main()
