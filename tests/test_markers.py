"""Layer-wise NVTX markers as the engines write them: read back by module path, cut at the module
that holds the op, phases from their shapes; on synthetic exports, on a real hf_dsa_e2e export whose
range texts are rewritten into the markers' form, and on real nsys captures of transformers' models
marked by align.annotate.layerwise_markers."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

import align
from align.annotate import MARKER_STYLES, layerwise_markers, marker_text
from align.attribute import markers
from align.attribute.ops import OpView
from align.ops.registry import load_registry
from tests.conftest import ROOT, run_align
from tests.synth import Synth

EX = ROOT / "profiles" / "examples"
TRT = "{'Module': 'DeepseekV32ForCausalLM.model.layers.3.self_attn', 'TrainableParams': {}, 'Inputs': [[2, 1, 7168]]}"
VLLM_OUT = "{'Module': 'top.model.layers.3.self_attn', 'Outputs': [[2, 1, 7168]]}"


def test_marker_texts_read_back():
    m = markers.parse(TRT)
    assert (m.module, m.output, m.tokens) == ("DeepseekV32ForCausalLM.model.layers.3.self_attn", False, 1)
    assert markers.phase(TRT) == "generation" and markers.label(TRT) == m.module
    ctx = "{'Module': 'model.model.layers.0', 'hidden_states': [[4, 512, 1024]], 'position_ids': [[4, 512]]}"
    assert markers.phase(ctx) == "context"
    # an output marker names the module but is never an op's range
    assert markers.label(VLLM_OUT) is None and markers.shown(VLLM_OUT) == "top.model.layers.3.self_attn [output]"
    # flattened tokens ([tokens, hidden]) say nothing about the phase; other texts are themselves
    assert markers.phase("{'Module': 'top.model.layers.0', 'Inputs': [[4096, 7168]]}") is None
    assert markers.parse("layers.3.self_attn") is None and markers.label("layers.3.self_attn") == "layers.3.self_attn"
    assert markers.parse("{'Module': 'x', 'Inputs': [[1, 2") == markers.Marker("x", False, None)  # cut text


def test_prefixes_never_match_an_op():
    """TensorRT-LLM's prefix is the architecture name: Qwen3MoeForCausalLM's attention is no MoE."""
    reg = load_registry()
    assert not reg.op("moe").matches_range("Qwen3MoeForCausalLM.model.layers.1.self_attn")
    assert reg.op("moe").matches_range("Qwen3MoeForCausalLM.model.layers.1.mlp.experts")
    assert reg.op("moe").matches_range("Deepseekv3MoE")  # the layer-wise benchmark's class-name range


def test_emitter_writes_each_engines_form():
    torch = pytest.importorskip("torch")
    import align.annotate as annotate

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.0))
    pushed = []
    saved = annotate._push, annotate._pop
    annotate._push, annotate._pop = (lambda t: pushed.append(t)), (lambda: pushed.append(None))
    try:
        out = {}
        for engine in MARKER_STYLES:
            pushed.clear()
            remove = layerwise_markers(model, engine)
            model(torch.zeros(2, 1, 4))
            remove()
            out[engine] = list(pushed)
        model(torch.zeros(2, 1, 4))
        assert len(pushed) == len(out["sglang"])  # hooks removed
    finally:
        annotate._push, annotate._pop = saved
    trt = out["trtllm"]
    assert trt[0] == "{'Module': 'Sequential', 'TrainableParams': {}, 'Inputs': [[2, 1, 4]]}"
    assert trt[1].startswith("{'Module': 'Sequential.0', 'TrainableParams': {'weight': [3, 4], 'bias': [3]}")
    assert trt.count(None) == 3 and not any("Outputs" in t for t in trt if t)  # no output markers
    vllm = out["vllm"]
    assert vllm[0] == "{'Module': 'top', 'Inputs': [[2, 1, 4]]}" and "'StaticParams': {'in_features': 4" in vllm[1]
    assert not any("top.1" in t for t in vllm if t)  # Dropout gets no range
    # each module's range is popped, then its output marker pushed and popped
    assert vllm[2:5] == [None, vllm[1].replace("'Inputs'", "'Outputs'").replace("[[2, 1, 4]]", "[[2, 1, 3]]"), None]
    assert out["sglang"][0].startswith("{'Module': 'model'")
    for texts in out.values():  # balanced
        depth = 0
        for t in texts:
            depth += 1 if t else -1
            assert depth >= 0
        assert depth == 0


def _dsa_profile(path, marked: bool, output_markers: bool = False):
    """Two forwards (a prefill and a decode) of one DSA layer: q projection, the indexer's top-k,
    attention; named as align's hooks name them, or as TensorRT-LLM's markers (indexer nested)."""
    s = Synth(path).enums()
    corr = 0

    def rng(t0, t1, text):
        s.nvtx(t0, t1, text)

    def kern(t, name):
        nonlocal corr
        corr += 1
        s.runtime(t, t + 2, "cudaLaunchKernel_v7000", corr=corr)
        s.kernel(t + 5, t + 8, name, corr=corr)

    for i, tokens in enumerate((512, 1)):
        t = i * 1000
        if marked:
            shape = f"[[4, {tokens}, 7168]]"
            rng(t, t + 100, f"{{'Module': 'DeepseekV32ForCausalLM.model.layers.0', 'TrainableParams': {{}}, 'Inputs': {shape}}}")
            rng(t + 1, t + 90, "{'Module': 'DeepseekV32ForCausalLM.model.layers.0.self_attn', 'TrainableParams': {}}")
            rng(t + 2, t + 20, f"{{'Module': 'DeepseekV32ForCausalLM.model.layers.0.self_attn.q_a_proj', "
                               f"'TrainableParams': {{'weight': [1536, 7168]}}, 'Inputs': {shape}}}")
            kern(t + 3, "nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT")
            rng(t + 30, t + 50, "{'Module': 'DeepseekV32ForCausalLM.model.layers.0.self_attn.indexer', "
                                f"'TrainableParams': {{}}, 'Inputs': {shape}}}")
            kern(t + 31, "void at::native::sbtopk::gatherTopK<float, unsigned int, 2, false>(int)")
            if output_markers:
                rng(t + 51, t + 52, "{'Module': 'DeepseekV32ForCausalLM.model.layers.0.self_attn.indexer', "
                                    f"'Outputs': {shape}}}")
            kern(t + 60, "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3")
        else:
            rng(t, t + 100, "layers.0")
            rng(t + 1, t + 90, "layers.0.self_attn")
            kern(t + 3, "nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT")
            kern(t + 31, "void at::native::sbtopk::gatherTopK<float, unsigned int, 2, false>(int)")
            kern(t + 60, "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3")
    return s.close()


@pytest.mark.parametrize("outputs", [False, True], ids=["trtllm", "with-output-markers"])
def test_op_is_cut_at_its_scope_and_phased_by_shapes(tmp_path, outputs):
    """The indexer's own range sits inside self_attn: the DSA forward is the self_attn range, every
    kernel of the layer's attention in it; the decoder layer's input shapes give the phases; an
    output marker is never a forward."""
    with align.load(_dsa_profile(tmp_path / "m.sqlite", True, outputs)) as p:
        view = OpView(p)
        items = view.op_items("dsa")
        names = set(view.range_names(items))
    assert len(items) == 6 and set(items["method"].astype(str)) == {"nvtx"}
    assert names == {":DeepseekV32ForCausalLM.model.layers.0.self_attn"}
    assert items.groupby("forward").size().tolist() == [3, 3]
    assert items.sort_values("start")["phase"].astype(str).tolist() == ["context"] * 3 + ["generation"] * 3
    assert set(items["evidence"].astype(str)) == {"marker shapes"}


def test_marked_and_plain_runs_cut_the_same_work(tmp_path):
    """The same kernels under align's short names (the E2E convention [e2e] dsa of verdict.toml) and
    under markers give the same forwards and families."""
    from align.compare.diff import load_config, op_side

    cfg = load_config()
    out = {}
    for marked in (False, True):
        with align.load(_dsa_profile(tmp_path / f"{marked}.sqlite", marked)) as p:
            side = op_side(OpView(p), "e2e", "dsa", None, cfg)
            out[marked] = side.items.groupby("forward")["family"].apply(lambda f: sorted(f.astype(str))).tolist()
    assert out[True] == out[False] and len(out[True]) == 2


def test_overview_gives_the_layer_to_its_op(tmp_path):
    """align ops: a marked run's projections and top-k belong to DSA, not to gemm/sampling (the
    outermost op range holding them)."""
    with align.load(_dsa_profile(tmp_path / "m.sqlite", True)) as p:
        over = OpView(p).overview()
    assert over.groupby("op")["kernels"].sum().to_dict() == {"dsa": 6}


def _rewrite(src, dst, outputs: bool):
    """``src``'s export with each align range text (``layers.N[.self_attn|.mlp]``) rewritten as
    TensorRT-LLM's marker of that module, and, with ``outputs``, an output marker after each range
    (vLLM's form); the kernels and times as they were."""
    shutil.copy(src, dst)
    con = sqlite3.connect(dst)
    con.execute("UPDATE NVTX_EVENTS SET text = '{''Module'': ''DeepseekV32ForCausalLM.model.' || text || "
                "''', ''TrainableParams'': {}}' WHERE text LIKE 'layers.%'")
    if outputs:
        con.execute("INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, domainId) "
                    "SELECT \"end\" + 1, \"end\" + 2, eventType, replace(text, '''TrainableParams'': {}', "
                    "'''Outputs'': [[4, 1, 7168]]'), globalTid, domainId FROM NVTX_EVENTS WHERE text LIKE '{%'")
    con.commit()
    con.close()
    return dst


@pytest.mark.parametrize("outputs", [False, True], ids=["trtllm", "vllm-outputs"])
def test_real_e2e_with_marker_texts_keeps_its_verdict(tmp_path, outputs):
    """The measured failure of the issue: hf_dsa_e2e with its range texts rewritten into the markers'
    form gave exit 2 ("no GPU work for dsa"); it now gives the original's verdict for the same reasons."""
    e2e = _rewrite(EX / "hf_dsa_e2e" / "report.sqlite", tmp_path / "e2e.sqlite", outputs)
    verdicts = {}
    for name, path in (("plain", EX / "hf_dsa_e2e"), ("marked", e2e)):
        r = run_align("verdict", "--op", "dsa", "--mock", str(EX / "hf_dsa_mock"), "--e2e", str(path), "-f", "json")
        assert r.returncode == 0, r.stderr
        verdicts[name] = json.loads(r.stdout)
    a, b = verdicts["plain"], verdicts["marked"]
    assert a["passed"] == b["passed"] is True
    assert [(c["name"], c["passed"], c["reason"]) for c in a["checks"]] == \
        [(c["name"], c["passed"], c["reason"]) for c in b["checks"]]
    r = run_align("nvtx", str(e2e), "-f", "csv")
    assert "DeepseekV32ForCausalLM.model.layers.0.self_attn" in r.stdout and "{'Module'" not in r.stdout
    wide = run_align("nvtx", str(e2e), "-f", "csv", "--wide")
    assert "{'Module': 'DeepseekV32ForCausalLM.model.layers.0.self_attn'" in wide.stdout


# ---- real nsys captures of transformers' models (CPU: NVTX only) ---------------------------------
@pytest.fixture(scope="module")
def captured(nsys, tmp_path_factory):
    """transformers' DeepSeek-V3 (MoE, a first dense layer) generate() marked as SGLang marks it, and
    DeepSeek-V3.2 marked as TensorRT-LLM does, each a real nsys capture on this machine."""
    pytest.importorskip("transformers")
    store = tmp_path_factory.mktemp("store")
    runs = {"moe_sglang": ["--model", "moe", "--layers", "3", "--markers", "sglang"],
            "dsa_trtllm": ["--model", "dsa", "--layers", "2", "--markers", "trtllm"]}
    for name, args in runs.items():
        r = run_align("profile", "e2e", "--store", str(store), "--name", name, "--trace", "nvtx", "--",
                      sys.executable, str(ROOT / "mock/examples/hf_generate.py"), "--small", "--batch", "2",
                      "--prompt", "16", "--new-tokens", "3", *args)
        assert r.returncode == 0, r.stderr
    return store, nsys


def _nsys_nvtx_sum(nsys, path) -> pd.DataFrame:
    report = "nvtxsum" if nsys.version.startswith("2022") else "nvtx_sum"
    out = subprocess.run([nsys.path, "stats", "--report", report, "--format", "csv", "--force-export", "false",
                          str(path)], capture_output=True, text=True, timeout=300)
    text = out.stdout[out.stdout.index("Time (%)"):]
    df = pd.read_csv(io.StringIO(text))
    df["Range"] = df["Range"].str.removeprefix(":")
    return df


@pytest.mark.nsys
@pytest.mark.parametrize("name", ["moe_sglang", "dsa_trtllm"])
def test_real_capture_named_by_module_path(captured, name):
    """align nvtx: each marker text by its module path, instances summed over that module's texts
    (the real nsys's own rows of the same file, grouped); --wide: nsys's rows as they are."""
    store, nsys = captured
    db = store / name / "report.sqlite"
    theirs = _nsys_nvtx_sum(nsys, db)
    assert theirs["Range"].str.startswith("{'Module'").all()
    ours = pd.read_csv(io.StringIO(run_align("nvtx", str(db), "--cpu", "-f", "csv").stdout))
    ours["Range"] = ours["Range"].str.removeprefix(":")
    assert not ours["Range"].str.contains("{", regex=False).any()
    grouped = theirs.assign(Range=theirs["Range"].map(markers.shown)).groupby("Range")
    expected = grouped[["Instances", "Total Time (ns)"]].sum().sort_index()
    got = ours.set_index("Range")[["Instances", "Total Time (ns)"]].sort_index()
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    wide = pd.read_csv(io.StringIO(run_align("nvtx", str(db), "--cpu", "--wide", "-f", "csv").stdout))
    wide["Range"] = wide["Range"].str.removeprefix(":")
    key = ["Range", "Style"]
    a = wide.sort_values(key).reset_index(drop=True)
    b = theirs.sort_values(key).reset_index(drop=True)
    assert a["Range"].tolist() == b["Range"].tolist() and (a["Instances"] == b["Instances"]).all()


@pytest.mark.nsys
def test_real_capture_nesting_prefixes_and_phases(captured):
    """Every module's range nests in its parent's; the prefill's decoder layers say context, each
    decode step's generation; SGLang's output markers follow their module."""
    from align.attribute.ranges import load_ranges

    store, _ = captured
    for name, root in (("moe_sglang", "model"), ("dsa_trtllm", "DeepseekV32ForCausalLM")):
        with align.load(store / name / "report.sqlite") as p:
            r = load_ranges(p)
        texts = r.df["text"].astype(str).to_numpy()
        paths = [markers.parse(t).module for t in texts]
        assert all(path == root or path.startswith(root + ".") for path in paths), name
        for i, path in enumerate(paths):
            if "." in path and not markers.parse(texts[i]).output:
                parent = r.parent[i]
                assert parent >= 0 and path.startswith(paths[parent] + "."), (name, path, paths[parent])
        layer = [markers.phase(t) for t, path in zip(texts, paths) if path == f"{root}.model.layers.1"
                 and not markers.parse(t).output]
        assert layer == ["context", "generation", "generation"], name
        outputs = sum(markers.parse(t).output for t in texts)
        assert (outputs > 0) == (name == "moe_sglang"), name


def test_engine_steps_in_their_domain_decide_before_shapes(tmp_path):
    """TensorRT-LLM writes its executor steps in its own NVTX domain around the markers: the step
    (kept as ``TensorRT-LLM:...``) decides the phase, a mixed step stays mixed whatever the shapes say."""
    s = Synth(tmp_path / "t.sqlite").enums()
    s.nvtx(0, None, "TensorRT-LLM", event_type=75, domain=1)
    s.nvtx(0, 500, "[Executor] _forward_step 7: 1 ctx reqs, 3 gen reqs", domain=1)
    s.nvtx(10, 400, "{'Module': 'DeepseekV32ForCausalLM.model.layers.0.self_attn', 'TrainableParams': {}, "
                    "'Inputs': [[1, 1, 7168]]}")
    s.runtime(20, 22, "cudaLaunchKernel_v7000", corr=1)
    s.kernel(30, 40, "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3", corr=1)
    with align.load(s.close()) as p:
        view = OpView(p)
        items = view.op_items("attention")
        steps = view.step_texts(items)
    assert items["phase"].astype(str).tolist() == ["mixed"] and items["evidence"].astype(str).tolist() == ["engine steps"]
    assert steps.tolist() == ["[Executor] _forward_step 7: 1 ctx reqs, 3 gen reqs"]
    r = run_align("nvtx", str(tmp_path / "t.sqlite"), "-f", "csv")
    assert "TensorRT-LLM:[Executor] _forward_step 7" in r.stdout
    assert ":DeepseekV32ForCausalLM.model.layers.0.self_attn," in r.stdout
