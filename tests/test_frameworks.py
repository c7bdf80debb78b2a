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
