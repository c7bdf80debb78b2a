"""align.trace.modules on CPU: counts against known structure, shapes, one layer's order, filters,
hook removal (also when forward raises), NVTX balance, profiler attribution and the CLI."""

from __future__ import annotations

import json
import runpy
from collections import Counter

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from align import annotate  # noqa: E402
from align.trace.modules import modules, run_script  # noqa: E402

from .conftest import PROGRAMS, run_align  # noqa: E402

SCRIPT = PROGRAMS / "trace_script.py"


def _llama():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=128, vocab_size=100)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def _mock():
    from align_mock.config import named_config
    from align_mock.model import Transformer

    torch.manual_seed(0)
    model = Transformer(named_config("small"), n_layers=2).eval()
    model.setup_caches(1, 16)
    return model


def _no_hooks(model: nn.Module) -> bool:
    for m in model.modules():
        if (m._forward_pre_hooks or m._forward_hooks or m._forward_hooks_always_called
                or m._forward_hooks_with_kwargs or m._forward_pre_hooks_with_kwargs):
            return False
    g = torch.nn.modules.module
    return not (g._global_forward_pre_hooks or g._global_forward_hooks)


@pytest.fixture(scope="module")
def llama_trace():
    model = _llama()
    ids = torch.randint(0, 100, (2, 5))
    with torch.no_grad(), modules(model) as t:
        model(ids)
        model(ids)
    return model, t


def test_llama_counts_match_structure(llama_trace):
    model, t = llama_trace
    assert t.forwards == 2 and t.roots == ["LlamaForCausalLM"]
    # every module of a Llama runs once per forward: calls per class = modules of the class x forwards
    expected = {cls: n * 2 for cls, n in Counter(type(m).__name__ for m in model.modules()).items()
                if cls != "ModuleList"}
    assert dict(zip(t.by_class["class"], t.by_class["calls"])) == expected
    by_name = dict(zip(t.by_name["name"], t.by_name["calls"]))
    assert by_name["model.layers.0.self_attn"] == by_name["model.layers.1.self_attn"] == 2
    assert t.by_class.set_index("class").loc["Linear", "modules"] == 2 * 7 + 1
    assert (t.by_name["per_forward"] == 1.0).all()


def test_llama_shapes_and_dtypes(llama_trace):
    _, t = llama_trace
    calls = t.calls.set_index("name")
    q = calls.loc["model.layers.0.self_attn.q_proj"].iloc[0]
    k = calls.loc["model.layers.0.self_attn.k_proj"].iloc[0]
    assert (q["in_shapes"], q["out_shapes"], q["in_dtypes"], q["out_dtypes"]) == \
        ("(2, 5, 64)", "(2, 5, 64)", "float32", "float32")
    assert k["out_shapes"] == "(2, 5, 32)"  # 2 KV heads x head_dim 16
    embed = calls.loc["model.embed_tokens"].iloc[0]
    assert (embed["in_shapes"], embed["in_dtypes"], embed["out_dtypes"]) == ("(2, 5)", "int64", "float32")
    # keyword tensors are described by name; HF outputs (dict-like) by key
    attn = calls.loc["model.layers.0.self_attn"].iloc[0]
    assert "hidden_states=(2, 5, 64)" in attn["in_shapes"]
    assert calls.loc["LlamaForCausalLM"].iloc[0]["out_shapes"].startswith("{logits: (2, 5, 100)")
    first = t.calls.iloc[0]
    assert (first["depth"], first["parent"]) == (0, -1)
    assert (t.calls["wall_us"] > 0).all() and t.calls["error"].isna().all()


def test_llama_layer_order(llama_trace):
    _, t = llama_trace
    assert t.layer_name == "model.layers.0"
    order = t.layer_order
    assert list(order["name"]) == [
        "input_layernorm", "self_attn", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
        "self_attn.o_proj", "post_attention_layernorm", "mlp", "mlp.gate_proj", "mlp.act_fn", "mlp.up_proj",
        "mlp.down_proj"]
    assert list(order[order["depth"] == 1]["class"]) == ["LlamaRMSNorm", "LlamaAttention", "LlamaRMSNorm", "LlamaMLP"]


