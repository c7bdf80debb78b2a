#!/usr/bin/env python3
"""Speed and peak memory of `align kernels` against `nsys stats` on one large synthetic export.

Writes an export with N kernel rows (default 2,000,000 over 300 names), then runs, each in its own
process: `align kernels --format csv`, `nsys stats --report <cuda_gpu_kern_sum|gpukernsum> --format
csv`, and, for scale, a naive pandas summary that loads the whole kernel table. Prints wall time
and peak RSS of each, and align's ratios against nsys measured in the same run.

    python bench/kernel_summary.py [--rows N] [--keep FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from measure import measure  # noqa: E402
from synth import Synth  # noqa: E402

NAIVE = """
import sqlite3, sys, pandas as pd
c = sqlite3.connect(sys.argv[1])
df = pd.read_sql_query("SELECT k.start, k.end, s.value AS name FROM CUPTI_ACTIVITY_KIND_KERNEL k "
                       "JOIN StringIds s ON s.id = k.demangledName", c)
d = (df["end"] - df["start"]).groupby(df["name"])
out = pd.DataFrame({"total": d.sum(), "n": d.size(), "avg": d.mean(), "med": d.median(), "min": d.min(),
                    "max": d.max(), "std": d.std()}).sort_values("total", ascending=False)
out.to_csv(sys.stdout)
"""


def build(path: Path, rows: int, names: int) -> None:
    rng = random.Random(0)
    s = Synth(path)
    s.kernel(0, 1, "warm")  # creates the table
    ids = [s.sid(f"void kernel_{i}<float, {i % 7}>(float const*, float*, int)") for i in range(names)]
    batch = []
    t = 0
    for i in range(rows):
        dur = rng.randint(800, 200_000)
        batch.append((t, t + dur, 0, 1, 7, i, ids[i % names], ids[i % names]))
        t += dur + 500
        if len(batch) == 100_000:
            s.conn.executemany("INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL (start, end, deviceId, contextId, streamId, "
                               "correlationId, demangledName, shortName) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
            batch.clear()
    if batch:
        s.conn.executemany("INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL (start, end, deviceId, contextId, streamId, "
                           "correlationId, demangledName, shortName) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
    s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--names", type=int, default=300)
    ap.add_argument("--keep", type=Path, help="keep the synthetic export here")
    args = ap.parse_args()
    from align.capture.discover import discover

    nsys = discover()
    report = "gpukernsum" if nsys.version.startswith("2022") else "cuda_gpu_kern_sum"
    tmp = Path(tempfile.mkdtemp())
    db = args.keep or tmp / "big.sqlite"
    t = time.perf_counter()
    build(db, args.rows, args.names)
    print(f"built {db} ({db.stat().st_size / 1e6:.0f} MB, {args.rows:,} kernels) in {time.perf_counter() - t:.1f} s")
    runs = {
        "align kernels": [sys.executable, "-m", "align", "kernels", str(db), "--format", "csv"],
        f"nsys stats {report} ({nsys.version})": [nsys.path, "stats", "--report", report, "--format", "csv", str(db)],
        "naive pandas (whole table)": [sys.executable, "-c", NAIVE, str(db)],
    }
    results = {name: measure(cmd) for name, cmd in runs.items()}
    nsys_key = next(k for k in results if k.startswith("nsys"))
    for name, r in results.items():
        print(f"{name:40s} {r['seconds']:7.2f} s  {r['peak_rss_mb']:8.0f} MB peak RSS  (rc {r['rc']})")
    a, n = results["align kernels"], results[nsys_key]
    print(f"align / nsys stats: time {a['seconds'] / n['seconds']:.2f}x, peak memory {a['peak_rss_mb'] / n['peak_rss_mb']:.2f}x")
    print(json.dumps({"rows": args.rows, "names": args.names, "results": results}))
    if not args.keep:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
