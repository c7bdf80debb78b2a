"""align diff / verdict / report on real H100 pairs: the aligned mock passes, each planted
misalignment (profiles/examples/attn_mock_*, see capture.sh) fails for its reason."""

from __future__ import annotations

import json
import shutil

import pytest

import align
from align.compare.diff import compare, load_config
from align.compare.sequence import aligned_sequences, representative_forward
from align.compare.verdict import verdict
from align.errors import AlignError

from .conftest import ROOT, run_align

EX = ROOT / "profiles/examples"
E2E = EX / "llama_e2e"


def failed(v) -> set[str]:
    return set(v.checks.loc[~v.checks["passed"], "name"])


def reason(v, name: str) -> str:
    return v.checks.set_index("name").loc[name, "reason"]


def test_aligned_mock_passes():
    v = verdict(EX / "attn_mock", EX / "llama_e2e", op="attention")
    assert v.passed, v.checks[["name", "reason"]].to_string()
    assert list(v.checks["name"]) == ["phases", "names", "counts", "latency", "missing", "extra", "shapes", "graph", "compiled"]
    assert (v.comparison.table["status"] == "match").all()
    assert reason(v, "graph") == "the mock launches as the E2E run does: context eager, generation graph"


def test_a_mock_that_differs_only_by_launch_mode_fails_only_the_graph_check():
    """The same mock against the same model decoding eagerly (llama_e2e_eager, same H100, same nsys):
    every kernel matches, but the mock replays its decode from a CUDA graph and the E2E run does not."""
    v = verdict(EX / "attn_mock", EX / "llama_e2e_eager", op="attention")
    assert failed(v) == {"graph"} and (v.comparison.table["status"] == "match").all()
    assert v.checks.set_index("name").loc["graph", "value"] == {"context": "eager/eager", "generation": "graph/eager"}
    why = reason(v, "graph")
    assert why.startswith("generation: mock graph (1 graph launch for 25 kernels per forward; ")
    assert "E2E eager (25 launches for 25 kernels per forward; " in why
    launch = v.comparison.launch.set_index("phase")
    # the CPU pays for 25 launch calls per eager forward, for one graph launch per replayed one
    assert launch.loc["generation", "e2e_api_ns"] > 2 * launch.loc["generation", "mock_api_ns"]
    assert v.comparison.comparability.warnings == []  # same GPU, driver and nsys: only the launch mode differs


def test_the_graph_check_can_be_turned_off(tmp_path):
    cfg = tmp_path / "v.toml"
    cfg.write_text("[verdict]\ngraph = false\n")
    v = verdict(EX / "attn_mock", EX / "llama_e2e_eager", op="attention", config=str(cfg))
    assert v.passed and "graph" not in list(v.checks["name"])
    cfg.write_text("[verdict]\ngraph = 1\n")
    with pytest.raises(AlignError, match="graph = 1 .* is not true or false"):
        verdict(EX / "attn_mock", EX / "llama_e2e_eager", op="attention", config=str(cfg))


def test_extra_kernel():
    v = verdict(EX / "attn_mock_extra", E2E, op="attention")
    assert failed(v) == {"extra", "counts"}
    assert "GeluCUDAKernelImpl" in reason(v, "extra")
    assert any("GeluCUDAKernelImpl" in k for k in v.checks.set_index("name").loc["extra", "kernels"])


def test_missing_kernel():
    v = verdict(EX / "attn_mock_missing", E2E, op="attention")
    assert {"missing", "names"} <= failed(v) and "extra" not in failed(v)
    assert "neg_kernel_cuda" in reason(v, "missing") and "CatArrayBatchedCopy" in reason(v, "missing")


def test_count_mismatch():
    v = verdict(EX / "attn_mock_count", E2E, op="attention")
    assert failed(v) == {"counts"}
    assert "nvjet_tst_gemm (5 vs 4)" in reason(v, "counts")


def test_other_dtype():
    v = verdict(EX / "attn_mock_fp32", E2E, op="attention")
    assert {"names", "missing", "extra"} <= failed(v)
    assert "nvjet_tst_gemm" in reason(v, "missing") and "cudnn_sdpa" in reason(v, "missing")
    assert "xmma_gemm" in reason(v, "extra")


def test_several_times_slower():
    v = verdict(EX / "attn_mock_slow", E2E, op="attention")
    assert failed(v) == {"latency", "shapes"}  # 8x the tokens: the same kernels on bigger grids
    ratio = v.checks.set_index("name").loc["latency", "value"]["context"]
    assert ratio > 2.0 and "context" in reason(v, "latency")