def test_mock_model_counts_and_layer_order():
    model = _mock()
    tokens = torch.randint(0, model.cfg.vocab_size, (1, 8))
    with torch.no_grad(), modules(model) as t:
        model.prefill(tokens)
        model.decode_step(tokens[:, :1], 8)
    assert t.forwards == 2
    calls = dict(zip(t.by_class["class"], t.by_class["calls"]))
    n_layers = len(model.layers)
    assert calls["DecoderLayer"] == calls["MLAAttention"] == calls["Indexer"] == n_layers * 2
    assert calls["RMSNorm"] == (4 * n_layers + 1) * 2  # attn, ffn, q and kv norms per layer; final norm
    by_name = dict(zip(t.by_name["name"], t.by_name["calls"]))
    assert all(by_name[f"layers.{i}.self_attn"] == 2 for i in range(n_layers))
    # registration order of a decoder layer's children is the order they are called in
    order = t.layer_order
    assert list(order[order["depth"] == 1]["name"]) == [n for n, _ in model.layers[0].named_children()]
    prefill_q = t.calls[t.calls["name"] == "layers.0.self_attn.wq_a"].iloc[0]
    assert prefill_q["in_shapes"] == f"(1, 8, {model.cfg.dim})"
    assert _no_hooks(model)


def test_include_exclude(llama_trace):
    model, _ = llama_trace
    ids = torch.randint(0, 100, (1, 3))
    with torch.no_grad(), modules(model, include=r"self_attn$") as t:
        model(ids)
    assert set(t.calls["name"]) == {"model.layers.0.self_attn", "model.layers.1.self_attn"}
    assert set(t.calls["depth"]) == {3} and set(t.calls["parent"]) == {-1}  # true depth, no recorded parent
    with torch.no_grad(), modules(model, include="Linear|RMSNorm", exclude=r"^Linear$|lm_head") as t:
        model(ids)
    assert set(t.calls["class"]) == {"LlamaRMSNorm"}  # class names match too; exclude wins
    assert t.layer_name is None and t.layer_order.empty


def test_hooks_removed_after_exit_and_when_body_raises(llama_trace):
    model, _ = llama_trace
    assert _no_hooks(model)
    with pytest.raises(KeyError):
        with modules(model, profiler=True):
            assert not _no_hooks(model)
            raise KeyError("body")
    assert _no_hooks(model)


class _Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ok = nn.Linear(4, 4)
        self.bad = nn.Sequential(nn.ReLU(), _Boom())

    def forward(self, x):
        return self.bad(self.ok(x))


def test_forward_raises_hooks_removed_nvtx_balanced(monkeypatch):
    ranges: list[tuple[str, str | None]] = []
    monkeypatch.setattr(annotate, "_push", lambda msg: ranges.append(("push", msg)))
    monkeypatch.setattr(annotate, "_pop", lambda: ranges.append(("pop", None)))
    net = _Net()
    with pytest.raises(RuntimeError, match="boom"):
        with modules(net, nvtx=True) as t:
            net(torch.ones(2, 4))
    assert _no_hooks(net)
    depth = 0
    for op, _ in ranges:
        depth += 1 if op == "push" else -1
        assert depth >= 0
    assert depth == 0 and [m for op, m in ranges if op == "push"] == ["_Net", "ok", "bad", "bad.0", "bad.1"]
    errors = dict(zip(t.calls["name"], t.calls["error"].fillna("")))
    assert errors == {"_Net": "RuntimeError", "ok": "", "bad": "RuntimeError", "bad.0": "", "bad.1": "RuntimeError"}


