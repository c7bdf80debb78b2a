"""The framework adapters (seed 000, way A) on the CPU with small configs: transformers' own DSA, MLA
and MoE modules built standalone with its own caches and masks, idempotent calls, the pair of
decoder-layer module and standalone module computing the same function from the same inputs, and
`align bench --framework transformers --check-only` plumbing. The H200 results are in
profiles/examples/hf_bench (bench/hf_bench.sh), checked by tests/test_gpu_results.py."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers.models.deepseek_v32")

from align_mock.frameworks import FRAMEWORKS, Case, get_adapter  # noqa: E402

from .conftest import run_align  # noqa: E402

CLASSES = {"dsa": "DeepseekV32Attention", "mla": "DeepseekV3Attention", "moe": "DeepseekV32MoE"}
PHASES = {"context": dict(seq=8, kv_len=4), "generation": dict(seq=1, kv_len=12)}


def _case(op, phase, **kw):
    return Case(op, phase, batch=2, config="small", dtype="float32", device="cpu", **{**PHASES[phase], **kw})


def _run(built):
    if built.reset:
        built.reset()
    with torch.no_grad():
        return built.call().clone()


@pytest.mark.parametrize("op,cache", [(op, c) for op in ("dsa", "mla") for c in (None, "static", "dynamic")]
                         + [("moe", None)])
@pytest.mark.parametrize("phase", sorted(PHASES))
def test_the_pair_computes_the_same_function(op, phase, cache):
    case = _case(op, phase, cache=cache)
    inner, alone = get_adapter("transformers").build_pair(case)
    assert type(inner.module).__name__ == type(alone.module).__name__ == CLASSES[op]
    assert inner.where == "decoder layer" and alone.where == "standalone"
    assert inner.inputs == alone.inputs  # same shapes, dtypes and strides fed to both
    first = [_run(inner) for _ in range(3)]
    assert all(torch.equal(first[0], x) for x in first)  # reset makes calls repeatable
    out = _run(alone)
    assert out.shape == (2, case.new_tokens, 256) and float(out.std()) > 0
    assert torch.equal(first[0], out)
    if op != "moe":
        assert inner.graphable == (case.cache_kind == "static")
        assert alone.shape["cache_len"] == case.kv_len + case.new_tokens


def test_cached_tokens_change_the_answer():
    """The cache really holds kv_len tokens the step attends to: another kv_len, another output."""
    a = _run(get_adapter("transformers").build(_case("dsa", "generation")))
    b = _run(get_adapter("transformers").build(_case("dsa", "generation", kv_len=5)))
    assert not torch.allclose(a, b)


def test_local_heads_follow_tp_and_bad_cases_are_value_errors():
    adapter = get_adapter("transformers")
    built = adapter.build(Case("dsa", "generation", batch=1, kv_len=3, tp=2, config="small", dtype="float32",
                               device="cpu"))
    assert built.shape["local_heads"] == 4 and built.shape["framework"] == "transformers"
    with pytest.raises(ValueError, match="do not split"):
        adapter.build(Case("dsa", "context", tp=3, config="small", dtype="float32", device="cpu"))
    with pytest.raises(ValueError, match="kv_len must be >= 1"):
        Case("mla", "generation")
    with pytest.raises(ValueError, match="no adapter"):
        get_adapter("tensorrt_llm")
    assert list(FRAMEWORKS) == ["transformers"]  # only adapters that run here


@pytest.mark.parametrize("op", sorted(CLASSES))
def test_bench_framework_check_only(op):
    r = run_align("bench", "--op", op, "--phase", "generation", "--kv-len", "6", "--framework", "transformers",
                  "--config", "small", "--dtype", "float32", "--check-only", "--batch", "2", "-f", "json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["outputs_match"] and d["max_abs_diff"] == 0.0 and d["shape"]["framework"] == "transformers"
    assert d["shape"]["submodule"] == f"decoder layer: {CLASSES[op]}" and d["shape"]["inputs_equal"]
    assert d["versions"]["transformers"].startswith("5.")


def _meta(folder):
    return (folder / "collection_meta.yaml").read_text()


def test_a_collection_sits_under_what_was_timed(tmp_path):
    """The backend folder is the implementation timed; another backend's folder only when asked, and
    the metadata says which was timed either way."""
    import pandas as pd

    base = ["collect", "--op", "standin", "--runs", "2", "--warmups", "0", "--phase", "generation",
            "--cases", "kv_len=16", "--cases", "batch=1"]
    r = run_align(*base, "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    [folder] = [p.parent for p in (tmp_path / "a").rglob("collection_meta.yaml")]
    assert folder.parent.name == "standin" and 'chosen_by: "default: the implementation timed"' in _meta(folder)
    r = run_align(*base, "--out", str(tmp_path / "b"), "--backend", "trtllm")
    assert r.returncode == 0, r.stderr
    [folder] = [p.parent for p in (tmp_path / "b").rglob("collection_meta.yaml")]
    meta = _meta(folder)
    assert folder.parent.name == "trtllm" and 'chosen_by: "--backend"' in meta and 'timed: "standin"' in meta
    assert set(pd.read_parquet(next(folder.glob("*.parquet")))["framework"]) == {"align-standin"}


def test_collect_with_the_transformers_module(tmp_path):
    """One DSA case timed on transformers' own DeepseekV32Attention (V3.2 dims, one local head):
    rows and metadata name transformers and its version, under a transformers folder."""
    import transformers

    from align.collect import writers

    out = tmp_path / "c"
    r = run_align("collect", "--op", "dsa", "--framework", "transformers", "--force", "--phase", "generation",
                  "--cases", "kv_len=64", "--cases", "batch=1", "--cases", "tp=128", "--runs", "2", "--warmups", "1",
                  "--out", str(out), "-f", "json", env={"ALIGN_STORE": str(tmp_path / "store")})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["done"] == 1
    [folder] = [p.parent for p in out.rglob("collection_meta.yaml")]
    assert folder.parent.name == "transformers" and folder.parent.parent.name == "sparse_attention"
    row = writers.read_rows(folder / "dsa_generation_module_perf.txt").iloc[0]
    assert row["framework"] == f"transformers {transformers.__version__}" and row["kernel_source"] == "transformers"
    assert row["num_heads"] == "1" and row["step"] == "64" and float(row["latency"]) > 0
    assert f'framework: "transformers {transformers.__version__}"' in _meta(folder)
    r = run_align("collect", "--op", "moe", "--framework", "transformers", "--force", "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "has no collector for framework 'transformers'" in r.stderr
