#!/usr/bin/env python3
"""What Dask buys for many reports, on this machine: `align kernels` and `align verdict` over N
scaled-up exports (bench/scaleup.py of hf_dsa_e2e, real rows replicated), as one process looping
over the files (the same per-report work, no Dask) against a local cluster of 1, 2, ... worker
processes; then a stand-in collection on a local cluster with a worker killed mid-run, counted for
every case exactly once. Wall times are the median of --repeat runs of each command, in the same run.

    python bench/scale.py [--reports 8] [--size 300000] [--verdict-size N] [--workers 1,2] [--repeat 3]
                          [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import measure  # noqa: E402
from speed import EX, scaled  # noqa: E402

SERIAL = """
import sys
from align.scale.analyses import kernels_task
from align.stats.kernels import summarize_durations
from align.stats.kernels import merge_durations
parts = [kernels_task(f, "demangled", False, {}) for f in sys.argv[1:]]
summarize_durations(merge_durations([d for _, d in parts]))
"""
SERIAL_VERDICT = """
import sys
from align.scale.verdicts import verdict_task
for f in sys.argv[2:]:
    verdict_task(f, sys.argv[1], None, None, None, {})
"""


def timed(cmd: list[str], repeat: int) -> dict:
    runs = [measure(cmd) for _ in range(repeat)]
    bad = [r for r in runs if r["rc"] != 0]
    if bad:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed: {bad[0]}")
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def analyses(args, files: list[Path], verdict_files: list[Path]) -> None:
    py = sys.executable
    names = [str(f) for f in files]
    vnames = [str(f) for f in verdict_files]
    mock = str(EX / "hf_dsa_mock" / "report.sqlite")
    store = tempfile.mkdtemp()
    for what, serial, cli in (
            ("align kernels", [py, "-c", SERIAL, *names], [py, "-m", "align", "kernels", *names, "-f", "json"]),
            ("align verdict", [py, "-c", SERIAL_VERDICT, mock, *vnames],
             [py, "-m", "align", "verdict", "--mock", mock, *sum((["--e2e", n] for n in vnames), []), "--store", store,
              "-f", "json"])):
        base = timed(serial, args.repeat)
        print(f"| {what} | one process, files in turn (no Dask) | {base['seconds']:.2f} | 1.00 | {base['peak_rss_mb']:.0f} |")
        for w in args.workers:
            r = timed(cli + ["--workers", str(w)], args.repeat)
            print(f"| {what} | local cluster, {w} worker process(es) | {r['seconds']:.2f} | "
                  f"{base['seconds'] / r['seconds']:.2f} | {r['peak_rss_mb']:.0f} |", flush=True)


def killed_worker(workers: int, delay: float) -> dict:
    """A stand-in collection on a local cluster; the first busy worker is killed (SIGKILL) mid-case."""
    from distributed import Client, LocalCluster

    from align.collect import writers

    out = Path(tempfile.mkdtemp()) / "c"
    # stand-in GPU workers: on a machine with GPUs they must not see them all (the collector refuses that)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, resources={"GPU": 1},
                      dashboard_address=":0", env={"CUDA_VISIBLE_DEVICES": ""}) as cluster:
        env = {**os.environ, "ALIGN_COLLECT_CASE_DELAY": str(delay), "ALIGN_STORE": str(out.parent / "store")}
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "align", "collect", "--op", "standin", "--runs", "2",
                                 "--warmups", "1", "--out", str(out), "--scheduler", cluster.scheduler_address,
                                 "-f", "json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with Client(cluster.scheduler_address, set_as_default=False) as client:
            deadline = time.monotonic() + 120
            while not any(client.processing().values()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise SystemExit(f"the collection ran no case: {proc.communicate()[1][-2000:]}")
                time.sleep(0.05)
            busy = next(w for w, t in client.processing().items() if t)
            pid = client.run(os.getpid, workers=[busy])[busy]
            os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=600)
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(stderr)
    data = json.loads(stdout)
    folder = next(out.rglob("standin_context_perf.txt")).parent
    rows = sum(len(writers.read_rows(f)) for f in folder.glob("*_perf.txt"))
    key = ["num_heads", "batch_size", "isl", "step"]
    unique = sum(len(writers.read_rows(f).drop_duplicates(key)) for f in folder.glob("*_perf.txt"))
    return {"workers": workers, "killed_pid": pid, "cases": 16, "done": data["done"], "failed": data["failed"],
            "rows": rows, "unique_rows": unique, "seconds": round(seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=8)
    ap.add_argument("--size", type=int, default=300_000, help="approximate kernels per scaled-up report")
    ap.add_argument("--verdict-size", type=int, default=None, help="kernels per report of the verdict (default --size)")
    ap.add_argument("--workers", default="1,2", help="local cluster sizes to time")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "align-bench-scale")
    args = ap.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    def copies(size: int, tag: str) -> tuple[Path, list[Path]]:
        one = scaled(EX / "hf_dsa_e2e" / "report.sqlite", size, args.workdir, "dsa")
        files = []
        for i in range(args.reports):  # separate files, as separate hosts' exports are
            f = args.workdir / f"{tag}{i}_{size}.sqlite"
            if not f.exists():
                f.write_bytes(one.read_bytes())
            files.append(f)
        return one, files

    one, files = copies(args.size, "host")
    vone, vfiles = copies(args.verdict_size or args.size, "vhost")
    import platform

    import distributed

    count = __import__("speed").count
    from align.profile.engine import open_duckdb

    duck = open_duckdb(one) is not None

    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"distributed {distributed.__version__}, {'DuckDB' if duck else 'SQLite (no DuckDB)'}; "
          f"{args.reports} reports of {count(one):,} kernels ({one.stat().st_size / 1e6:.0f} MB each) for kernels, "
          f"of {count(vone):,} for verdict; median of {args.repeat} runs\n")
    print("| command | how | wall s | speed-up | peak RSS MB (largest process) |\n|---|---|---|---|---|")
    analyses(args, files, vfiles)
    print("\nStand-in collection (16 cases, 0.3 s each) on a local cluster of 3 GPU=1 workers, one killed mid-case:\n")
    r = killed_worker(3, 0.3)
    print("| " + " | ".join(r) + " |\n|" + "---|" * len(r) + "\n| " + " | ".join(str(v) for v in r.values()) + " |")


if __name__ == "__main__":
    main()
