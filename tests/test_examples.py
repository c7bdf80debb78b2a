"""The committed real GPU profiles (H100, nsys 2025.3) against `nsys stats` of the same files.

Oracles: ``oracle_*.csv`` written by ``nsys stats`` on the GPU machine (profiles/examples/capture.sh),
and, live in CI, the Debian nsys 2022.4's own ``gpukernsum`` report on the same SQLite files.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

import align
from align.profile.processes import process_table
from align.stats.kernels import kernel_summary

from .conftest import ROOT, run_align

EXAMPLES = sorted(p.parent for p in (ROOT / "profiles" / "examples").glob("*/oracle_cuda_gpu_kern_sum.csv"))
DATA = ROOT / "tests" / "data"


def test_there_are_examples():
    names = {p.name for p in EXAMPLES}
    assert {"attn_mock", "llama_e2e"} <= names
    for p in EXAMPLES:
        assert (p / "report.sqlite").stat().st_size < 2 * 1024 * 1024


def _csv_rows(text: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if r]
    return rows[0], rows[1:]


def _compare_kernel_csv(ours: str, oracle: str) -> None:
    """Same header; same rows in the same order; integers exact; rounded values equal."""
    h1, r1 = _csv_rows(ours)
    h2, r2 = _csv_rows(oracle)
    assert h1 == h2
    assert [r[-1] for r in r1] == [r[-1] for r in r2]
    for a, b in zip(r1, r2):
        row = dict(zip(h1, zip(a, b)))
        for col in ("Total Time (ns)", "Instances", "Min (ns)", "Max (ns)"):
            assert int(row[col][0]) == int(row[col][1]), (row["Name"], col)
        for col in ("Time (%)", "Avg (ns)", "Med (ns)", "StdDev (ns)"):
            assert float(row[col][0]) == float(row[col][1]), (row["Name"], col)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("name,oracle", [("demangled", "oracle_cuda_gpu_kern_sum.csv"),
                                         ("short", "oracle_cuda_gpu_kern_sum_base.csv")])
def test_align_kernels_equals_nsys_stats(example, name, oracle):
    r = run_align("kernels", str(example), "--name", name, "--format", "csv")
    assert r.returncode == 0, r.stderr
    expected = (example / oracle).read_text()
    _compare_kernel_csv(r.stdout, expected)
    assert r.stdout == expected  # byte for byte, so scripts written for nsys keep working


def test_rounding_edges_match_nsys_2025():
    with align.load(DATA / "rounding.sqlite") as p:
        ours = kernel_summary(p)
    buf = io.StringIO()
    ours.rename(columns=dict(zip(ours.columns, _csv_rows((DATA / "rounding_nsys2025.3_cuda_gpu_kern_sum.csv")
                                                          .read_text())[0]))).to_csv(buf, index=False)
    _compare_kernel_csv(buf.getvalue(), (DATA / "rounding_nsys2025.3_cuda_gpu_kern_sum.csv").read_text())


def _by_launch_vs_legacy(summary: pd.DataFrame, legacy_csv: str) -> None:
    """nsys 2022.4's gpukernsum: same grouping with by_launch; its SQLite rounds near-ties up, so
    rounded values may differ by one step of 0.1."""
    legacy = pd.read_csv(io.StringIO(legacy_csv))
    key = ["Name", "GridXYZ", "BlockXYZ"]
    ours = summary.rename(columns={"name": "Name", "grid": "GridXYZ", "block": "BlockXYZ"})
    merged = ours.merge(legacy, on=key, how="outer", indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"][key]
    assert (merged["instances"] == merged["Instances"]).all()
    assert (merged["total_ns"] == merged["Total Time (ns)"]).all()
    assert (merged["min_ns"] == merged["Min (ns)"]).all()
    assert (merged["max_ns"] == merged["Max (ns)"]).all()
    for ours_col, theirs in (("avg_ns", "Avg (ns)"), ("med_ns", "Med (ns)"), ("stddev_ns", "StdDev (ns)"),
                             ("time_pct", "Time (%)")):
        assert ((merged[ours_col] - merged[theirs]).abs() <= 0.1 + 1e-9).all(), ours_col


def test_rounding_edges_against_nsys_2022_file():
    with align.load(DATA / "rounding.sqlite") as p:
        _by_launch_vs_legacy(kernel_summary(p, by_launch=True), (DATA / "rounding_nsys2022.4_gpukernsum.csv").read_text())


@pytest.mark.nsys
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_by_launch_equals_live_nsys_2022(nsys, example, tmp_path):
    """The installed nsys's own report on the committed GPU export (forward-compatible columns)."""
    if not nsys.version.startswith("2022"):
        pytest.skip("this oracle is the 2022.x report name gpukernsum")
    db = tmp_path / "report.sqlite"
    db.write_bytes((example / "report.sqlite").read_bytes())
    out = subprocess.run([nsys.path, "stats", "--report", "gpukernsum", "--format", "csv", str(db)],
                         capture_output=True, text=True, timeout=300)
    text = out.stdout[out.stdout.index("Time (%)"):]
    with align.load(db) as p:
        _by_launch_vs_legacy(kernel_summary(p, by_launch=True), text)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_reader_agrees_with_nsys_reports(example):
    kern = pd.read_csv(example / "oracle_cuda_gpu_kern_sum.csv")
    nvtx = pd.read_csv(example / "oracle_nvtx_sum.csv")
    api = pd.read_csv(example / "oracle_cuda_api_sum.csv")
    with align.load(example) as p:
        assert p.schema_version.startswith("3.") and p.product_version.startswith("2025.3")
        k = p.kernels()
        assert len(k) == kern["Instances"].sum()
        assert k["duration"].sum() == kern["Total Time (ns)"].sum()
        assert (k.groupby("name").size().sort_index() ==
                kern.set_index("Name")["Instances"].sort_index()).all()
        # every kernel is joined to the API call that launched it, on a known thread of its process
        assert k["launch_api"].notna().all() and k["tid"].notna().all()
        # every process launched kernels, but the parent that only spawned the workers of a multi-process run
        procs = process_table(p).set_index("pid")
        assert set(k["pid"]) <= set(procs.index)
        idle = set(procs.index) - set(k["pid"])
        assert (procs.loc[sorted(idle), "kernels"] == 0).all() and len(idle) <= (1 if len(set(k["pid"])) > 1 else 0)
        ranges = p.nvtx(marks=False)
        # nsys names a range domain:text (":text" in the default domain; CUB's own ranges are "CCCL:...")
        ranges["range"] = ranges["domain"].fillna("").astype(str) + ":" + ranges["text"].astype(str)
        ours = ranges.groupby("range")["duration"].agg(["count", "sum"])
        theirs = nvtx.set_index("Range")
        assert set(ours.index) == set(theirs.index)
        assert (ours["count"] == theirs.loc[ours.index, "Instances"]).all()
        assert (ours["sum"] == theirs.loc[ours.index, "Total Time (ns)"]).all()
        # nsys's cuda_api_sum strips only 4-digit version suffixes (_v7000, not _v11060)
        calls = p.cuda_api()["name"].str.replace(r"_v\d{4}$", "", regex=True).value_counts()
        assert (calls.loc[api["Name"]].to_numpy() == api["Num Calls"].to_numpy()).all()
        meta = json.loads((example / "meta.json").read_text())
        gpus = p.gpus()["name"].tolist()
        # the machines the examples were captured on: one H100, one H200, two H200s
        assert gpus in (["NVIDIA H100 80GB HBM3"], ["NVIDIA H200"], ["NVIDIA H200"] * 2)
        assert meta["status"] == "ok" and meta["gpus"] == gpus


