"""Consistency of the committed GPU results of the collector and the tracers (profiles/examples/collect
and profiles/examples/trace, captured on an H200 by the capture.sh beside them)."""

from __future__ import annotations

import json
import tarfile

import pandas as pd
import pytest

from align.collect import writers
from align.trace.topk import load_meta, load_summary, load_trace, recompute_summary

from .conftest import ROOT

COLLECT = ROOT / "profiles" / "examples" / "collect"
TRACE = ROOT / "profiles" / "examples" / "trace"
TABLES = COLLECT / "data" / "h200_sxm" / "sparse_attention" / "trtllm" / "align"


def _rows() -> dict[str, pd.DataFrame]:
    """The parquet tables (typed), after checking they hold the text files' rows."""
    tables = {}
    for phase in ("context", "generation"):
        txt = writers.read_rows(TABLES / f"dsa_{phase}_module_perf.txt")
        pq = pd.read_parquet(TABLES / f"dsa_{phase}_module_perf.parquet")
        assert len(txt) == len(pq) and [float(x) for x in txt["latency"]] == list(pq["latency"])
        tables[phase] = pq
    return tables


def test_collection_is_complete_gated_and_has_power():
    verdict = json.loads((COLLECT / "verdict.json").read_text())
    assert verdict["passed"] and verdict["op"] == "dsa"
    summary = json.loads((COLLECT / "collect.json").read_text())
    rows = _rows()
    assert summary["failed"] == 0 and summary["done"] == sum(len(df) for df in rows.values())
    meta = (TABLES / "collection_meta.yaml").read_text()
    assert "forced_without_passing_verdict: false" in meta and meta.count('status: "complete"') == 2
    ck = json.loads((COLLECT / "data" / ".align" / "checkpoint.json").read_text())
    assert len(ck["skipped"]) == summary["skipped"]  # skipped cases are reported, with the reason
    for df in rows.values():
        assert (df["device"] == "NVIDIA H200").all() and (df["latency"] > 0).all()
        assert (df["power"] > 0).all() and (df["power"] <= df["power_limit"]).all()
        assert not df.duplicated(["num_heads", "batch_size", "isl", "step"]).any()
        assert set(df["tp_size"]) == {1} and set(df["num_heads"]) == {16, 128}  # TP 8 and 1, simulated


def test_verification_reruns_are_of_stored_rows():
    """Each verified case's stored latency is the one in the perf file, and the deviation is computed
    from it; the deviations themselves are the figures the README reports."""
    report = json.loads((COLLECT / "verify.json").read_text())
    assert report == json.loads((COLLECT / "data" / ".align" / "verify.json").read_text())
    latencies = set()
    for df in _rows().values():
        latencies |= set(df["latency"].round(9))
    assert len(report) == 6
    for r in report:
        assert round(r["stored_ms"], 9) in latencies
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
