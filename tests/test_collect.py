"""align collect on the CPU with the stand-in op: grid, benchmark, writers and locking, kill -9 and
resume, verification, the verdict gate; and one real DSA case."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from align.collect import writers
from align.collect.benchmark import benchmark
from align.collect.cases import Case, grid, op_spec, parse_subset
from align.errors import AlignError

from .conftest import ROOT, run_align

torch = pytest.importorskip("torch")

STANDIN_CASES = 12 + 4  # the stand-in grid of align/data/collect.toml


def _tables(out: Path, family: str) -> Path:
    """The table folder of a collection: <system>/<family>/<implementation>/align, system 'cpu' here
    and the GPU's (h200_sxm, ...) where CUDA is visible; the backend folder is the implementation
    timed (standin for the stand-in op of family gemm, align_mock for our mock layers)."""
    from align.collect.runner import system_name

    system = system_name(torch.cuda.get_device_name() if torch.cuda.is_available() else None)
    return out / system / family / ("standin" if family == "gemm" else "align_mock") / "align"


def test_grid_order_caps_and_memory_skips():
    ctx = op_spec("dsa").phases["context"]
    run, skipped = grid(ctx)
    assert all(len(c.args) == 4 for c in run) and ctx.fields == ["seq", "batch", "tp", "prefix"]
    assert all(c.args[0] * c.args[1] <= 65536 for c in run) and skipped == []
    assert Case("dsa", "context", (32768, 4, 1, 0)) not in run  # over the b*s cap: outside the grid
    assert Case("dsa", "context", (32768, 2, 1, 0)) in run  # exactly at the cap
    from align_mock.collect import estimate

    run2, skipped2 = grid(ctx, memory_bytes=80 * 2**30, estimate=estimate)
    assert skipped2 and all("GiB" in why for _, why in skipped2)
    assert len(run2) + len(skipped2) == len(run)
    sub, _ = grid(ctx, subset=parse_subset(["seq=1024,4096", "tp=8", "batch=1", "prefix=0"]))
    assert [c.args for c in sub] == [(1024, 1, 8, 0), (4096, 1, 8, 0)]
    from align.collect.cases import check_subset

    check_subset(op_spec("dsa"), ["context", "generation"], {"seq": [1], "kv_len": [2]})  # each phase its own
    with pytest.raises(AlignError, match="unknown field"):
        check_subset(op_spec("dsa"), ["generation"], {"seq": [1]})


def test_benchmark_without_cuda_uses_a_wall_clock():
    a = torch.randn(64, 64)
    res = benchmark(lambda: a @ a, device="cpu", warmups=2, runs=7)
    assert res.runs == 7 and res.timer == "wall-clock" and res.min_ms <= res.latency <= res.max_ms
    assert not res.used_cuda_graph and res.power is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_benchmark_on_cuda_replays_a_graph_and_falls_back():
    a = torch.randn(512, 512, device="cuda")
    res = benchmark(lambda: a @ a, device="cuda", warmups=2, runs=50)
    assert res.used_cuda_graph and res.graph_note == "captured" and res.timer == "cuda-events"
    assert res.runs == 50 and 0 < res.min_ms <= res.latency <= res.max_ms
    res = benchmark(lambda: a.sum().item(), device="cuda", warmups=1, runs=5)  # a host sync cannot be captured
    assert not res.used_cuda_graph and res.graph_note.startswith("eager fallback") and res.runs == 5
    # the failed capture left the process usable: stream back, random ops work (the next case builds weights)
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    assert torch.rand(4, device="cuda").shape == (4,)


def _append_many(path: str, who: int, n: int) -> None:
    for i in range(n):
        writers.append_row(Path(path), {"framework": "f", "version": "v", "device": "d", "op_name": "o",
                                        "kernel_source": "k"}, {"who": who, "i": i, "latency": 1.0 + i})


def test_concurrent_appends_from_processes(tmp_path):
    path = tmp_path / "x_perf.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    text = path.read_text()
    assert text.count("framework,version") == 1
    df = writers.read_rows(path)
    assert len(df) == 160 and len(df.drop_duplicates(["who", "i"])) == 160
    assert not Path(str(path) + ".lock").exists()


def test_header_mismatch_killed_holder_and_repair(tmp_path):
    path = tmp_path / "y_perf.txt"
    base = {"framework": "f", "version": "v", "device": "d", "op_name": "o", "kernel_source": "k"}
    writers.append_row(path, base, {"a": 1, "latency": 2.0})
    with pytest.raises(AlignError, match="same settings"):
        writers.append_row(path, base, {"a": 1, "latency": 2.0}, power=(300.0, 700.0))
    # a writer killed while it held the lock: the kernel dropped its flock, nobody waits
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    writers.append_row(path, base, {"a": 2, "latency": 3.0})
    with open(path, "a") as f:
        f.write("f,v,d,o,k,3,4.")  # a writer killed mid-line
    assert writers.repair(path) > 0
    assert writers.read_rows(path)["a"].tolist() == ["1", "2"]


def _collect(*args, env=None):
    return run_align("collect", "--op", "standin", "--runs", "3", "--warmups", "1", *args, env=env)


def test_collect_writes_the_aiconfigurator_layout(tmp_path):
    out = tmp_path / "c"
    r = _collect("--out", str(out), "-f", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["done"] == STANDIN_CASES and data["failed"] == 0
    folder = _tables(out, "gemm")
    pq = pd.read_parquet(folder / "standin_context_perf.parquet")
    assert len(pq) == 12 and pq["latency"].dtype.kind == "f" and list(pq.columns[:5]) == writers.BASE_COLUMNS
    meta = (folder / "collection_meta.yaml").read_text()
    assert "standin_context_perf:" in meta and 'status: "complete"' in meta and "rows: 12" in meta
    r = _collect("--out", str(out))
    assert r.returncode == 2 and "--resume" in r.stderr
    r = _collect("--out", str(out), "--resume", "-f", "json")
    assert json.loads(r.stdout)["already_done"] == STANDIN_CASES and json.loads(r.stdout)["done"] == 0
    # no --runs here: verification times as the collection did (3 runs, recorded in its checkpoint)
    r = run_align("collect", "--op", "standin", "--out", str(out), "--verify", "3", "-f", "json")
    rows = json.loads(r.stdout)
    # CPU wall-clock noise may exceed 2 % twice: the exit code follows the verdicts, whatever they are
    assert r.returncode == (1 if any(x["verdict"] == "drift" for x in rows) else 0), r.stderr
    assert len(rows) == 3 and all("deviation_pct" in x for x in rows)
    assert {x["runs"] for x in rows} == {3}
    assert json.loads((out / ".align" / "verify.json").read_text())[0]["case"] == rows[0]["case"]


def test_kill_minus_9_then_resume_gives_every_case_exactly_once(tmp_path):
    out = tmp_path / "k"
    env = {**os.environ, "ALIGN_COLLECT_CASE_DELAY": "0.25", "ALIGN_STORE": str(tmp_path / "store")}
    cmd = [sys.executable, "-m", "align", "collect", "--op", "standin", "--runs", "2", "--warmups", "1",
           "--out", str(out), "-f", "json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    txt = _tables(out, "gemm") / "standin_context_perf.txt"
    deadline = time.time() + 60
    while time.time() < deadline and (not txt.exists() or len(writers.read_rows(txt)) < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its worker, mid-run
    proc.wait()
    before = len(writers.read_rows(txt))
    assert 3 <= before < 12
    with open(txt, "a") as f:
        f.write("align-standin,align,cpu,standin_con")  # as if killed inside a write
    r = subprocess.run(cmd + ["--resume"], env={**env, "ALIGN_COLLECT_CASE_DELAY": "0"}, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["already_done"] >= before and data["done"] + data["already_done"] == STANDIN_CASES
    ctx = writers.read_rows(txt)
    gen = writers.read_rows(txt.with_name("standin_generation_perf.txt"))
    key = ["num_heads", "batch_size", "isl", "step"]
    assert len(ctx) == 12 and len(ctx.drop_duplicates(key)) == 12
    assert len(gen) == 4 and len(gen.drop_duplicates(key)) == 4


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def _gone(pid: int, timeout: float = 60) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):  # a zombie runs nothing
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_kill_minus_9_of_the_collector_alone_stops_its_workers(tmp_path):
    """Only the main process is killed, by its id: the workers die with it and write nothing more;
    a second collector on the same folder meanwhile is refused; the resume writes every case once."""
    out = tmp_path / "k"
    env = {**os.environ, "ALIGN_COLLECT_CASE_DELAY": "0.25", "ALIGN_STORE": str(tmp_path / "store")}
    cmd = [sys.executable, "-m", "align", "collect", "--op", "standin", "--runs", "2", "--warmups", "1",
           "--out", str(out), "-f", "json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    txt = _tables(out, "gemm") / "standin_context_perf.txt"
    deadline = time.time() + 60
    while time.time() < deadline and (not txt.exists() or len(writers.read_rows(txt)) < 2):
        time.sleep(0.05)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and f"being collected by process {proc.pid}" in second.stderr, second.stderr
    workers = [c for c in _children(proc.pid) if Path(f"/proc/{c}/cmdline").read_bytes().find(b"multiprocessing") >= 0]
    assert workers
    proc.kill()
    proc.wait()
    before = len(writers.read_rows(txt))
    time.sleep(1.5)  # a surviving worker (a case every 0.25 s) would have written more rows by now
    assert len(writers.read_rows(txt)) == before
    assert all(_gone(w) for w in workers)
    r = subprocess.run(cmd + ["--resume"], env={**env, "ALIGN_COLLECT_CASE_DELAY": "0"}, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["done"] + data["already_done"] == STANDIN_CASES and data["repaired"] == []
    key = ["num_heads", "batch_size", "isl", "step"]
    ctx = writers.read_rows(txt)
    assert len(ctx) == 12 and len(ctx.drop_duplicates(key)) == 12
    assert not (out / ".align" / "collector.lock").exists()


def test_resume_repairs_a_case_written_twice(tmp_path):
    out = tmp_path / "d"
    base = ["collect", "--op", "standin", "--runs", "2", "--warmups", "1", "--out", str(out), "-f", "json",
            "--phase", "generation"]
    assert run_align(*base).returncode == 0
    txt = _tables(out, "gemm") / "standin_generation_perf.txt"
    lines = txt.read_text().splitlines(keepends=True)
    txt.write_text("".join(lines + lines[1:3]))  # two cases twice, as two collectors at once would leave them
    r = run_align(*base, "--resume")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["already_done"] == 4 and data["done"] == 0
    assert len(data["repaired"]) == 1 and "2 duplicate row(s) removed" in data["repaired"][0]
    rows = writers.read_rows(txt)
    assert len(rows) == 4 and len(rows.drop_duplicates(["num_heads", "batch_size", "isl", "step"])) == 4
    assert rows.equals(writers.read_rows(txt))  # the file stays parseable as the record


def test_verdict_gate_and_one_real_dsa_case(tmp_path):
    store = tmp_path / "store"
    r = run_align("collect", "--op", "dsa", "--out", str(tmp_path / "d"), "--store", str(store))
    assert r.returncode == 2 and "refusing to collect dsa" in r.stderr and "--force" in r.stderr
    ex = ROOT / "profiles/examples"
    r = run_align("verdict", "--op", "dsa", "--mock", str(ex / "dsa_mock"), "--e2e", str(ex / "dsa_e2e"),
                  "--store", str(store))
    assert r.returncode == 0, r.stderr
    # the gate now opens; one tiny generation case of the real DSA mock layer (V3.2 dims, TP 128)
    r = run_align("collect", "--op", "dsa", "--phase", "generation", "--cases", "kv_len=64", "--cases", "batch=1",
                  "--cases", "tp=128", "--runs", "2", "--warmups", "1", "--out", str(tmp_path / "d"),
                  "--store", str(store), "-f", "json")
    assert r.returncode == 0, r.stderr
    # it says which record it obeyed, and that record names its pair
    record = next((store / "verdicts" / "dsa").glob("*.json"))
    assert f"gate: obeying the verdict {record}" in r.stderr and "dsa_mock/report.sqlite" in r.stderr
    assert json.loads(record.read_text())["pair"]["chosen"] == "given"
    folder = _tables(tmp_path / "d", "sparse_attention")
    row = writers.read_rows(folder / "dsa_generation_module_perf.txt").iloc[0]
    assert (row["op_name"], row["num_heads"], row["batch_size"], row["isl"], row["step"], row["tp_size"]) == \
        ("dsa_generation_module", "1", "1", "1", "64", "1")
    assert float(row["latency"]) > 0


def test_parquet_holds_exactly_the_latencies_written(tmp_path):
    """finalize parses each metric as the text says, to the last bit (the text is the record)."""
    import random

    rng = random.Random(7)
    txt, pq = tmp_path / "t_perf.txt", tmp_path / "t_perf.parquet"
    values = [rng.uniform(1e-4, 200.0) for _ in range(500)] + [24.547903060913086, 0.1 + 0.2]
    base = dict(zip(writers.BASE_COLUMNS, ["f", "v", "d", "op", "k"]))
    for i, v in enumerate(values):
        writers.append_row(txt, base, {"case": i, "latency": v}, power=(v / 3, 700.0))
    assert writers.finalize(txt, pq) == len(values)
    table = pd.read_parquet(pq)
    assert list(table["latency"]) == values and list(table["power"]) == [v / 3 for v in values]


def test_mla_and_moe_grids_and_named_values():
    ctx = op_spec("mla").phases["context"]
    assert ctx.fields == ["seq", "batch", "tp"] and ctx.op_name == "mla_context_module"
    moe = op_spec("moe")
    assert list(moe.phases) == ["all"] and moe.phases["all"].fields == ["tokens", "tp", "ep", "distribution"]
    from align.collect.cases import check_subset

    subset = parse_subset(["tokens=4,16", "distribution=balanced,power_law_1.2"])
    assert subset == {"tokens": [4, 16], "distribution": ["balanced", "power_law_1.2"]}
    check_subset(moe, ["all"], subset)
    with pytest.raises(AlignError, match="not a value"):
        check_subset(moe, ["all"], {"distribution": ["balaced"]})
    run, _ = grid(moe.phases["all"], subset={**subset, "tokens": [4], "tp": [8], "ep": [256]})
    assert [c.args for c in run] == [(4, 8, 256, "balanced"), (4, 8, 256, "power_law_1.2")]
    from align_mock import collect_mla

    row = collect_mla.describe("context", 1024, 2, 8)
    assert (row["num_heads"], row["isl"], row["step"], row["model"]) == (16, 1024, 0, "deepseek-ai/DeepSeek-V3")
    assert collect_mla.estimate("context", 4096, 8, 1) < __import__("align_mock.collect").collect.estimate(
        "context", 4096, 8, 1, 0)  # no indexer scores


def test_moe_routing_loads():
    from align_mock.collect_moe import local_load, routing

    bal = routing(64, 8, 256, "balanced")
    assert all(len(set(r)) == 8 for r in bal) and len(set(map(tuple, bal))) > 1
    counts = torch.bincount(torch.as_tensor(bal.ravel()), minlength=256)
    assert counts.max() - counts.min() <= 1  # every expert the same load, up to one token
    skew = routing(4096, 8, 256, "power_law_1.2")
    assert all(len(set(r)) == 8 for r in skew[:100])
    loads = torch.bincount(torch.as_tensor(skew.ravel()), minlength=256).sort(descending=True).values
    assert loads[0] > 4 * loads[128]  # a few popular experts
    assert local_load(256, 1, 8, "balanced") == 256 * 8 // 8


def test_moe_call_equals_expert_by_expert_reference():
    from align_mock.collect_moe import build

    for dist in ("balanced", "power_law_1.01"):
        call = build("all", 6, 8, 64, dist, device="cpu", dtype=torch.float32)
        got, want = call(), call.reference()
        assert got.abs().max() > 0 or want.abs().max() == 0
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_collect_mla_and_moe_on_cpu(tmp_path):
    env = {**os.environ, "ALIGN_STORE": str(tmp_path / "store")}
    out = tmp_path / "c"
    r = run_align("collect", "--op", "moe", "--force", "--cases", "tokens=4", "--cases", "tp=8", "--cases", "ep=256",
                  "--cases", "distribution=balanced,power_law_1.2", "--runs", "2", "--warmups", "1",
                  "--out", str(out), "-f", "json", env=env)
    assert r.returncode == 0, r.stderr
    folder = _tables(out, "moe")
    table = pd.read_parquet(folder / "moe_perf.parquet")
    assert sorted(table["distribution"]) == ["balanced", "power_law_1.2"] and set(table["num_experts"]) == {256}
    assert (table["latency"] > 0).all() and "moe_perf:" in (folder / "collection_meta.yaml").read_text()
    r = run_align("collect", "--op", "mla", "--force", "--phase", "generation", "--cases", "kv_len=64",
                  "--cases", "batch=1", "--cases", "tp=128", "--runs", "2", "--warmups", "1", "--out", str(out),
                  "-f", "json", env=env)
    assert r.returncode == 0, r.stderr
    gen = pd.read_parquet(_tables(out, "mla") / "mla_generation_module_perf.parquet")
    assert gen[["num_heads", "batch_size", "isl", "step"]].values.tolist() == [[1, 1, 1, 64]]
    r = run_align("collect", "--op", "moe", "--cases", "distribution=zipf", "--out", str(tmp_path / "x"), env=env)
    assert r.returncode == 2 and "choose from" in r.stderr
    r = run_align("collect", "--op", "mla", "--out", str(tmp_path / "y"), env=env)
    assert r.returncode == 2 and "verdict" in r.stderr  # gated like dsa


def test_a_case_the_op_cannot_take_is_bad_input(tmp_path):
    r = run_align("collect", "--op", "moe", "--force", "--cases", "ep=3", "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "--cases ep=3: moe all takes integer ep values dividing 256" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").rglob("*_perf.txt"))
