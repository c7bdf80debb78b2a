"""Scale-out on Dask (align.scale): several reports answered as one task each on a local cluster or a
named scheduler, combined exactly; one mock judged against many E2E reports; a collection spread over
GPU workers (stand-ins on the CPU here) that keeps every case exactly once when a worker is killed.
Clusters are real ``distributed.LocalCluster``s of worker processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed")

from align.collect import writers  # noqa: E402

from .conftest import PROGRAMS, ROOT, run_align  # noqa: E402

EX = ROOT / "profiles" / "examples"


@pytest.fixture(scope="module")
def cluster():
    """One local cluster of two single-threaded worker processes, each offering GPU=1 (a stand-in GPU)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, resources={"GPU": 1},
                      dashboard_address=":0") as c:
        yield c


def _json(r) -> object:
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_kernels_of_several_reports_per_report_and_exactly_together(tmp_path):
    """`align kernels A B` on the default local cluster: each report's rows are what `align kernels A`
    prints alone; ALL is the summary of both reports' kernels together, computed exactly from the
    durations in the exports (not from the per-report medians)."""
    import sqlite3

    a, b = EX / "hf_dsa_mock" / "report.sqlite", EX / "attn_mock" / "report.sqlite"
    rows = pd.DataFrame(_json(run_align("kernels", str(a), str(b), "-f", "json")))
    assert list(rows["report"].unique()) == ["ALL", "hf_dsa_mock", "attn_mock"]
    for name, path in (("hf_dsa_mock", a), ("attn_mock", b)):
        alone = pd.DataFrame(_json(run_align("kernels", str(path), "-f", "json")))
        mine = rows[rows["report"] == name].drop(columns="report").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone, check_dtype=False)
    durations: dict[str, list[int]] = {}
    for path in (a, b):
        with sqlite3.connect(path) as db:
            for name, d in db.execute('SELECT s.value, k."end" - k.start FROM CUPTI_ACTIVITY_KIND_KERNEL k '
                                      'JOIN StringIds s ON s.id = k.demangledName'):
                durations.setdefault(name, []).append(d)
    every = rows[rows["report"] == "ALL"].set_index("name")
    assert set(every.index) == set(durations)
    for name, d in durations.items():
        r = every.loc[name]
        assert r["instances"] == len(d) and r["total_ns"] == sum(d) and r["min_ns"] == min(d)
        assert r["max_ns"] == max(d) and r["med_ns"] == pytest.approx(float(np.median(d)), abs=0.05)
        assert r["stddev_ns"] == pytest.approx(float(np.std(d, ddof=1)) if len(d) > 1 else 0.0, abs=0.06)


def test_a_folder_a_glob_and_a_named_scheduler(tmp_path, cluster):
    """A folder of exports and a glob name the same reports; --scheduler (and $ALIGN_SCHEDULER) send
    the tasks to an existing cluster, with the same answer as the local one."""
    for name in ("hf_dsa_mock", "hf_llama_mock"):
        shutil.copy(EX / name / "report.sqlite", tmp_path / f"{name}.sqlite")
    (tmp_path / "notes.txt").write_text("not an export")
    local = _json(run_align("kernels", str(tmp_path), "-f", "json", "--limit", "3"))
    glob = _json(run_align("kernels", str(tmp_path / "*.sqlite"), "-f", "json", "--limit", "3",
                           "--scheduler", cluster.scheduler_address))
    env = _json(run_align("kernels", str(tmp_path / "hf_*"), "-f", "json", "--limit", "3",
                          env={"ALIGN_SCHEDULER": cluster.scheduler_address}))
    assert local == glob == env and {r["report"] for r in local} == {"ALL", "hf_dsa_mock.sqlite", "hf_llama_mock.sqlite"}
    assert sum(r["report"] == "ALL" for r in local) == 3


