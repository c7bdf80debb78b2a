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
