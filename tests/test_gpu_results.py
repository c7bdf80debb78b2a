"""Consistency of the committed GPU results of the collector and the tracers (profiles/examples/collect
and profiles/examples/trace, captured on an H200 by the capture.sh beside them)."""

from __future__ import annotations

import json
import tarfile

import pandas as pd
import pytest

from align.collect import writers
from align.collect.cases import op_spec
from align.trace.topk import load_meta, load_summary, load_trace, recompute_summary

from .conftest import ROOT

COLLECT = ROOT / "profiles" / "examples" / "collect"
TRACE = ROOT / "profiles" / "examples" / "trace"
OPS = ["dsa", "mla", "moe"]


def _tables(op: str) -> dict[str, pd.DataFrame]:
    """The parquet tables (typed), after checking they hold the text files' rows exactly."""
    spec = op_spec(op)
    folder = COLLECT / op / "h200_sxm" / spec.family / "align_mock" / "align"
    tables = {}
    for phase, ps in spec.phases.items():
        txt = writers.read_rows(folder / ps.perf_file)
        pq = pd.read_parquet(folder / ps.perf_file.replace(".txt", ".parquet"))
        assert len(txt) == len(pq) and [float(x) for x in txt["latency"]] == list(pq["latency"])
        tables[phase] = pq
    return tables


@pytest.mark.parametrize("op", OPS)
def test_collection_is_complete_gated_and_has_power(op):
    summary = json.loads((COLLECT / op / "collect.json").read_text())
    tables = _tables(op)
    assert summary["failed"] == 0 and summary["done"] == sum(len(df) for df in tables.values())
    meta = (COLLECT / op / "h200_sxm" / op_spec(op).family / "align_mock" / "align" / "collection_meta.yaml").read_text()
    assert meta.count('status: "complete"') == len(tables)
    verdict = COLLECT / op / "verdict.json"
    if verdict.exists():  # gated: the verdict of the shipped pair passed
        assert json.loads(verdict.read_text())["passed"] and "forced_without_passing_verdict: false" in meta
    else:  # no shipped pair (moe): collected with --force, and the metadata says so
        assert "forced_without_passing_verdict: true" in meta
    ck = json.loads((COLLECT / op / ".align" / "checkpoint.json").read_text())
    assert len(ck["skipped"]) == summary["skipped"]  # skipped cases are reported, with the reason
    for df in tables.values():
        assert (df["device"] == "NVIDIA H200").all() and (df["latency"] > 0).all()
        assert (df["power"] > 0).all() and (df["power"] <= df["power_limit"]).all()
        keys = [c for c in df.columns if c not in ("latency", "power", "power_limit")]
        assert not df.duplicated(keys).any()


@pytest.mark.parametrize("op", OPS)
def test_verification_reruns_are_of_stored_rows(op):
    """Each verified case's stored latency is the one in the perf file and the deviation is computed
    from it; the deviations themselves are the figures the README reports."""
    report = json.loads((COLLECT / op / "verify.json").read_text())
    assert report == json.loads((COLLECT / op / ".align" / "verify.json").read_text())
    latencies = set()
    for df in _tables(op).values():
        latencies |= set(df["latency"])
    assert len(report) == 6
    for r in report:
        assert r["stored_ms"] in latencies
        assert r["deviation_pct"] == pytest.approx(100 * (r["rerun_ms"] - r["stored_ms"]) / r["stored_ms"])
        assert r["graph"] == "captured"