def test_diff_statuses_and_input_preparation_kept_out():
    table = compare(EX / "attn_mock_count", E2E, op="attention").table
    fam = table[table["family"] != "TOTAL"].set_index(["phase", "family"])
    assert fam.loc[("generation", "nvjet_tst_gemm"), "status"] == "count"
    assert set(compare(EX / "attn_mock_missing", E2E, op="attention").table["status"]) >= {"missing"}
    assert "slower" in set(compare(EX / "attn_mock_slow", E2E, op="attention").table["status"])
    # the mock initialises its weights and inputs with random kernels outside its mock_* ranges
    with align.load(EX / "attn_mock") as p:
        names = set(p.kernels()["name"])
    assert any("distribution_elementwise" in n for n in names)
    assert not table["family"].str.contains("distribution_elementwise").any()


def test_sequence_alignment_shows_the_extra_gemm():
    cmp = compare(EX / "attn_mock_count", E2E, op="attention")
    a = representative_forward(cmp.mock.items, cmp.mock.forwards.forwards, "generation")
    b = representative_forward(cmp.e2e.items, cmp.e2e.forwards.forwards, "generation")
    seq = aligned_sequences(a, b)
    assert seq["op"].tolist().count("+") == 1 and set(seq["op"]) == {"=", "+"}
    assert seq.loc[seq["op"] == "+", "mock_family"].tolist() == ["nvjet_tst_gemm"]
    same = compare(EX / "attn_mock", E2E, op="attention")
    s2 = aligned_sequences(representative_forward(same.mock.items, same.mock.forwards.forwards, "context"),
                           representative_forward(same.e2e.items, same.e2e.forwards.forwards, "context"))
    assert set(s2["op"]) == {"="}


def test_bench_check():
    ok = {"diff_pct": 0.4, "mock": {"median_ms": 0.100, "cuda_graph": "captured"},
          "submodule": {"median_ms": 0.1004, "cuda_graph": "captured"}}
    v = verdict(EX / "attn_mock", E2E, op="attention", bench=ok)
    assert v.passed and "bench" in set(v.checks["name"])
    slow = dict(ok, diff_pct=2.5)
    v = verdict(EX / "attn_mock", E2E, op="attention", bench=slow)
    assert failed(v) == {"bench"} and "+2.50 %" in reason(v, "bench")
    graph = dict(ok, submodule={"median_ms": 0.1, "cuda_graph": "eager fallback"})
    v = verdict(EX / "attn_mock", E2E, op="attention", bench=graph)
    assert failed(v) == {"bench"} and "CUDA graph differs" in reason(v, "bench")
    with pytest.raises(AlignError, match="diff_pct"):
        verdict(EX / "attn_mock", E2E, op="attention", bench={"x": 1})


