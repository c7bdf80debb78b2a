"""NVTX → GPU projection against nsys (committed oracles, the live nsys 2022.4) and synthetic edge cases."""

from __future__ import annotations

import io
import subprocess

import numpy as np
import pandas as pd
import pytest

import align
from align.attribute.launches import load_launches
from align.attribute.nvtx_rows import TRACE_COLUMNS, gpu_proj_sum_rows, range_table_rows
from align.attribute.projection import Projection

from .conftest import ROOT, run_align
from .synth import PID, Synth, gtid
from .test_examples import EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("args,oracle", [((), "oracle_nvtx_gpu_proj_sum.csv"),
                                         (("--kernels",), "oracle_nvtx_kern_sum.csv")])
def test_align_nvtx_equals_nsys_stats(example, args, oracle):
    r = run_align("nvtx", str(example), *args, "--format", "csv")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (example / oracle).read_text()


@pytest.mark.nsys
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_per_range_trace_equals_live_nsys_2022(nsys, example, tmp_path):
    """The installed nsys 2022.4's own nvtxgpuproj trace on the committed GPU export, range by range."""
    if not nsys.version.startswith("2022"):
        pytest.skip("this oracle is the 2022.x report name nvtxgpuproj")
    db = tmp_path / "report.sqlite"
    db.write_bytes((example / "report.sqlite").read_bytes())
    out = subprocess.run([nsys.path, "stats", "--report", "nvtxgpuproj", "--format", "csv", str(db)],
                         capture_output=True, text=True, timeout=300)
    theirs = pd.read_csv(io.StringIO(out.stdout[out.stdout.index("Name,"):]))
    with align.load(db) as p:
        ours = Projection(p).range_table()
    merged = ours.merge(theirs, left_on="range_id", right_on="RangeId", how="outer", indicator=True)
    assert (merged["_merge"] == "both").all()
    # nsys 2022.4 writes domain:text for ranges in a named domain (CUB's "CCCL"), the text otherwise
    expected = np.where(merged["domain"].astype(str) != "", merged["domain"].astype(str) + ":" + merged["text"].astype(str),
                        merged["text"].astype(str))
    assert (expected == merged["Name"]).all()
    assert (merged["proj_start"] == merged["Projected Start (ns)"]).all()
    assert (merged["proj_duration"] == merged["Projected Duration (ns)"]).all()
    assert (merged["gpu_ops"] == merged["NumGPUOps"]).all()
    assert (merged["level"] == merged["Lvl"]).all()
    assert (merged["children"] == merged["NumChild"]).all()


def test_graph_kernels_are_attributed_to_their_capture_ranges():
    """In the graph-replayed E2E decode, every replayed kernel lies, at capture time, in a layer range;
    each layer's attention kernels replay once per decode step."""
    with align.load(ROOT / "profiles/examples/llama_e2e") as p:
        proj = Projection(p)
        origins, members = proj.capture_members
        ops = proj.gpu.ops
        steps = int((p.nvtx()["text"] == "decode_step").sum())
    names = proj.ranges.df["name"].to_numpy()
    node_ranges = pd.DataFrame({"node": origins["graph_node_id"].to_numpy()[members.item_idx],
                                "range": names[members.range_idx]})
    replayed = ops[ops["graph_node_id"] >= 0]
    per_node = node_ranges.groupby("node")["range"].agg(set)
    kernel_ranges = per_node.reindex(replayed["graph_node_id"].astype("int64").to_numpy())
    assert kernel_ranges.notna().all()
    assert all(":capture_decode_graph" in s for s in kernel_ranges)
    in_attn = {i: sum(f":layers.{i}.self_attn" in s for s in kernel_ranges) for i in range(4)}
    assert len(set(in_attn.values())) == 1 and in_attn[0] > 0 and in_attn[0] % steps == 0


def assert_twins_agree(p: align.Profile) -> None:
    """The plain projection (small exports, no pandas) gives the columnar one's rows exactly."""
    pr = Projection(p)
    table, summary = pr.range_table(), pr.gpu_proj_sum()
    plain = range_table_rows(p).to_frame()
    assert len(plain) == len(table)
    for c in TRACE_COLUMNS:
        assert _values(plain[c]) == _values(table[c]), c
    plain = gpu_proj_sum_rows(p).to_frame()
    assert plain.columns.tolist() == summary.columns.tolist()
    for c in summary.columns:
        assert _values(plain[c]) == _values(summary[c]), c