def test_graph_replayed_kernels_point_at_captured_nodes():
    """--cuda-graph-trace=node: replayed kernels carry their graph node, whose original is a captured node."""
    with align.load(ROOT / "profiles/examples/llama_e2e") as p:
        k = p.kernels()
        nodes = p.graph_nodes()
        origins = p.graph_node_origins()
        assert p.summary()["cuda_graph_trace"] == "Node"
    replayed = k[k["graph_node_id"].notna()]
    assert len(replayed) > 0
    node_ids = replayed["graph_node_id"].astype("int64")
    assert set(node_ids) <= set(nodes["graph_node_id"])
    origins = origins.set_index("graph_node_id")
    captured = origins.loc[node_ids.unique(), "original_graph_node_id"]
    # each replayed (instantiated) node was cloned from a different node created during capture ...
    assert (captured.to_numpy() != captured.index.to_numpy()).all()
    assert set(captured) <= set(nodes["graph_node_id"]) and captured.is_unique
    # ... inside the capture_decode_graph range, on the thread that captured it
    with align.load(ROOT / "profiles/examples/llama_e2e") as p:
        cap = p.nvtx().query("text == 'capture_decode_graph'").iloc[0]
    at = origins.loc[node_ids.unique()]
    assert at["capture_start"].between(cap["start"], cap["end"]).all()
    assert (at["capture_tid"] == cap["tid"]).all()
    # one graph launch per decode step: all its kernels share the launch's correlation id
    assert replayed["launch_api"].str.startswith("cudaGraphLaunch").all()
    decode_launches = replayed["correlation_id"].nunique()
    with align.load(ROOT / "profiles/examples/llama_e2e") as p:
        steps = (p.nvtx()["text"] == "decode_step").sum()
    assert decode_launches == steps
    with align.load(ROOT / "profiles/examples/llama_e2e_eager") as p:
        assert p.kernels()["graph_node_id"].isna().all()