def test_config_overrides_thresholds(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text("[diff]\ncount_tolerance = 1\n[verdict]\ncounts_tolerance = 0.1\n")
    assert verdict(EX / "attn_mock_count", E2E, op="attention", config=cfg).passed
    strict = tmp_path / "s.toml"
    strict.write_text("[verdict]\nlatency_ratio = 1.01\n")
    assert failed(verdict(EX / "attn_mock", E2E, op="attention", config=strict)) == {"latency"}
    bad = tmp_path / "b.toml"
    bad.write_text("[verdict]\nno_such_key = 1\n")
    with pytest.raises(AlignError, match="unknown key"):
        load_config(bad)


def test_cli_exit_codes_and_json():
    r = run_align("verdict", "--op", "attention", "--mock", str(EX / "attn_mock"), "--e2e", str(E2E), "-f", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["passed"] is True and data["op"] == "attention"
    for c in data["checks"]:
        assert set(c) == {"name", "passed", "value", "threshold", "reason", "kernels"}
        assert c["name"] in ("phases", "names", "counts", "latency", "missing", "extra", "shapes", "graph", "compiled", "bench")
    r = run_align("verdict", "--op", "attention", "--mock", str(EX / "attn_mock_extra"), "--e2e", str(E2E))
    assert r.returncode == 1 and "FAIL" in r.stdout
    r = run_align("verdict", "--op", "attention", "--mock", str(EX / "nope"), "--e2e", str(E2E))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run_align("verdict", "--op", "nope", "--mock", str(EX / "attn_mock"), "--e2e", str(E2E))
    assert r.returncode == 2 and "unknown op" in r.stderr
    r = run_align("diff", str(EX / "attn_mock"), str(E2E), "--op", "attention", "-f", "md")
    assert r.returncode == 0 and r.stdout.startswith("### align verdict: PASS")


def test_newest_stored_profiles_of_the_op(tmp_path):
    store = tmp_path / "store"
    for name, src, kind, t in (("old_mock", "attn_mock_slow", "mock", "2026-01-01T00:00:00+00:00"),
                               ("new_mock", "attn_mock", "mock", "2026-02-01T00:00:00+00:00"),
                               ("e2e", "llama_e2e", "e2e", "2026-01-15T00:00:00+00:00")):
        d = store / name
        d.mkdir(parents=True)
        shutil.copy(EX / src / "report.sqlite", d / "report.sqlite")
        (d / "meta.json").write_text(json.dumps({"kind": kind, "op": "attention", "start_time": t, "status": "ok"}))
    r = run_align("verdict", "--op", "attention", "--store", str(store), "-f", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert "new_mock" in data["mock"] and data["passed"]
    r = run_align("verdict", "--op", "moe", "--store", str(store))
    assert r.returncode == 2 and "no mock profile of op 'moe'" in r.stderr


def test_dsa_mock_layer_matches_its_e2e_model():
    """The DeepSeek-V3.2 DSA mock (align_mock) against a 4-layer E2E model built from the same
    modules (H200 profiles): the E2E attention is found through its layers.N.self_attn ranges
    ([e2e] dsa in verdict.toml), at capture time in the graph-replayed decode."""
    v = verdict(EX / "dsa_mock", EX / "dsa_e2e", op="dsa")
    assert v.passed, v.checks[["name", "reason"]].to_string()
    cmp = v.comparison
    assert cmp.e2e.range_used == r"layers\.\d+\.self_attn$ (verdict.toml [e2e] dsa)"
    assert set(cmp.e2e.items.loc[cmp.e2e.items["phase"] == "generation", "method"].astype(str)) == {"nvtx-capture"}
    # the committed align bench results (same H200 run) pass the bench check too
    import glob

    for f in sorted(glob.glob(str(EX / "dsa_bench" / "*.json"))):
        b = json.loads(open(f).read())
        assert b["outputs_match"] and abs(b["diff_pct"]) < 1.0 and b["mock"]["cuda_graph"] == "captured"
    v = verdict(EX / "dsa_mock", EX / "dsa_e2e", op="dsa", bench=EX / "dsa_bench" / "gen_tp8_b64_kv8192.json")
    assert v.passed and "bench" in set(v.checks["name"])


def test_the_library_records_verdicts_and_applies_the_collect_gate(tmp_path):
    """Policy lives in the library (issue 15): align.verdict() records what the CLI records, and the
    collect gate refuses an op without a passing verdict of the mock the collector times, naming the
    verdict it obeys. A verdict of another mock (a float32 fault tried on purpose) neither closes
    nor opens the gate (issue 28)."""
    import align
    from align.collect.runner import gate
    from align.errors import AlignError

    store = align.Store(tmp_path / "store")
    hf = "transformers"  # the collector that times transformers' own attention, as hf_dsa_mock profiles it
    with pytest.raises(AlignError, match="refusing to collect dsa: no verdict of the mock it times"):
        gate("dsa", store, framework=hf)
    assert gate("dsa", store, forced=True, framework=hf).startswith("gate: overriding (forced)")
    assert gate("standin", store) is None  # gated = false in collect.toml
    looked = align.verdict(ROOT / "profiles/examples/hf_dsa_mock", ROOT / "profiles/examples/hf_dsa_e2e", op="dsa",
                           store=store, record_in_store=False)
    assert looked.passed and looked.recorded is None and not (tmp_path / "store").exists()
    v = align.verdict(ROOT / "profiles/examples/hf_dsa_mock", ROOT / "profiles/examples/hf_dsa_e2e", op="dsa",
                      store=store)
    assert v.passed and v.recorded.parent == tmp_path / "store" / "verdicts" / "dsa"
    assert store.newest_verdict("dsa")["file"] == str(v.recorded)
    assert gate("dsa", store, framework=hf) == (f"gate: obeying the verdict {v.recorded} (PASS, mock {v.mock} "
                                                f"vs E2E {v.e2e})")
    # the align builder times our own mock layer (dsa_mock.py): transformers' verdict is not its own
    with pytest.raises(AlignError, match="no verdict of the mock it times .* is of another mock"):
        gate("dsa", store)
    # a float32 fault tried on purpose: recorded, newest, failing, and the gate still obeys the passing one
    failing = align.verdict(ROOT / "profiles/examples/hf_dsa_mock_fp32", ROOT / "profiles/examples/hf_dsa_e2e",
                            op="dsa", store=store)
    assert not failing.passed and store.newest_verdict("dsa")["file"] == str(failing.recorded)
    assert gate("dsa", store, framework=hf).startswith(f"gate: obeying the verdict {v.recorded} (PASS")
    # the same mock failing (its own command) closes it
    rec = json.loads(v.recorded.read_text())
    rec["passed"] = False
    late = v.recorded.parent / "29991231T000000.000000Z.json"
    late.write_text(json.dumps(rec))
    with pytest.raises(AlignError, match="the newest verdict of the mock it times .* failed"):
        gate("dsa", store, framework=hf)