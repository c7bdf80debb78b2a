"""Edge cases of the reader on synthetic exports: both schema generations, missing tables, text vs textId."""

from __future__ import annotations

import statistics

import pytest

import align
from align.errors import ProfileError
from align.stats.kernels import kernel_summary

from .synth import PID, Synth


@pytest.fixture(params=["3.0.0", "3.20.3"])
def schema(request):
    return request.param


def test_metadata_table_of_either_generation(tmp_path, schema):
    s = Synth(tmp_path / "a.sqlite", schema).enums()
    s.nvtx(0, 10, "x")
    with align.load(s.close()) as p:
        assert p.schema_version == schema
        assert p.product_version.startswith("2025" if schema != "3.0.0" else "2022")
        assert not p.has_kernels
        assert p.summary()["kernels"] == 0


def test_nvtx_text_and_registered_text_id(tmp_path, schema):
    s = Synth(tmp_path / "a.sqlite", schema).enums()
    s.nvtx(0, 100, "plain")
    s.nvtx(10, 20, "registered", registered=True)
    s.nvtx(30, None, "marker", event_type=34)
    s.nvtx(40, 90, "se", event_type=60)
    with align.load(s.close()) as p:
        df = p.nvtx()
        assert df["text"].tolist() == ["plain", "registered", "marker", "se"]
        assert df["style"].tolist() == ["PushPop", "PushPop", "Mark", "StartEnd"]
        assert df["depth"].tolist()[:2] == [0, 1]
        assert df["depth"].isna().tolist()[2:] == [True, True]
        assert p.nvtx(marks=False)["text"].tolist() == ["plain", "registered", "se"]


def test_nvtx_codes_without_enum_tables(tmp_path):
    s = Synth(tmp_path / "a.sqlite")
    s.nvtx(0, 100, "a")
    s.nvtx(5, None, "m", event_type=34)
    with align.load(s.close()) as p:
        assert p.nvtx()["style"].tolist() == ["PushPop", "Mark"]


def test_domains_and_categories_are_per_process(tmp_path):
    s = Synth(tmp_path / "a.sqlite").enums()
    s.nvtx(0, None, "dom_a", event_type=75, domain=1, pid=1, tid=1)
    s.nvtx(0, None, "dom_b", event_type=75, domain=1, pid=2, tid=2)
    s.nvtx(0, None, "cat", event_type=33, domain=1, category=3, pid=1, tid=1)
    s.nvtx(10, 20, "r", domain=1, pid=1, tid=1, category=3)
    s.nvtx(10, 20, "r", domain=1, pid=2, tid=2)
    s.nvtx(10, 20, "r", domain=0, pid=2, tid=3)
    with align.load(s.close()) as p:
        df = p.nvtx().sort_values(["pid", "tid"])
        assert df["domain"].fillna("-").tolist() == ["dom_a", "dom_b", "-"]
        assert df["category"].fillna("-").tolist() == ["cat", "-", "-"]
        assert df["pid"].tolist() == [1, 2, 2]
        assert df["tid"].tolist() == [1, 2, 3]


def test_depth_edge_cases(tmp_path):
    s = Synth(tmp_path / "a.sqlite").enums()
    # parent [0,100]; children touching at 50; a child sharing the parent's start; a zero-length
    # range at 50 lies inside [50,100] by time, so it counts as that range's child (as nsys's
    # tightest-enclosing-range rule has it)
    s.nvtx(0, 100, "parent")
    s.nvtx(0, 40, "first_child_same_start")
    s.nvtx(10, 20, "grandchild")
    s.nvtx(40, 50, "second_child_touching")
    s.nvtx(50, 50, "zero")
    s.nvtx(50, 100, "third_child_same_end")
    s.nvtx(0, 5, "other_thread", tid=PID + 1)
    with align.load(s.close()) as p:
        depth = dict(zip(p.nvtx()["text"], p.nvtx()["depth"]))
    assert depth == {"parent": 0, "first_child_same_start": 1, "grandchild": 2, "second_child_touching": 1,
                     "zero": 2, "third_child_same_end": 1, "other_thread": 0}