def _values(column: pd.Series) -> list:
    """Python values with NaN as None: 1 == 1.0, and a missing level is missing in both."""
    return [None if isinstance(v, float) and v != v else v for v in column.astype(object).tolist()]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_plain_projection_equals_columnar(example):
    with align.load(example) as p:
        assert_twins_agree(p)


# ---- synthetic edge cases --------------------------------------------------------------------
def _proj(s: Synth) -> tuple[pd.DataFrame, pd.DataFrame]:
    with align.load(s.close()) as p:
        pr = Projection(p)
        assert_twins_agree(p)
        return pr.range_table(), pr.gpu_proj_sum()


def test_nested_ranges_and_ops_outside_any_range(tmp_path):
    s = Synth(tmp_path / "a.sqlite").enums()
    s.nvtx(0, 1000, "outer")
    s.nvtx(100, 400, "inner")
    s.nvtx(500, 600, "idle")          # launches nothing: not in the projection
    s.runtime(150, 160, "cudaLaunchKernel_v7000", corr=1)
    s.kernel(200, 300, "k1", corr=1)
    s.runtime(700, 710, "cudaLaunchKernel_v7000", corr=2)
    s.kernel(900, 1500, "k2", corr=2)  # runs past the range's end: projection follows the GPU
    s.runtime(2000, 2010, "cudaLaunchKernel_v7000", corr=3)
    s.kernel(2100, 2200, "k3", corr=3)  # outside every range
    table, summary = _proj(s)
    t = table.set_index("text")
    assert set(t.index) == {"outer", "inner"}
    assert (t.loc["outer", "proj_start"], t.loc["outer", "proj_duration"], t.loc["outer", "gpu_ops"]) == (200, 1300, 2)
    assert (t.loc["inner", "proj_start"], t.loc["inner", "proj_duration"], t.loc["inner", "gpu_ops"]) == (200, 100, 1)
    assert t.loc["inner", "level"] == 1 and t.loc["outer", "children"] == 1
    assert summary["range"].tolist() == [":outer", ":inner"]


def test_call_must_lie_wholly_inside_the_range_on_the_same_thread(tmp_path):
    s = Synth(tmp_path / "a.sqlite").enums()
    s.nvtx(100, 200, "r")
    s.runtime(190, 210, "cudaLaunchKernel_v7000", corr=1)              # straddles the end
    s.kernel(300, 310, "k", corr=1)
    s.runtime(120, 130, "cudaLaunchKernel_v7000", corr=2, tid=PID + 1)  # other thread
    s.kernel(300, 310, "k", corr=2)
    table, _ = _proj(s)
    assert table.empty


def test_correlation_ids_are_per_process(tmp_path):
    s = Synth(tmp_path / "a.sqlite").enums()
    for pid in (100, 200):
        s.nvtx(0, 1000, f"range_{pid}", pid=pid, tid=pid)
        s.runtime(10, 20, "cudaLaunchKernel_v7000", corr=7, pid=pid, tid=pid)
    s.kernel(50, 60, "k", corr=7, pid=100)
    s.kernel(50, 90, "k", corr=7, pid=200)
    table, _ = _proj(s)
    t = table.set_index("text")
    assert t.loc["range_100", "proj_duration"] == 10 and t.loc["range_200", "proj_duration"] == 40
    assert list(t["pid"]) == [100, 200]


def test_start_end_ranges_overlap_freely(tmp_path):
    s = Synth(tmp_path / "a.sqlite").enums()
    s.nvtx(0, 500, "a", event_type=60)
    s.nvtx(300, 900, "b", event_type=60)   # overlaps a without nesting
    s.nvtx(350, 450, "pp")                 # push/pop inside both
    s.runtime(400, 410, "cudaLaunchKernel_v7000", corr=1)
    s.kernel(420, 430, "k", corr=1)
    s.runtime(600, 610, "cudaLaunchKernel_v7000", corr=2)
    s.kernel(620, 700, "k", corr=2)
    table, summary = _proj(s)
    t = table.set_index("text")
    assert t.loc["a", "gpu_ops"] == 1 and t.loc["b", "gpu_ops"] == 2 and t.loc["pp", "gpu_ops"] == 1
    assert t.loc["b", "proj_duration"] == 280
    # pp's parent is the enclosing range with the least slack: a (350 + 50) rather than b (50 + 450)
    assert table.set_index("range_index").loc[t.loc["pp", "parent"], "text"] == "a"
    assert set(summary["style"]) == {"StartEnd", "PushPop"}


