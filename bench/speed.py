#!/usr/bin/env python3
"""Speed and peak memory of align's commands against the nsys at hand, measured in the same run,
with the targets of issue 16 checked row by row.

Every command runs in its own process (bench/measure.py: wall time, peak RSS of the process tree);
the short ones run --repeat times and report the median time and the largest RSS.

  start-up      align --help, and the floor under it: python -c pass
  small         each shipped mock profile: align kernels -f csv vs nsys's kernel summary (target
                within 5x), align nvtx vs nsys's NVTX projection (reported)
  scaled        a SYNTHETIC SCALE-UP OF REAL ROWS (bench/scaleup.py of llama_e2e_eager) at each size:
                align kernels (target: no slower than nsys), align nvtx and align ops --op attention
                (target: at least 2x faster than nsys's projection), peak memory (target: at most
                nsys's below 1 M kernels, at most half of it from 1 M up)
  pair          align verdict / diff / report of hf_dsa_mock against hf_dsa_e2e, real and scaled
                up to each size (target: verdict under 2 s at ~100 k kernels)

nsys 2022.4's projection (nvtxgpuproj) grows with kernels x ranges; above --skip-nsys-projection-above
kernels it is not run and the ratio is taken against the last size it ran at (said so).

    python bench/speed.py [--sizes 100000,1000000,9000000] [--repeat 5] [--workdir DIR] > results.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from measure import measure  # bench/ is the script's folder, first on sys.path
from scaleup import scale_up

ROOT = Path(__file__).resolve().parents[1]

EX = ROOT / "profiles" / "examples"
KERNELS = "CUPTI_ACTIVITY_KIND_KERNEL"


def run(cmd: list[str], repeat: int = 1, timeout: float = 3600, env: dict | None = None) -> dict:
    """Median seconds and largest peak RSS of ``repeat`` runs (one when a run takes over 2 s)."""
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        results = [measure(cmd, timeout)]
        while len(results) < repeat and results[0]["rc"] == 0 and results[0]["seconds"] < 2:
            results.append(measure(cmd, timeout))
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    rcs = {r["rc"] for r in results}
    return {"rc": results[0]["rc"] if len(rcs) == 1 else sorted(map(str, rcs)), "runs": len(results),
            "seconds": round(statistics.median(r["seconds"] for r in results), 3),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results)}


def fmt(r: dict | None) -> str:
    if r is None:
        return "not run"
    if r["rc"] == "timeout":
        return f"> {r['seconds']:.0f} s (killed)"
    return f"{r['seconds']:.2f} s / {r['peak_rss_mb']:.0f} MB" + ("" if r["rc"] == 0 else f" (rc {r['rc']})")


def ratio(a: dict | None, b: dict | None, key: str) -> float | None:
    if a is None or b is None or a["rc"] != 0 or b["rc"] != 0:
        return None
    return a[key] / b[key]


def verdict_word(value: float | None, limit: float, how: str = "<=") -> str:
    if value is None:
        return "-"
    ok = value <= limit if how == "<=" else value < limit
    return f"{value:.2f}x {'met' if ok else 'MISSED'}"


def plain(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def count(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return int(c.execute(f"SELECT count(*) FROM {KERNELS}").fetchone()[0])


def scaled(source: Path, size: int, workdir: Path, tag: str) -> Path:
    copies = max(1, round(size / count(source)))
    db = workdir / f"{tag}_{copies}.sqlite"
    if not db.exists():
        info = scale_up(source, db, copies)
        print(f"<!-- built {db.name}: {info} -->", flush=True)
    return db


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000,9000000", help="approximate kernel counts of the scale-ups")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "align-bench")
    ap.add_argument("--nsys-timeout", type=float, default=900)
    ap.add_argument("--skip-nsys-projection-above", type=int, default=200_000)
    ap.add_argument("--pair-sizes", default=None, help="E2E sizes of the verdict pair (default: --sizes)")
    ap.add_argument("--only", default="startup,small,scaled,pair", help="sections to run, comma-separated")
    args = ap.parse_args()
    import compileall

    import align
    from align.capture.discover import discover

    # as installed from a wheel (pip byte-compiles): a checkout run with PYTHONDONTWRITEBYTECODE=1
    # would compile align's modules on every command (~20 ms on the CPU machine)
    compileall.compile_dir(Path(align.__file__).parent, quiet=1)

    nsys = discover()
    legacy = nsys.version.startswith("2022")
    proj_report = "nvtxgpuproj" if legacy else "nvtx_gpu_proj_sum"
    kern_report = "gpukernsum" if legacy else "cuda_gpu_kern_sum"
    args.workdir.mkdir(parents=True, exist_ok=True)
    store = Path(tempfile.mkdtemp(prefix="align-bench-store-"))  # verdicts are recorded there, not in profiles/
    env = {"ALIGN_STORE": str(store)}
    align = [sys.executable, "-m", "align"]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    pair_sizes = [int(s) for s in (args.pair_sizes or args.sizes).split(",") if s]
    import typer

    print(f"# align speed against nsys {nsys.version}")
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
          f"Python {platform.python_version()}, typer {typer.__version__}; medians of up to {args.repeat} runs.\n")

    def nsys_stats(report: str, db: Path) -> dict:
        return run([nsys.path, "stats", "--report", report, "--format", "csv", str(db)],
                   args.repeat, args.nsys_timeout)

    only = set(args.only.split(","))
    floor = helped = None
    if "startup" in only:
        floor, helped = start_up(align, args.repeat)
    if "small" in only:
        small(align, args, nsys_stats, kern_report, proj_report)
    if "scaled" in only:
        scaled_up(align, args, sizes, nsys_stats, kern_report, proj_report, legacy)
    if "pair" in only:
        pair(align, args, pair_sizes, store, env)
    print("\n<!-- raw: " + json.dumps({"nsys": nsys.version, "floor": floor, "help": helped}) + " -->")


def start_up(align: list[str], repeat: int) -> tuple[dict, dict]:
    floor = run([sys.executable, "-c", "pass"], repeat)
    helped = run(align + ["--help"], repeat)
    print("## Start-up\n\n| command | time / peak memory |\n|---|---|")
    print(f"| python -c pass (the floor) | {fmt(floor)} |\n| align --help | {fmt(helped)} |\n")
    return floor, helped


def small(align, args, nsys_stats, kern_report: str, proj_report: str) -> None:
    print(f"## Shipped mock profiles (target: align kernels within 5x of nsys {kern_report})\n")
    print(f"| profile | kernels | align kernels | nsys {kern_report} | time / memory vs nsys | align nvtx "
          f"| nsys {proj_report} | time / memory vs nsys |\n|---|---|---|---|---|---|---|---|")
    for d in sorted(EX.iterdir()):
        db = d / "report.sqlite"
        if "mock" not in d.name or not db.exists() or not count(db):
            continue
        ak, nk = run(align + ["kernels", str(db), "-f", "csv"], args.repeat), nsys_stats(kern_report, db)
        an, nn = run(align + ["nvtx", str(db), "-f", "csv"], args.repeat), nsys_stats(proj_report, db)
        print(f"| {d.name} | {count(db):,} | {fmt(ak)} | {fmt(nk)} | {verdict_word(ratio(ak, nk, 'seconds'), 5)} / "
              f"{verdict_word(ratio(ak, nk, 'peak_rss_mb'), 1)} | {fmt(an)} | {fmt(nn)} | "
              f"{plain(ratio(an, nn, 'seconds'))} / {plain(ratio(an, nn, 'peak_rss_mb'))} |", flush=True)


def scaled_up(align, args, sizes, nsys_stats, kern_report: str, proj_report: str, legacy: bool) -> None:
    print("\n## Scaled up (SYNTHETIC SCALE-UP OF REAL ROWS of llama_e2e_eager)\n")
    print(f"targets: align kernels <= 1x nsys {kern_report}; align nvtx and ops <= 0.5x nsys {proj_report}; "
          "peak memory <= 1x nsys below 1 M kernels, <= 0.5x from 1 M up\n")
    print(f"| kernels | align kernels | nsys {kern_report} | kernels time / memory | align nvtx | align ops "
          f"| nsys {proj_report} | nvtx time / memory | ops time / memory |\n|---|---|---|---|---|---|---|---|---|")
    last_proj = None
    for size in sizes:
        db = scaled(EX / "llama_e2e_eager" / "report.sqlite", size, args.workdir, "llama")
        n = count(db)
        ak, nk = run(align + ["kernels", str(db), "-f", "csv"], args.repeat), nsys_stats(kern_report, db)
        an = run(align + ["nvtx", str(db), "-f", "csv"], args.repeat)
        ao = run(align + ["ops", str(db), "--op", "attention", "-f", "csv"], args.repeat)
        proj, note = None, ""
        if not (legacy and n > args.skip_nsys_projection_above):
            proj = last_proj = nsys_stats(proj_report, db)
        elif last_proj is not None:
            proj, note = last_proj, f" (nsys not run: > {args.skip_nsys_projection_above:,} kernels; vs its time at the last size)"
        mem_limit = 1.0 if n < 900_000 else 0.5
        cells = [f"{n:,}", fmt(ak), fmt(nk),
                 f"{verdict_word(ratio(ak, nk, 'seconds'), 1)} / {verdict_word(ratio(ak, nk, 'peak_rss_mb'), mem_limit)}",
                 fmt(an), fmt(ao), (fmt(proj) if not note else "not run") + note]
        for a in (an, ao):
            mem = ratio(a, proj, "peak_rss_mb") if not note else None
            cells.append(f"{verdict_word(ratio(a, proj, 'seconds'), 0.5)} / {verdict_word(mem, mem_limit)}")
        print("| " + " | ".join(cells) + " |", flush=True)


def pair(align, args, pair_sizes, store: Path, env: dict) -> None:
    print("\n## Mock vs E2E: hf_dsa_mock against hf_dsa_e2e (real, then scaled up; target: verdict < 2 s at ~100 k)\n")
    print("| E2E kernels | align verdict | align diff | align report |\n|---|---|---|---|")
    mock = EX / "hf_dsa_mock" / "report.sqlite"
    e2es = [EX / "hf_dsa_e2e" / "report.sqlite"] + [scaled(EX / "hf_dsa_e2e" / "report.sqlite", s, args.workdir, "dsa")
                                                     for s in pair_sizes]
    for e2e in e2es:
        n = count(e2e)
        v = run(align + ["verdict", "--mock", str(mock), "--e2e", str(e2e), "--op", "dsa", "-f", "json"],
                args.repeat, env=env)
        d = run(align + ["diff", str(mock), str(e2e), "--op", "dsa", "-f", "csv"], args.repeat, env=env)
        r = run(align + ["report", str(mock), str(e2e), "--op", "dsa", "-o", str(store / "r.html")], args.repeat, env=env)
        word = f" ({'met' if v['seconds'] < 2 else 'MISSED'})" if 50_000 <= n <= 200_000 else ""
        print(f"| {n:,} | {fmt(v)}{word} | {fmt(d)} | {fmt(r)} |", flush=True)


if __name__ == "__main__":
    main()
