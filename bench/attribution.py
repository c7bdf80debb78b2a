#!/usr/bin/env python3
"""Speed and peak memory of align's projection, per-op attribution and kernel summary at scale,
against the nsys at hand in the same run.

The inputs are a SYNTHETIC SCALE-UP OF REAL ROWS: a committed real GPU profile (default
profiles/examples/llama_e2e_eager, 2,673 kernels) replicated N times by bench/scaleup.py. Each
size is measured with, in separate processes:
  align nvtx FILE --format csv        vs  nsys stats --report nvtx_gpu_proj_sum (2022.4: nvtxgpuproj)
  align ops FILE --op attention       (per-op attribution; compared with the same nsys projection)
  align kernels FILE --format csv     vs  nsys stats --report cuda_gpu_kern_sum (2022.4: gpukernsum)
nsys runs that pass --nsys-timeout are killed and reported as such.

    python bench/attribution.py [--sizes 100000,1000000,9000000] [--workdir DIR] [--nsys-timeout S]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from measure import measure  # noqa: E402
from scaleup import scale_up  # noqa: E402


def fmt(r: dict) -> str:
    if r is None:
        return "not run"
    if r["rc"] == "timeout":
        return f"> {r['seconds']:.0f} s (killed)"
    return f"{r['seconds']:.2f} s / {r['peak_rss_mb']:.0f} MB" + ("" if r["rc"] == 0 else f" (rc {r['rc']})")


def ratio(a: dict, b: dict | None, key: str) -> str:
    if b is None or a["rc"] != 0 or b["rc"] not in (0,):
        return "-"
    return f"{a[key] / b[key]:.2f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=ROOT / "profiles/examples/llama_e2e_eager/report.sqlite")
    ap.add_argument("--sizes", default="100000,1000000,9000000", help="approximate kernel counts")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/align-bench"))
    ap.add_argument("--nsys-timeout", type=float, default=900)
    ap.add_argument("--skip-nsys-projection-above", type=int, default=200_000,
                    help="nsys 2022.4's projection grows with kernels x ranges; skip it above this size")
    args = ap.parse_args()
    from align.capture.discover import discover
    from align.profile.reader import Profile

    nsys = discover()
    legacy = nsys.version.startswith("2022")
    proj_report = "nvtxgpuproj" if legacy else "nvtx_gpu_proj_sum"
    kern_report = "gpukernsum" if legacy else "cuda_gpu_kern_sum"
    with Profile(args.source) as p:
        per_copy = p.count("CUPTI_ACTIVITY_KIND_KERNEL")
        engine = p.engine.name
    args.workdir.mkdir(parents=True, exist_ok=True)
    align_cmd = [sys.executable, "-m", "align"]
    print(f"# SYNTHETIC SCALE-UP OF REAL ROWS: {args.source} ({per_copy} kernels per copy)")
    print(f"# machine: {platform.node()}, {platform.processor() or platform.machine()}; nsys {nsys.version}; "
          f"align engine {engine}")
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        copies = max(1, round(size / per_copy))
        db = args.workdir / f"scaled_{copies}.sqlite"
        if not db.exists():
            info = scale_up(args.source, db, copies)
            print(f"# built {db.name}: {info}", flush=True)
        with Profile(db) as p:
            kernels = p.count("CUPTI_ACTIVITY_KIND_KERNEL")
            ranges = p.count("NVTX_EVENTS")
        row = {"kernels": kernels, "nvtx_events": ranges, "copies": copies}
        row["align_nvtx"] = measure(align_cmd + ["nvtx", str(db), "--format", "csv"])
        row["align_ops"] = measure(align_cmd + ["ops", str(db), "--op", "attention", "--format", "csv"])
        row["align_kernels"] = measure(align_cmd + ["kernels", str(db), "--format", "csv"])
        if legacy and kernels > args.skip_nsys_projection_above:
            row["nsys_projection"] = None
        else:
            row["nsys_projection"] = measure([nsys.path, "stats", "--report", proj_report, "--format", "csv", str(db)],
                                             timeout=args.nsys_timeout)
        row["nsys_kernels"] = measure([nsys.path, "stats", "--report", kern_report, "--format", "csv", str(db)],
                                      timeout=args.nsys_timeout)
        results.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"| kernels | align nvtx | align ops | nsys {proj_report} | nvtx time/mem vs nsys | ops time/mem vs nsys "
          f"| align kernels | nsys {kern_report} | kernels time/mem vs nsys |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        np_, nk = r["nsys_projection"], r["nsys_kernels"]
        print(f"| {r['kernels']:,} | {fmt(r['align_nvtx'])} | {fmt(r['align_ops'])} | {fmt(np_)} "
              f"| {ratio(r['align_nvtx'], np_, 'seconds')} / {ratio(r['align_nvtx'], np_, 'peak_rss_mb')} "
              f"| {ratio(r['align_ops'], np_, 'seconds')} / {ratio(r['align_ops'], np_, 'peak_rss_mb')} "
              f"| {fmt(r['align_kernels'])} | {fmt(nk)} "
              f"| {ratio(r['align_kernels'], nk, 'seconds')} / {ratio(r['align_kernels'], nk, 'peak_rss_mb')} |")


if __name__ == "__main__":
    main()