def test_nvtx_names_strip_model_prefix(llama_trace, monkeypatch):
    model, _ = llama_trace
    pushed: list[str] = []
    monkeypatch.setattr(annotate, "_push", pushed.append)
    monkeypatch.setattr(annotate, "_pop", lambda: None)
    with torch.no_grad(), modules(model, nvtx=True, include=r"layers\.\d+\.self_attn$"):
        model(torch.randint(0, 100, (1, 3)))
    assert pushed == ["layers.0.self_attn", "layers.1.self_attn"]


def test_profiler_attributes_cpu_ops(llama_trace):
    model, _ = llama_trace
    with torch.no_grad(), modules(model, profiler=True) as t:
        model(torch.randint(0, 100, (2, 5)))
    kernels = t.kernels.set_index("name")
    assert set(kernels["kind"]) == {"cpu_op"}
    linears = t.by_name[t.by_name["class"] == "Linear"]["name"]
    assert len(linears) == 15
    for name in linears:
        assert kernels.loc[name, "count"] > 0 and kernels.loc[name, "total_us"] > 0
        assert "aten::linear" in kernels.loc[name, "top"]
    s = t.summary()
    assert 0 < kernels["count"].sum() == s["kernels_attributed"] <= s["kernels_total"]
    assert kernels["total_us"].sum() <= s["kernel_us_total"] + 1e-6
    by_kernel = t.kernels_by_name
    assert by_kernel["count"].sum() == s["kernels_attributed"]


def test_profiler_attributes_to_innermost_included_module(llama_trace):
    model, _ = llama_trace
    with torch.no_grad(), modules(model, profiler=True, include=r"self_attn$") as t:
        model(torch.randint(0, 100, (2, 5)))
    k = t.kernels.set_index("name")
    assert set(k.index) == {"model.layers.0.self_attn", "model.layers.1.self_attn"}
    # q/k/v/o projections are not included: their aten::linear counts for self_attn
    names = t.kernels_by_name
    linear = names[(names["module"] == "model.layers.0.self_attn") & (names["name"] == "aten::linear")]
    assert int(linear["count"].sum()) == 4
    s = t.summary()
    assert s["kernels_attributed"] < s["kernels_total"]  # embedding, norms, MLPs, head stay unattributed


def test_discovery_finds_the_outermost_module():
    model = runpy.run_path(str(SCRIPT))["Tiny"](2).eval()
    tokens = torch.randint(0, 32, (1, 4))
    with torch.no_grad(), modules(None) as t:
        model.layers[0](model.embed(tokens))  # standalone calls: two roots found ...
        model(tokens)  # ... then the whole model, which takes their modules over
        model(tokens)
    assert t.roots == ["Embedding", "Block", "Tiny"]
    calls = t.calls
    assert list(calls["name"][:2]) == ["Embedding", "Block"]
    assert calls[calls["name"] == "Tiny"]["in_shapes"].tolist() == ["(1, 4)"] * 2  # first call: inputs at its end
    by_name = dict(zip(t.by_name["name"], t.by_name["calls"]))
    assert by_name["Tiny"] == 2 and by_name["layers.0"] == 2 and by_name["layers.1.mlp.0"] == 2
    assert t.forwards == 4 and _no_hooks(model)


def test_to_json_round_trips(llama_trace):
    _, t = llama_trace
    data = json.loads(t.to_json())
    assert data["summary"]["calls"] == len(data["calls"]) == len(t.calls)
    assert {"by_class", "by_name", "layer_order"} <= set(data)


def test_run_script_in_process():
    trace, code = run_script(["python", str(SCRIPT), "--layers", "3", "--forwards", "2"], stdout_to_stderr=False)
    assert code == 0
    assert dict(zip(trace.by_class["class"], trace.by_class["calls"]))["Block"] == 6