def test_kernels_decode_ids_and_join_their_launch(tmp_path, schema):
    s = Synth(tmp_path / "a.sqlite", schema).enums()
    s.runtime(100, 110, "cudaLaunchKernel_v7000", corr=5, tid=PID + 3)
    s.runtime(200, 210, "cuLaunchKernelEx", corr=6, event_class=1)
    # the same correlation id in another process must not join to this launch
    s.runtime(100, 110, "cudaLaunchKernel_v7000", corr=5, pid=777, tid=778)
    s.kernel(150, 180, "void k<int>(int)", short="k", corr=5, grid=(4, 2, 1))
    s.kernel(250, 260, "gemm", corr=6, graph_node=(2 << 32) + 1)
    with align.load(s.close()) as p:
        k = p.kernels()
        assert k["name"].tolist() == ["void k<int>(int)", "gemm"]
        assert k["short_name"].tolist() == ["k", "gemm"]
        assert k["duration"].tolist() == [30, 10]
        assert k["pid"].tolist() == [PID, PID]
        assert k["tid"].tolist() == [PID + 3, PID]
        assert k["launch_api"].tolist() == ["cudaLaunchKernel_v7000", "cuLaunchKernelEx"]
        assert k["grid_x"].tolist() == [4, 1]
        assert int(k["graph_node_id"].iloc[1]) == (2 << 32) + 1
        assert ("green_context_id" in k) and (k["green_context_id"].isna().all())
        api = p.cuda_api()
        assert api["api"].tolist()[:2] == ["runtime", "runtime"] and "driver" in api["api"].tolist()
        assert set(api["base_name"]) == {"cudaLaunchKernel", "cuLaunchKernelEx"}


def test_kernels_without_runtime_table(tmp_path):
    s = Synth(tmp_path / "a.sqlite")
    s.kernel(0, 5, "k")
    with align.load(s.close()) as p:
        k = p.kernels()
        assert k["tid"].isna().all() and k["name"].tolist() == ["k"]


def test_graph_node_table_of_either_generation(tmp_path, schema):
    s = Synth(tmp_path / "a.sqlite", schema)
    s.graph_node(10, (1 << 32) + 1, None, tid=PID + 1)  # created at capture time on another thread
    # instantiation: nsys writes the clone twice, once without and once with its original
    s.graph_node(20, (2 << 32) + 1, None)
    s.graph_node(20, (2 << 32) + 1, (1 << 32) + 1)
    with align.load(s.close()) as p:
        g = p.graph_nodes()
        assert g["graph_node_id"].tolist() == [(1 << 32) + 1, (2 << 32) + 1, (2 << 32) + 1]
        assert g["original_graph_node_id"].isna().tolist() == [True, True, False]
        o = p.graph_node_origins().set_index("graph_node_id")
        assert o.loc[(2 << 32) + 1, "original_graph_node_id"] == (1 << 32) + 1
        assert o.loc[(1 << 32) + 1, "original_graph_node_id"] == (1 << 32) + 1
        assert o.loc[(2 << 32) + 1, "capture_start"] == 10 and o.loc[(2 << 32) + 1, "capture_tid"] == PID + 1


def test_new_style_graph_events_table_is_not_mistaken_for_nodes(tmp_path):
    s = Synth(tmp_path / "a.sqlite")
    s.conn.execute("CREATE TABLE CUDA_GRAPH_EVENTS (start INTEGER, end INTEGER, graphId INTEGER, "
                   "originalGraphId INTEGER, graphExecId INTEGER)")
    with align.load(s.close()) as p:
        assert p.graph_nodes().empty