def test_gpu_topk_trace_summary_equals_recomputation(tmp_path):
    with tarfile.open(TRACE / "topk_trace.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    out = tmp_path / "topk"
    df = load_trace(out)
    assert load_summary(out)["stats"] == recompute_summary(df)
    assert load_summary(out) == json.loads((TRACE / "summary.json").read_text())
    meta = load_meta(out)
    assert meta["model"]["device"] == "cuda" and meta["model"]["index_topk"] == 2048
    assert (df["n_selected"] <= 2048).all() and (df["topk"].map(len) == df["n_selected"]).all()
    assert all(t <= p for tk, p in zip(df["topk"], df["position"]) for t in tk)


HF_BENCH = ROOT / "profiles" / "examples" / "hf_bench"
HF_COLLECT = COLLECT / "dsa_transformers"


@pytest.mark.parametrize("name", sorted(p.stem for p in HF_BENCH.glob("*.json")))
def test_transformers_module_in_its_layer_equals_it_standalone(name):
    """bench/hf_bench.sh on the H200: transformers' own module inside its decoder layer against the
    same class built standalone (way A): same outputs, latency within 1 % (seed 002), the same
    CUDA-graph behaviour on both sides, at V3.2's per-head dims with the local heads of the TP asked."""
    d = json.loads((HF_BENCH / f"{name}.json").read_text())
    op, phase, tp = name.split("_")[0], {"ctx": "context", "gen": "generation"}[name.split("_")[1]], name.split("_")[2]
    assert d["op"] == op and d["phase"] == phase and d["shape"]["tp"] == int(tp.removeprefix("tp"))
    assert d["shape"]["framework"] == "transformers" and d["versions"]["transformers"].startswith("5.23")
    assert d["shape"]["inputs_equal"] and d["outputs_match"] and "H200" in d["device"]
    assert abs(d["diff_pct"]) < 1.0
    assert d["submodule"]["cuda_graph"] == d["mock"]["cuda_graph"]
    if op != "moe":
        assert d["shape"]["local_heads"] == 128 // d["shape"]["tp"]
        assert d["shape"]["cache"] == ("static" if phase == "generation" else "dynamic")
    for side in ("submodule", "mock"):
        s = d[side]
        assert s["min_ms"] <= s["median_ms"] <= s["max_ms"] and s["iters"] >= 50


def test_transformers_collection_names_what_ran_and_obeyed_the_way_a_verdict():
    folder = HF_COLLECT / "h200_sxm" / "sparse_attention" / "transformers" / "align"
    meta = (folder / "collection_meta.yaml").read_text()
    assert 'framework: "transformers 5.23.0"' in meta and 'chosen_by: "default: the implementation timed"' in meta
    assert "forced_without_passing_verdict: false" in meta and meta.count('status: "complete"') == 2
    verdict = json.loads((HF_COLLECT / "verdict.json").read_text())
    assert verdict["passed"] and "hf_dsa_mock" in verdict["mock"] and "hf_dsa_e2e" in verdict["e2e"]
    summary = json.loads((HF_COLLECT / "collect.json").read_text())
    rows = 0
    for stem in ("dsa_context_module_perf", "dsa_generation_module_perf"):
        txt = writers.read_rows(folder / f"{stem}.txt")
        pq = pd.read_parquet(folder / f"{stem}.parquet")
        assert [float(x) for x in txt["latency"]] == list(pq["latency"])
        assert set(txt["framework"]) == {"transformers 5.23.0"} and set(txt["kernel_source"]) == {"transformers"}
        rows += len(txt)
    assert summary["failed"] == 0 and summary["done"] == rows == 21
    for v in json.loads((HF_COLLECT / "verify.json").read_text()):
        assert abs(v["deviation_pct"]) < 2.0 and v["graph"] == "captured"


CONTRACTS = {  # folder -> (op, family, backend folder, perf files)
    "contract": ("dsa", "sparse_attention", "align_mock", ("dsa_context_module_perf.txt", "dsa_generation_module_perf.txt")),
    "contract_mla": ("mla", "mla", "align_mock", ("mla_context_module_perf.txt", "mla_generation_module_perf.txt")),
    "contract_moe": ("moe", "moe", "align_mock", ("moe_perf.txt",)),
    "contract_dsa_transformers": ("dsa", "sparse_attention", "transformers",
                                  ("dsa_context_module_perf.txt", "dsa_generation_module_perf.txt")),
    "contract_mla_transformers": ("mla", "mla", "transformers",
                                  ("mla_context_module_perf.txt", "mla_generation_module_perf.txt")),
}


@pytest.mark.parametrize("folder", sorted(CONTRACTS))
def test_the_exported_module_under_collect_py_wrote_align_collects_rows_on_the_h200(folder):
    """profiles/examples/collect/contract* (capture_contract.sh): collect_<op>.py as --export-module wrote
    it (our mock layers, and transformers' own modules), run by a driver shaped as collect.py, and align
    collect of the same cases on the same H200: the same rows, latencies within the seed's 2 %."""
    op, family, backend, files = CONTRACTS[folder]
    base = COLLECT / folder
    ours = base / "align" / "h200_sxm" / family / backend / "align"
    assert f"def run_{op}(*case" in (base / "collector" / f"collect_{op}.py").read_text()
    for name in files:
        theirs, mine = writers.read_rows(base / "driver" / name), writers.read_rows(ours / name)
        assert list(theirs.columns) == list(mine.columns) and len(theirs) == len(mine) == 4
        keys = [c for c in mine.columns if c not in ("latency", "power", "power_limit")]
        both = theirs.merge(mine, on=keys, suffixes=("_driver", "_align"), validate="one_to_one")
        assert len(both) == 4 and (both["device"] == "NVIDIA H200").all()
        ratio = both["latency_driver"].astype(float) / both["latency_align"].astype(float)
        assert ((ratio - 1).abs() < 0.02).all(), ratio.tolist()  # the seed's verification tolerance
    check = json.loads((base / "check.json").read_text())
    assert sum(c["rows"] for c in check["counts"]) == 4 * len(files)
    assert all(f["cuda_graph"] == f["recorded"] == 4 for f in check["flags"])
    throttled = sum(f["throttled"] for f in check["flags"])
    # the check fails a folder with throttled cases, and says why: the one that throttled there
    assert check["passed"] == (throttled == 0)
    assert check["problems"] == ([] if not throttled else
                                 [f"{throttled} case(s) ran while the GPU throttled: collect them again on an idle, "
                                  "cool GPU"])


@pytest.mark.parametrize("op", ["dsa", "mla"])
def test_the_checked_h200_collections(op):
    """profiles/examples/collect/checked (capture.sh with its --check step): every row has the record
    of how it was measured (all CUDA-graph replays, none throttled, power sampled), the 6 re-runs are
    within 2 %, and the check, run again here on the committed folder, says what it said there."""
    from align.collect.check import check, read_case_log

    out = COLLECT / "checked" / op
    there = json.loads((out / "check.json").read_text())
    here = check(out, op)
    assert there["passed"] and here.passed and here.problems == []
    assert [dict(r) for r in here.counts.to_dict("records")] == there["counts"]
    rows = sum(c["rows"] for c in there["counts"])
    assert rows == 21 and len(read_case_log(out)) == rows
    assert all(f["cuda_graph"] == f["recorded"] and f["throttled"] == 0 and f["power_w_min"] > 0
               for f in there["flags"])
    assert len(there["verify"]) == 6 and all(v["verdict"] == "ok" and abs(v["deviation_pct"]) < 2
                                             for v in there["verify"])
    aic = json.loads((out / "check_aic.json").read_text())["aic"]
    model = {"dsa": "deepseek-ai/DeepSeek-V3.2", "mla": "deepseek-ai/DeepSeek-V3"}[op]
    assert aic["model"] == model and aic["ttft_ms"] > 0 and aic["tpot_ms"] > 0