def test_cli_json_counts(tmp_path):
    out = tmp_path / "trace.json"
    r = run_align("trace", "modules", "--format", "json", "--profiler", "--out", str(out), "--",
                  "python", str(SCRIPT), "--layers", "3", "--forwards", "2")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)  # the program's own print went to stderr
    assert "logits (1, 4, 32)" in r.stderr
    calls = {row["class"]: row["calls"] for row in data["by_class"]}
    assert calls == {"Tiny": 2, "Embedding": 2, "Block": 6, "LayerNorm": 6, "Linear": 20, "Sequential": 6,
                     "GELU": 6}
    assert data["summary"]["forwards"] == 2 and data["summary"]["layer"] == "layers.0"
    assert [row["name"] for row in data["layer_order"] if row["depth"] == 1] == ["norm", "attn", "mlp"]
    assert {row["kind"] for row in data["kernels"]} == {"cpu_op"} and "calls" not in data
    assert len(json.loads(out.read_text())["calls"]) == data["summary"]["calls"] == 2 * 24


def test_cli_failing_program_and_bad_input():
    r = run_align("trace", "modules", "--format", "json", "--", "python", str(SCRIPT), "--fail")
    assert r.returncode == 1 and "failing on purpose" in r.stderr
    assert json.loads(r.stdout)["summary"]["forwards"] == 1  # the trace up to the failure is reported
    r = run_align("trace", "modules", "--", "python", "no_such_script.py")
    assert r.returncode == 2 and "no such script" in r.stderr and "Traceback" not in r.stderr
    r = run_align("trace", "modules", "--include", "(", "--", "python", str(SCRIPT))
    assert r.returncode == 2 and "include regex" in r.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA kernels need a GPU")
def test_profiler_attributes_cuda_kernels():
    model = _llama().cuda()
    ids = torch.randint(0, 100, (2, 5), device="cuda")
    with torch.no_grad():
        model(ids)  # cuBLAS and allocator set-up outside the trace
        with modules(model, profiler=True) as t:
            model(ids)
    kernels = t.kernels.set_index("name")
    s = t.summary()
    assert s["kernel_kind"] == "cuda_kernel" and set(kernels["kind"]) == {"cuda_kernel"}
    for name in t.by_name[t.by_name["class"] == "Linear"]["name"]:
        assert kernels.loc[name, "count"] >= 1
    assert 0 < kernels["count"].sum() == s["kernels_attributed"] <= s["kernels_total"]


def test_gpu_nvtx_profile_has_a_range_per_module_call():
    """profiles/examples/dsa_modules (H200, nsys 2025.3): `align trace modules --nvtx` around the DSA
    E2E example. Every module this tracer sees in the same program (CPU, small dims, same structure)
    is an NVTX range there, with one instance per call; the six names the example marks itself
    (align.annotate.nvtx_modules, prefill + 8 decode steps) have 9 more. The indexer's range holds
    its top-k kernel."""
    import pandas as pd

    from .conftest import ROOT

    example = ROOT / "profiles" / "examples" / "dsa_modules"
    r = run_align("trace", "modules", "--format", "json", "--", "python",
                  str(ROOT / "mock" / "examples" / "dsa_e2e.py"), "--small", "--eager", "--layers", "2")
    assert r.returncode == 0, r.stderr
    calls = {row["name"]: row["calls"] for row in json.loads(r.stdout)["by_name"]}
    ranges = pd.read_csv(example / "oracle_nvtx_sum.csv")
    instances = dict(zip(ranges["Range"].str.lstrip(":"), ranges["Instances"]))
    marked = {f"layers.{i}{s}" for i in (0, 1) for s in ("", ".self_attn", ".mlp")}
    assert len(calls) > 30
    for name, n in calls.items():
        assert instances.get(name) == n + (9 if name in marked else 0), name
    kern = pd.read_csv(example / "oracle_nvtx_kern_sum.csv")
    indexer = kern[kern["NVTX Range"] == ":layers.0.self_attn.indexer"]["Kernel Name"]
    assert indexer.str.contains("topk", case=False).any()
