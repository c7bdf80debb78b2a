"""Real H100 captures of transformers' models (profiles/examples/layerwise, captured by
profiles/examples/capture_layerwise.sh): E2E runs marked as TensorRT-LLM's, vLLM's and SGLang's
layer-wise switches mark them, each beside the plain-named run of the same model and its mocks;
DeepSeek-V3 and Qwen3 MoE pairs with planted faults; a torch.compile'd Llama generate().
Every claim is checked on these files, and each file against nsys stats of itself."""

from __future__ import annotations

import io
import json
import re
import tarfile

import pandas as pd
import pytest

import align
from align.attribute import markers
from align.attribute.ops import OpView

from .conftest import ROOT, run_align
from .test_examples import _compare_kernel_csv

LW = ROOT / "profiles" / "examples" / "layerwise"
PACKS = ("markers", "compiled", "moe")
MARKED = {"hf_dsa_e2e_trtllm": "DeepseekV32ForCausalLM", "hf_llama_e2e_vllm": "top", "hf_moe_e2e_sglang": "model",
          "hf_qwen3moe_e2e_vllm": "top", "hf_llama_e2e_compiled": "top"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The three packs unpacked into one store folder."""
    root = tmp_path_factory.mktemp("layerwise")
    for pack in PACKS:
        with tarfile.open(LW / f"{pack}.tar.gz") as tar:
            tar.extractall(root, filter="data")
    return root


def _entries() -> list[str]:
    names = set()
    for pack in PACKS:
        with tarfile.open(LW / f"{pack}.tar.gz") as tar:
            names |= {m.name.split("/")[0] for m in tar.getmembers() if m.name.endswith("/meta.json")}
    return sorted(names)


def _verdict(store, op, mock, e2e) -> tuple[int, dict | None, str]:
    r = run_align("verdict", "--op", op, "--mock", str(store / mock), "--e2e", str(store / e2e), "-f", "json")
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None), r.stderr


def _checks(v: dict, masked: bool = False) -> list[tuple]:
    """(name, passed, reason) of each check; ``masked``: the reason with its numbers taken out."""
    return [(c["name"], c["passed"], re.sub(r"\d[\d,.]*", "#", c["reason"]) if masked else c["reason"])
            for c in v["checks"]]


def test_packs_are_what_the_capture_script_makes():
    names = _entries()
    assert len(names) == 19 and set(MARKED) <= set(names)
    script = (ROOT / "profiles/examples/capture_layerwise.sh").read_text()
    for n in names:
        assert n in script, n


@pytest.mark.parametrize("name", _entries())
def test_each_capture_equals_nsys_stats_of_itself(store, name):
    """align kernels = cuda_gpu_kern_sum byte for byte; align nvtx --wide = nvtx_gpu_proj_sum byte for
    byte; the default align nvtx names markers by module path, the oracle's rows summed per path."""
    entry = store / name
    r = run_align("kernels", str(entry), "--format", "csv")
    assert r.returncode == 0, r.stderr
    _compare_kernel_csv(r.stdout, (entry / "oracle_cuda_gpu_kern_sum.csv").read_text())
    oracle = (entry / "oracle_nvtx_gpu_proj_sum.csv").read_text()
    wide = run_align("nvtx", str(entry), "--wide", "--format", "csv")
    assert wide.stdout == oracle
    plain = run_align("nvtx", str(entry), "--format", "csv")
    theirs = pd.read_csv(io.StringIO(oracle))
    ours = pd.read_csv(io.StringIO(plain.stdout))
    if name not in MARKED:
        assert plain.stdout == oracle
        return
    assert theirs["Range"].str.startswith(":{'Module'").any() and not ours["Range"].str.contains("{'Module'").any()
    theirs["Range"] = [":" + markers.shown(t[1:]) if t.startswith(":") else t for t in theirs["Range"]]
    want = theirs.groupby("Range")[["Range Instances", "Total GPU Ops", "Total Proj Time (ns)"]].sum()
    got = ours.set_index("Range")[["Range Instances", "Total GPU Ops", "Total Proj Time (ns)"]]
    pd.testing.assert_frame_equal(got.sort_index(), want.sort_index(), check_dtype=False)


@pytest.mark.parametrize("name,root", sorted(MARKED.items()))
def test_marked_runs_are_the_engines_form(store, name, root):
    """Every module's range a dict string under the engine's prefix, nested in its parent's; output
    markers only where vLLM and SGLang write them."""
    from align.attribute.ranges import load_ranges

    with align.load(store / name / "report.sqlite") as p:
        r = load_ranges(p)
    texts = r.df["text"].astype(str).to_numpy()
    parsed = [markers.parse(t) for t in texts]
    mods = [m for m in parsed if m is not None and not m.module.startswith("Torch Compiled Module")]
    assert mods and all(m.module == root or m.module.startswith(root + ".") for m in mods)
    assert any(m.output for m in mods) == (root != "DeepseekV32ForCausalLM")
    for i, m in enumerate(parsed):
        if m is not None and not m.output and m.module.count(".") > 1:
            parent = parsed[r.parent[i]]
            assert parent is not None and m.module.startswith(parent.module + "."), m.module


@pytest.mark.parametrize("op,mock,plain,marked", [
    ("dsa", "hf_dsa_mock", "hf_dsa_e2e", "hf_dsa_e2e_trtllm"),
    ("attention", "hf_llama_mock", "hf_llama_e2e", "hf_llama_e2e_vllm"),
    ("moe", "hf_moe_mock", "hf_moe_e2e", "hf_moe_e2e_sglang"),
    ("moe", "hf_qwen3moe_mock", "hf_qwen3moe_e2e", "hf_qwen3moe_e2e_vllm"),
])
def test_marked_run_gives_the_plain_runs_verdict(store, op, mock, plain, marked):
    """The same model, the same mock: the run marked as an engine marks it passes as the plain-named
    run does, every check for the same reason (numbers aside: two runs); its phases come from the
    markers' shapes where the plain run's come from its kernels."""
    rc_a, a, err_a = _verdict(store, op, mock, plain)
    rc_b, b, err_b = _verdict(store, op, mock, marked)
    assert rc_a == rc_b == 0, (err_a, err_b)
    assert a["passed"] and b["passed"]
    assert _checks(a, masked=True) == _checks(b, masked=True)
    assert "paired by kernels" in err_a and "paired by marker shapes" in err_b


def test_dsa_decode_step_with_a_memset_is_kept_apart(store):
    """At a KV length of 520 (the mock's) DeepSeek-V3.2's decode launches one memset more in each
    layer; the marker run's 60 decode forwards are grouped by kernels inside their phase, as the plain
    run's are, and the mock meets the 4 that match it, the other 56 listed as not compared."""
    _, v, err = _verdict(store, "dsa", "hf_dsa_mock", "hf_dsa_e2e_trtllm")
    rows = {r["e2e_forwards"]: r for r in v["pairing"] if r["e2e_group"] == "generation"}
    assert set(rows) == {4, 56} and rows[56]["mock_phase"] is None
    assert "other kernels than the paired generation forwards" in rows[56]["note"]


# the planted MoE faults, each with the checks that must fail for its reason
FAULTS = {
    "hf_moe_mock_fp32": {"names", "counts", "latency"},
    "hf_moe_mock_eager": {"counts", "latency", "extra"},
    "hf_moe_mock_topk": {"counts", "shapes"},
    "hf_moe_mock_batch": {"latency", "shapes"},
    "hf_moe_mock_grouped": {"counts", "extra"},
}


@pytest.mark.parametrize("mock", sorted(FAULTS))
def test_moe_faults_fail_for_their_reason(store, mock):
    """DeepseekV3MoE against generate() of DeepSeek-V3 (a dense first layer, two MoE layers) marked as
    SGLang marks it: the aligned block passes (above); each fault fails its own checks."""
    rc, v, err = _verdict(store, "moe", mock, "hf_moe_e2e_sglang")
    assert rc == 1, err
    failed = {c["name"] for c in v["checks"] if not c["passed"]}
    assert FAULTS[mock] <= failed, failed
    reasons = " ".join(c["reason"] for c in v["checks"])
    if mock == "hf_moe_mock_eager":
        assert "indexFuncLargeIndex" in reasons  # the per-expert loop's index_add_
    if mock == "hf_moe_mock_grouped":
        assert "GroupProblemShape" in reasons  # a grouped GEMM the E2E decode never runs
    if mock == "hf_moe_mock_fp32":
        assert "gemv2T_kernel_val" in reasons or "xmma_gemm" in reasons


@pytest.mark.parametrize("mock", sorted(FAULTS))
def test_moe_faults_on_the_plain_run(store, mock):
    """The plain-named run (layers.N.mlp, the dense layer's too) pairs by kernels: the same verdict,
    except where a fault leaves a phase no E2E forward resembles: the phases check says so, and with
    no phase left (the experts' loop) the command refuses to judge (exit 2)."""
    rc, v, err = _verdict(store, "moe", mock, "hf_moe_e2e")
    if mock == "hf_moe_mock_eager":
        assert rc == 2 and "no mock phase" in err and "plausible partner" in err
        return
    assert rc == 1 and not v["passed"]
    failed = {c["name"] for c in v["checks"] if not c["passed"]}
    if mock == "hf_moe_mock_fp32":
        assert "phases" in failed and "context" in next(c["reason"] for c in v["checks"] if c["name"] == "phases")
    else:
        assert FAULTS[mock] <= failed


def test_compiled_e2e(store):
    """torch.compile'd generate(): prefill eager with module markers, each decode step one compiled
    call (CUDA-graph replays) without module ranges. The op's own kernels are cut from those steps
    by name, one per layer; Inductor's kernels fold by kind and fused ops; the eager mock fails for
    the compilation, the mock compiled the same way passes."""
    with align.load(store / "hf_llama_e2e_compiled" / "report.sqlite") as p:
        view = OpView(p)
        items = view.op_items("attention")
        fams = set(view.names["family"])
        compiled = view.compiled_families(items[items["method"].astype(str) == "name"])
    gen = items[items["method"].astype(str) == "name"]
    assert set(gen["phase"].astype(str)) == {"generation"} and gen["forward"].nunique() == 60  # 15 steps x 4 layers
    assert not any(re.search(r"^triton_\w+_\d+$", f) for f in fams) and len(compiled) >= 5
    rc, v, _ = _verdict(store, "attention", "hf_llama_mock", "hf_llama_e2e_compiled")
    failed = {c["name"]: c["reason"] for c in v["checks"] if not c["passed"]}
    assert rc == 1 and {"compiled", "graph"} <= set(failed)
    assert "the E2E run is compiled" in failed["compiled"] and "triton_" in failed["compiled"]
    rc, v, err = _verdict(store, "attention", "hf_llama_mock_compiled", "hf_llama_e2e_compiled")
    assert rc == 0 and v["passed"], err
    reason = next(c["reason"] for c in v["checks"] if c["name"] == "compiled")
    assert "both sides compiled in generation" in reason and "only the op's own kernels" in reason


def test_ops_kernels_name_the_module_each_came_from(store):
    """align ops --op dsa --kernels on the TensorRT-LLM-marked run: every kernel of the op, the
    indexer's too, under its layer's self_attn by module path."""
    r = run_align("ops", str(store / "hf_dsa_e2e_trtllm"), "--op", "dsa", "--kernels", "-f", "csv")
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(io.StringIO(r.stdout))
    assert set(df["range"]) == {f":DeepseekV32ForCausalLM.model.layers.{i}.self_attn" for i in range(4)}
    assert df["name"].str.contains("topk", case=False).any()  # the indexer's top-k, inside self_attn