def test_scheduler_errors_are_one_line(tmp_path):
    """A malformed or unreachable scheduler address, or a glob naming nothing: one line, exit 2."""
    a = str(EX / "hf_dsa_mock")
    for args, says in ((["--scheduler", "no-port"], "is not a Dask scheduler address"),
                       (["--scheduler", "127.0.0.1:9"], "cannot reach the Dask scheduler at tcp://127.0.0.1:9")):
        r = run_align("kernels", a, *args)
        assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run_align("kernels", a, env={"ALIGN_SCHEDULER": "tcp://x:y"})
    assert r.returncode == 2 and "$ALIGN_SCHEDULER='tcp://x:y' is not a Dask scheduler address" in r.stderr
    r = run_align("nvtx", str(tmp_path / "*.sqlite"))
    assert r.returncode == 2 and "matches no file" in r.stderr
    r = run_align("collect", "--op", "standin", "--out", str(tmp_path / "c"), "--scheduler", "127.0.0.1:9",
                  "--gpus", "1")
    assert r.returncode == 2 and "--gpus 1 is for local workers" in r.stderr


@pytest.mark.nsys
def test_nvtx_of_several_real_captures(nsys, tmp_path):
    """Two real nsys captures of a CPU program: `align nvtx A B --cpu` gives each capture's rows as
    `align nvtx A` does and ALL from both captures' range durations, read back from the exports."""
    import sqlite3

    store = tmp_path / "store"
    for name in ("one", "two"):
        r = run_align("profile", "mock", "--name", name, "--store", str(store), "--", sys.executable,
                      str(PROGRAMS / "nvtx_threads.py"), str(tmp_path / f"{name}.json"))
        assert r.returncode == 0, r.stderr
    rows = pd.DataFrame(_json(run_align("nvtx", str(store / "one"), str(store / "two"), "--cpu", "-f", "json")))
    for name in ("one", "two"):
        alone = pd.DataFrame(_json(run_align("nvtx", str(store / name), "--cpu", "-f", "json")))
        mine = rows[rows["report"] == name].drop(columns="report").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone, check_dtype=False)
    spans: dict[str, list[int]] = {}
    for name in ("one", "two"):
        with sqlite3.connect(store / name / "report.sqlite") as db:
            domains = dict(db.execute("SELECT domainId, text FROM NVTX_EVENTS WHERE eventType = 75"))  # DomainCreate
            q = ("SELECT e.domainId, coalesce(e.text, s.value), e.\"end\" - e.start FROM NVTX_EVENTS e "
                 "LEFT JOIN StringIds s ON s.id = e.textId WHERE e.eventType = 59 AND e.\"end\" IS NOT NULL")
            for domain, text, d in db.execute(q):  # 59: a push/pop range
                spans.setdefault(f"{domains.get(domain, '')}:{text}", []).append(d)
    every = rows[(rows["report"] == "ALL") & (rows["style"] == "PushPop")]
    assert len(every) == len(spans) > 3
    # an error raised in a worker reaches the user as it would from one report: one line, its hint, exit 2
    r = run_align("kernels", str(store / "one"), str(store / "two"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "has no CUDA kernel data: profile the program's CUDA activity" in r.stderr
    for _, r in every.iterrows():
        d = spans[r["range"]]
        assert (r["instances"], r["total_ns"], r["min_ns"], r["max_ns"]) == (len(d), sum(d), min(d), max(d))
        assert r["med_ns"] == pytest.approx(float(np.median(d)), abs=0.05)


def test_ops_pools_the_forwards_of_several_reports(tmp_path):
    """`align ops A A' --op attention`: two copies of one report give its own table under each, and
    ALL with twice the forwards and the same medians."""
    copy = tmp_path / "copy.sqlite"
    shutil.copy(EX / "hf_dsa_e2e" / "report.sqlite", copy)
    one = _json(run_align("ops", str(EX / "hf_dsa_e2e"), "--op", "attention", "-f", "json"))
    rows = pd.DataFrame(_json(run_align("ops", str(EX / "hf_dsa_e2e"), str(copy), "--op", "attention", "-f", "json")))
    fams = pd.DataFrame(one["families"]).set_index(["phase", "family"])
    every = rows[rows["report"] == "ALL"].set_index(["phase", "family"])
    assert set(every.index) == set(fams.index)
    for key, r in every.iterrows():
        assert r["forwards"] == 2 * fams.loc[key, "forwards"]
        assert r["count_per_forward"] == fams.loc[key, "count_per_forward"]
        assert r["latency_per_forward_ns"] == fams.loc[key, "latency_per_forward_ns"]
    bad = run_align("ops", str(EX / "hf_dsa_e2e"), str(copy))
    assert bad.returncode == 2 and "give --op OP" in bad.stderr


def test_verdict_of_one_mock_against_every_rank_of_several_reports(tmp_path):
    """The two-rank captures of two E2E runs (two hosts' files, say), every rank: one verdict per
    report, the four ranks side by side with their spread and outlier, PASS only when both pass,
    recorded once in the store; a report the mock fails makes the whole FAIL (exit 1)."""
    store = tmp_path / "store"
    e2es = [str(EX / "hf_dsa_e2e_tp"), str(EX / "hf_dsa_e2e_ranks")]
    r = run_align("verdict", "--mock", str(EX / "hf_dsa_mock"), "--e2e", e2es[0], "--e2e", e2es[1], "--rank", "all",
                  "--store", str(store), "-f", "json")
    v = _json(r)
    assert v["passed"] and [x["report"] for x in v["reports"]] == ["hf_dsa_e2e_tp", "hf_dsa_e2e_ranks"]
    assert all(x["passed"] for x in v["reports"])
    per_rank = pd.DataFrame(v["ranks"]["per_rank"])
    assert sorted(set(per_rank["rank"])) == ["hf_dsa_e2e_ranks rank 0", "hf_dsa_e2e_ranks rank 1",
                                             "hf_dsa_e2e_tp rank 0", "hf_dsa_e2e_tp rank 1"]
    assert set(per_rank["phase"]) == {"context", "generation"}
    for ph, g in per_rank.groupby("phase"):
        spread = 100 * (g["e2e_ns"].max() - g["e2e_ns"].min()) / g["e2e_ns"].median()
        assert g["spread_pct"].iloc[0] == pytest.approx(spread, rel=1e-6)
    records = list((store / "verdicts" / "dsa").glob("*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["pair"]["e2e"] == [
        str((EX / n / "report.sqlite").resolve()) for n in ("hf_dsa_e2e_tp", "hf_dsa_e2e_ranks")]
    r = run_align("verdict", "--mock", str(EX / "hf_dsa_mock_missing"), "--e2e", e2es[0], "--e2e", e2es[1],
                  "--rank", "all", "--store", str(store), "-f", "json")
    assert r.returncode == 1 and not json.loads(r.stdout)["passed"]


def test_diff_against_several_e2e_reports(tmp_path):
    """`align diff MOCK E2E E2E'`: each report's family table, as `align diff MOCK E2E` gives it."""
    mock, e2e = str(EX / "hf_dsa_mock"), str(EX / "hf_dsa_e2e")
    copy = tmp_path / "again.sqlite"
    shutil.copy(EX / "hf_dsa_e2e" / "report.sqlite", copy)
    alone = pd.DataFrame(_json(run_align("diff", mock, e2e, "-f", "json")))
    alone = alone.drop(columns=["mock_launches", "e2e_launches"])  # one report's JSON adds each family's launches
    rows = pd.DataFrame(_json(run_align("diff", mock, e2e, str(copy), "-f", "json")))
    assert list(rows["report"].unique()) == ["hf_dsa_e2e", "again.sqlite"]
    for name in ("hf_dsa_e2e", "again.sqlite"):
        mine = rows[rows["report"] == name].drop(columns="report").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone, check_dtype=False)


def _standin_rows(out) -> tuple[pd.DataFrame, pd.DataFrame]:
    folder = out / "cpu" / "gemm" / "standin" / "align"
    return (writers.read_rows(folder / "standin_context_perf.txt"),
            writers.read_rows(folder / "standin_generation_perf.txt"))


def test_collection_on_a_cluster_survives_a_killed_worker(tmp_path, cluster):
    """`align collect --scheduler`: one task per case on the cluster's GPU workers, rows written by the
    collector only. A worker process killed (SIGKILL, by its id) in the middle of its cases: Dask runs
    its case again elsewhere, and every case of the grid is in the perf files exactly once."""
    from distributed import Client

    out = tmp_path / "c"
    env = {**os.environ, "ALIGN_COLLECT_CASE_DELAY": "0.4", "ALIGN_STORE": str(tmp_path / "store")}
    cmd = [sys.executable, "-m", "align", "collect", "--op", "standin", "--runs", "2", "--warmups", "1",
           "--out", str(out), "--scheduler", cluster.scheduler_address, "-f", "json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with Client(cluster.scheduler_address, set_as_default=False) as client:
        deadline = time.time() + 120
        while time.time() < deadline and not any(client.processing().values()):
            time.sleep(0.05)
        busy = next(w for w, tasks in client.processing().items() if tasks)
        pid = client.run(os.getpid, workers=[busy])[busy]
    time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    data = json.loads(stdout)
    assert data["done"] == 16 and data["failed"] == 0
    ctx, gen = _standin_rows(out)
    key = ["num_heads", "batch_size", "isl", "step"]
    assert len(ctx) == 12 == len(ctx.drop_duplicates(key)) and len(gen) == 4 == len(gen.drop_duplicates(key))
    log = [json.loads(line) for line in (out / ".align" / "cases.jsonl").read_text().splitlines()]
    assert len(log) == 16 and len({x["case"] for x in log}) == 16
    assert {x["worker_pid"] for x in log} - {pid}  # the cases went on elsewhere (its own finished ones may count)
    again = _json(subprocess.run(cmd + ["--resume"], env={**env, "ALIGN_COLLECT_CASE_DELAY": "0"},
                                 capture_output=True, text=True, timeout=300))
    assert again["already_done"] == 16 and again["done"] == 0
    assert [len(t) for t in _standin_rows(out)] == [12, 4]


def test_a_cluster_without_gpu_workers_is_refused(tmp_path):
    """Workers that offer no GPU resource would never run a case: one line, exit 2, nothing written."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        r = run_align("collect", "--op", "standin", "--out", str(tmp_path / "c"), "--scheduler", c.scheduler_address)
    assert r.returncode == 2 and "offers the resource GPU=1" in r.stderr
    assert not _standin_rows_exist(tmp_path / "c")


def _standin_rows_exist(out) -> bool:
    return any(out.rglob("*_perf.txt")) if out.exists() else False


@pytest.mark.parametrize("name", ["hf_dsa_mock", "hf_dsa_e2e_tp", "attn_mock", "llama_e2e_eager"])
def test_the_combined_summary_of_one_report_is_its_own(name):
    """What ALL is made of (every kernel's duration per kernel name, and per launch shape) summarises one
    report into exactly the rows of `align kernels` (kernel_rows, held to nsys's own CSVs elsewhere)."""
    from align.loader import load
    from align.stats.kernels import kernel_durations, kernel_rows, merge_durations, summarize_durations

    with load(EX / name) as p:
        for by_launch in (False, True):
            mine = summarize_durations(merge_durations([kernel_durations(p, by_launch=by_launch)]), by_launch=by_launch)
            pd.testing.assert_frame_equal(mine, kernel_rows(p, by_launch=by_launch).to_frame().reset_index(drop=True),
                                          check_dtype=False)