def test_processes_lists_only_active_ones_by_default(tmp_path):
    s = Synth(tmp_path / "a.sqlite").enums()
    s.process(PID, "python")
    s.process(1, "init")
    s.nvtx(0, 5, "x")
    s.gpu(0, "NVIDIA H100 80GB HBM3")
    with align.load(s.close()) as p:
        assert p.processes()["pid"].tolist() == [PID]
        assert sorted(p.processes(all=True)["pid"]) == [1, PID]
        assert p.gpus()["name"].tolist() == ["NVIDIA H100 80GB HBM3"]
        assert p.summary()["gpus"] == ["NVIDIA H100 80GB HBM3"]


def test_kernel_summary_statistics(tmp_path):
    s = Synth(tmp_path / "a.sqlite")
    durations = {"a": [10, 20, 25, 40], "b": [7, 3, 4], "c": [5]}
    t = 0
    for name, ds in durations.items():
        for d in ds:
            s.kernel(t, t + d, name, short=name.upper(), grid=(len(ds), 1, 1))
            t += 100
    with align.load(s.close()) as p:
        df = kernel_summary(p).set_index("name")
        total = sum(map(sum, durations.values()))
        for name, ds in durations.items():
            row = df.loc[name]
            assert row.instances == len(ds) and row.total_ns == sum(ds)
            assert row.min_ns == min(ds) and row.max_ns == max(ds)
            assert row.avg_ns == pytest.approx(statistics.mean(ds), abs=0.0501)
            assert row.med_ns == pytest.approx(statistics.median(ds), abs=0.0501)
            sd = statistics.stdev(ds) if len(ds) > 1 else 0.0
            assert row.stddev_ns == pytest.approx(sd, abs=0.0501)
            assert row.time_pct == pytest.approx(100 * sum(ds) / total, abs=0.0501)
        assert kernel_summary(p)["name"].tolist() == ["a", "b", "c"]  # by total time
        assert kernel_summary(p, sort="instances", limit=2)["name"].tolist() == ["a", "b"]
        assert kernel_summary(p, sort="name")["name"].tolist() == ["a", "b", "c"]
        assert set(kernel_summary(p, name="short")["name"]) == {"A", "B", "C"}
        # mangled names are absent here: nsys falls back to the demangled name
        assert set(kernel_summary(p, name="mangled")["name"]) == {"a", "b", "c"}
        by_launch = kernel_summary(p, by_launch=True)
        assert by_launch["grid"].tolist() == ["   4    1    1", "   3    1    1", "   1    1    1"]


def test_kernel_summary_splits_launch_shapes_only_when_asked(tmp_path):
    s = Synth(tmp_path / "a.sqlite")
    s.kernel(0, 10, "k", grid=(1, 1, 1))
    s.kernel(20, 40, "k", grid=(2, 1, 1))
    with align.load(s.close()) as p:
        assert kernel_summary(p)["instances"].tolist() == [2]
        assert kernel_summary(p, by_launch=True)["instances"].tolist() == [1, 1]


def test_not_an_export(tmp_path):
    bad = tmp_path / "x.sqlite"
    bad.write_bytes(b"\x00" * 4096)  # what an interrupted nsys export leaves
    with pytest.raises(ProfileError, match="not an SQLite file"):
        align.load(bad)
    import sqlite3

    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (a)").connection.commit()
    with pytest.raises(ProfileError, match="not an nsys export"):
        align.load(other)
    with pytest.raises(align.AlignError, match="no such file or stored profile"):
        align.load(tmp_path / "missing.sqlite")


def test_file_is_opened_read_only(tmp_path):
    s = Synth(tmp_path / "a.sqlite")
    s.kernel(0, 10, "k")
    path = s.close()
    before = path.read_bytes()
    with align.load(path) as p:
        with pytest.raises(Exception):
            p.conn.execute("CREATE TABLE x (a)")
        kernel_summary(p)
    assert path.read_bytes() == before
