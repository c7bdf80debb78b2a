"""align collect --check and --verify's pass/fail (seed 001, step 4) on the CPU stand-in op: counts
per phase and TP against the grid with a reason for every case without a row, the per-case
measurement records, and re-runs judged at 2 % after measuring again."""

from __future__ import annotations

import json

import pytest

from align.collect import writers
from align.collect.check import CASES_LOG, read_case_log
from align.collect.runner import rerun_verdict

from .conftest import run_align
from .test_collect import STANDIN_CASES, _tables

pytest.importorskip("torch")


def _collect(out, *args):
    r = run_align("collect", "--op", "standin", "--runs", "2", "--warmups", "1", "--out", str(out), "-f", "json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _check(out, *args, op="standin"):
    r = run_align("collect", "--op", op, "--out", str(out), "--check", "-f", "json", *args)
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
    return r.returncode, json.loads(r.stdout)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("check") / "c"
    _collect(out)
    return out


def test_a_complete_collection_passes(collected):
    rc, rep = _check(collected)
    assert rc == 0 and rep["passed"] and rep["problems"] == []
    counts = rep["counts"]
    assert sum(c["grid"] for c in counts) == sum(c["rows"] for c in counts) == STANDIN_CASES
    assert {(c["phase"], c["tp"]) for c in counts} == {("context", 1), ("context", 2), ("generation", 1)}
    # every row has the record of how it was measured: on the CPU, eager and never throttled
    flags = {f["phase"]: f for f in rep["flags"]}
    assert flags["context"]["recorded"] == 12 and flags["generation"]["recorded"] == 4
    assert all(f["eager"] + f["cuda_graph"] == f["recorded"] and f["throttled"] == 0 for f in flags.values())
    log = read_case_log(collected)
    assert len(log) == STANDIN_CASES and all("latency" in r and "used_cuda_graph" in r for r in log.values())


def test_a_row_gone_is_missing_with_what_to_do(collected, tmp_path):
    import shutil

    out = tmp_path / "c"
    shutil.copytree(collected, out)
    txt = _tables(out, "gemm") / "standin_generation_perf.txt"
    lines = txt.read_text().splitlines(keepends=True)
    txt.write_text("".join(lines[:-1]))  # the last generation case loses its row
    rc, rep = _check(out)
    assert rc == 1 and not rep["passed"]
    assert [m["phase"] for m in rep["missing"]] == ["generation"]
    assert rep["missing"][0]["reason"].startswith("not run") and "--resume" in rep["problems"][0]
    gen = [c for c in rep["counts"] if c["phase"] == "generation"][0]
    assert (gen["grid"], gen["rows"], gen["missing"]) == (4, 3, 1)
    # the resume runs exactly that case, and the check passes again
    assert _collect(out, "--resume")["done"] == 1
    assert _check(out)[0] == 0


def test_cases_left_out_by_cases_and_phase_are_not_missing(tmp_path):
    out = tmp_path / "c"
    r = run_align("collect", "--op", "standin", "--runs", "2", "--warmups", "1", "--out", str(out), "-f", "json",
                  "--phase", "context", "--cases", "tp=1")
    assert r.returncode == 0, r.stderr
    rc, rep = _check(out)
    assert rc == 0, rep["problems"]
    assert {c["phase"] for c in rep["counts"]} == {"context"}  # generation was never asked for
    tp2 = [c for c in rep["counts"] if c["tp"] == 2][0]
    assert (tp2["rows"], tp2["outside_cases"], tp2["missing"]) == (0, 6, 0)


def test_verify_fails_a_case_that_drifted(collected, tmp_path):
    """A stored latency 100x off deviates on both re-runs: drift, exit 1, and --check fails too."""
    import shutil

    out = tmp_path / "c"
    shutil.copytree(collected, out)
    txt = _tables(out, "gemm") / "standin_generation_perf.txt"
    rows = writers.read_rows(txt)
    lines = txt.read_text().splitlines()
    head = lines[0].split(",")
    cells = lines[1].split(",")
    at = head.index("latency")
    cells[at] = repr(float(cells[at]) * 100)
    txt.write_text("\n".join([lines[0], ",".join(cells)] + lines[2:]) + "\n")
    r = run_align("collect", "--op", "standin", "--out", str(out), "--verify", str(STANDIN_CASES), "-f", "json")
    report = json.loads(r.stdout)
    assert r.returncode == 1 and "deviate by 2 % or more on two re-runs" in r.stderr
    bad = [x for x in report if x["stored_ms"] == pytest.approx(float(rows["latency"].iloc[0]) * 100)]
    assert len(bad) == 1 and bad[0]["verdict"] == "drift" and abs(bad[0]["deviation2_pct"]) >= 2
    for x in report:  # every verdict follows from its deviations
        assert x["verdict"] == rerun_verdict(x["deviation_pct"], x["deviation2_pct"], 2.0)
        assert (x["rerun2_ms"] is None) == (abs(x["deviation_pct"]) < 2.0)
    rc, rep = _check(out)
    assert rc == 1 and any("drifted" in p for p in rep["problems"])


def test_rerun_verdicts():
    assert rerun_verdict(1.9, None, 2.0) == "ok"
    assert rerun_verdict(-3.0, 0.5, 2.0) == "noise"
    assert rerun_verdict(3.0, -2.5, 2.0) == "drift"
    assert rerun_verdict(2.0, 2.0, 2.0) == "drift"  # the seed's "< 2 %": 2 % itself is off


def test_the_case_log_survives_a_cut_line(tmp_path):
    log = tmp_path / ".align" / CASES_LOG
    writers.append_jsonl(log, {"case": "a", "latency": 1.0})
    with open(log, "a") as f:
        f.write('{"case": "b", "laten')  # a kill mid-line
    writers.append_jsonl(log, {"case": "c", "latency": 3.0})
    assert sorted(read_case_log(tmp_path)) == ["a", "c"]


def test_check_of_a_folder_that_holds_no_collection(tmp_path):
    r = run_align("collect", "--op", "standin", "--out", str(tmp_path), "--check")
    assert r.returncode == 2 and "holds no collection of standin" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("name,op", [("dsa", "dsa"), ("mla", "mla"), ("moe", "moe"), ("dsa_transformers", "dsa")])
def test_the_committed_h200_collections_check(name, op):
    """The real collections predate the per-case records and the recorded --cases: the check says so,
    judges completeness by each run's plan size, finds the tables moved from trtllm/ to align_mock/,
    and counts every row of their perf files."""
    from .conftest import ROOT

    out = ROOT / "profiles" / "examples" / "collect" / name
    rc, rep = _check(out, op=op)
    assert rc == 0 and rep["passed"], rep["problems"]
    assert any("did not record their --cases" in n for n in rep["notes"])
    seed = [n for n in rep["notes"] if n.startswith("seed 001 expects")]
    assert len(seed) == (2 if op == "dsa" else 0)
    assert not seed or ("110 context" in seed[0] and "181 generation" in seed[1])
    # listed without a row: only what the memory estimate skipped, with its reason
    assert all(m["reason"].startswith("skipped: needs about") for m in rep["missing"])
    assert len(rep["missing"]) == sum(c["skipped"] for c in rep["counts"])
    rows = sum(len(writers.read_rows(p)) for p in out.rglob("*_perf.txt"))
    assert sum(c["rows"] for c in rep["counts"]) == rows > 0
    assert rep["verify"] and all(abs(v["deviation_pct"]) < 2 for v in rep["verify"])