def test_cuda_graph_launch_counts_once_and_spans_its_nodes(tmp_path):
    s = Synth(tmp_path / "a.sqlite").enums()
    s.nvtx(0, 100, "step")
    s.runtime(10, 20, "cudaGraphLaunch_v10000", corr=5)
    for i, (a, b) in enumerate([(30, 40), (45, 80), (85, 200)]):
        s.kernel(a, b, f"node{i}", corr=5, graph_node=(2 << 32) + i)
    table, _ = _proj(s)
    assert table["gpu_ops"].tolist() == [1] and table["proj_duration"].tolist() == [170]


def test_capture_time_attribution_in_both_schemas(tmp_path):
    for schema in ("3.0.0", "3.20.3"):
        s = Synth(tmp_path / f"{schema}.sqlite", schema).enums()
        s.nvtx(0, 100, "capture")
        s.nvtx(10, 50, "layers.0.self_attn")
        s.graph_node(20, (1 << 32) + 1, None)       # captured inside the attention range
        s.graph_node(60, (1 << 32) + 2, None)       # captured outside it
        s.graph_node(200, (2 << 32) + 1, None)
        s.graph_node(200, (2 << 32) + 1, (1 << 32) + 1)
        s.graph_node(200, (2 << 32) + 2, (1 << 32) + 2)
        with align.load(s.close()) as p:
            pr = Projection(p)
            origins, m = pr.capture_members
        names = pr.ranges.df["name"].to_numpy()
        got = {}
        for r, i in zip(m.range_idx, m.item_idx):
            got.setdefault(int(origins["graph_node_id"].iloc[i]), set()).add(names[r])
        assert got[(2 << 32) + 1] == {":capture", ":layers.0.self_attn"}
        assert got[(2 << 32) + 2] == {":capture"}


def test_no_nvtx_and_no_runtime(tmp_path):
    s = Synth(tmp_path / "a.sqlite")
    s.kernel(0, 10, "k")
    path = s.close()
    with align.load(path) as p:
        pr = Projection(p)
        assert pr.range_table().empty and pr.gpu_proj_sum().empty
        ks = pr.kern_sum()
        assert ks["range"].isna().all() and ks["kernel_instances"].tolist() == [1]
    r = run_align("nvtx", str(path))
    assert r.returncode == 2 and "no NVTX data" in r.stderr


def test_many_threads_random_nesting_matches_brute_force(tmp_path):
    """Random properly nested push/pop ranges on several threads: the fast query equals a direct check."""
    rng = np.random.default_rng(0)
    s = Synth(tmp_path / "a.sqlite").enums()
    corr = 0
    truth = []
    for tid in range(3):
        def build(lo: int, hi: int, depth: int) -> None:
            nonlocal corr
            t = lo
            while t < hi - 20 and depth < 4:
                a = int(rng.integers(t, min(hi - 10, t + 200)))
                b = int(rng.integers(a + 5, min(hi, a + 400)))
                s.nvtx(a, b, f"d{depth}", tid=PID + tid)
                truth.append((PID + tid, a, b))
                build(a + 1, b - 1, depth + 1)
                t = b + 1
        build(0, 5000, 0)
        for _ in range(200):
            a = int(rng.integers(0, 5000))
            corr += 1
            s.runtime(a, a + int(rng.integers(0, 30)), "cudaLaunchKernel_v7000", corr=corr, tid=PID + tid)
            s.kernel(a + 50, a + 60, "k", corr=corr)
    with align.load(s.close()) as p:
        assert_twins_agree(p)
        pr = Projection(p)
        calls = load_launches(p).rename(columns={"api_start": "start", "api_end": "end"})  # the same rows, in order
        members = pd.DataFrame({"r": pr.call_members.range_idx, "c": pr.call_members.item_idx})
    rdf = pr.ranges.df
    got = set(zip(rdf["start"].to_numpy()[members["r"]], rdf["end"].to_numpy()[members["r"]],
                  calls["start"].to_numpy()[members["c"]], calls["gtid"].to_numpy()[members["c"]]))
    want = set()
    for gt, a, b in truth:
        for cs, ce, cg in zip(calls["start"], calls["end"], calls["gtid"]):
            if cg == gtid(PID, gt) and a <= cs and ce <= b:
                want.add((a, b, cs, cg))
    assert got == want and len(want) > 100