def test_demo_commands_on_examples():
    r = run_align("profiles", "--store", str(ROOT / "profiles"), "--format", "json")
    listed = {e["name"] for e in json.loads(r.stdout)}
    assert {"examples/attn_mock", "examples/llama_e2e"} <= listed
    r = run_align("kernels", "examples/attn_mock", "--store", str(ROOT / "profiles"), "--limit", "3",
                  "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 3 and rows[0]["total_ns"] >= rows[1]["total_ns"] >= rows[2]["total_ns"]


def test_table_output_keeps_brackets_in_kernel_names():
    r = run_align("kernels", "examples/attn_mock", "--store", str(ROOT / "profiles"), "--limit", "1",
                  env={"COLUMNS": "400"})
    assert r.returncode == 0, r.stderr
    assert "[lambda(int) (instance 1)]" in r.stdout


def test_report_newer_than_its_export_falls_back_when_nsys_cannot_read_it(tmp_path):
    """A 2025.3 report the local nsys cannot open, touched after its export: the export is used, with a warning."""
    import os
    import warnings

    src = ROOT / "profiles/examples/attn_mock"
    for f in ("report.nsys-rep", "report.sqlite"):
        (tmp_path / f).write_bytes((src / f).read_bytes())
    rep = tmp_path / "report.nsys-rep"
    later = (tmp_path / "report.sqlite").stat().st_mtime + 60
    os.utime(rep, (later, later))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with align.load(rep) as p:
            assert p.path == tmp_path / "report.sqlite" and p.has_kernels
    assert any("older than report.nsys-rep" in str(w.message) for w in caught)
    # within the tolerance, no export is attempted
    os.utime(rep, (later - 59, later - 59))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        align.load(rep).close()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_align_nvtx_cpu_equals_nsys_nvtx_sum(example):
    """The CPU-side range times (align nvtx --cpu) are nsys 2025.3's nvtx_sum of the same file."""
    r = run_align("nvtx", str(example), "--cpu", "--format", "csv")
    assert r.returncode == 0, r.stderr
    assert r.stdout.replace("\r", "") == (example / "oracle_nvtx_sum.csv").read_text().replace("\r", "")
