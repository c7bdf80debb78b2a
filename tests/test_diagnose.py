"""The diagnosis (align/diagnose, align/data/causes.toml) on real GPU pairs: every shipped planted
fault is named first with its planted cause, its numbers and its fix; aligned pairs get no cause; a
gap nothing in the kernels explains is said as such. The first screen leads with the answer and
fits one screen; JSON holds what the screen shows."""

from __future__ import annotations

import json
import re
import tarfile

import pytest

from align.compare.verdict import verdict
from align.diagnose import load_rules
from align.errors import AlignError

from .conftest import ROOT, run_align

EX = ROOT / "profiles/examples"
LW = EX / "layerwise"

# mock, E2E, op -> (first cause kind, words its sentence must hold, words its fix must hold), from
# each capture's meta.json "planted" (capture.sh, capture_hf.sh)
PLANTED = {
    ("hf_dsa_mock_fp32", "hf_dsa_e2e", "dsa"): ("dtype", ["fp32", "bf16"], ["bfloat16"]),
    ("hf_dsa_mock_batch", "hf_dsa_e2e", "dsa"): ("batch", ["batch 8 vs E2E 4", "prompt 512 both"], ["4 requests"]),
    ("hf_dsa_mock_shape", "hf_dsa_e2e", "dsa"): ("prompt", ["prompt 2048 vs E2E 512", "batch 4 both"],
                                                 ["512 tokens per request"]),
    ("hf_dsa_mock_eager", "hf_dsa_e2e", "dsa"): ("implementation", ["bmm + softmax", "cuDNN SDPA"], ["sdpa"]),
    ("hf_dsa_mock_missing", "hf_dsa_e2e", "dsa"): ("submodule", ["does not run the indexer"], ["indexer"]),
    ("hf_llama_mock_fp32", "hf_llama_e2e", "attention"): ("dtype", ["fp32", "bf16"], ["bfloat16"]),
    ("hf_llama_mock_batch", "hf_llama_e2e", "attention"): ("batch", ["batch 8 vs E2E 4"], ["4 requests"]),
    ("hf_llama_mock_shape", "hf_llama_e2e", "attention"): ("prompt", ["prompt 4x the E2E run's", "batch 4 both"],
                                                           ["1/4 of the mock's"]),
    ("hf_llama_mock_eager", "hf_llama_e2e", "attention"): ("implementation", ["bmm + softmax", "cuDNN SDPA"],
                                                           ["sdpa"]),
    ("hf_llama_mock_missing", "hf_llama_e2e", "attention"): ("submodule", ["rotary embedding", "neg_kernel_cuda"],
                                                             ["rotary"]),
    ("attn_mock_fp32", "llama_e2e", "attention"): ("dtype", ["fp32", "bf16"], ["bfloat16"]),
    ("attn_mock_slow", "llama_e2e", "attention"): ("batch", ["batch 16 vs E2E 2"], ["2 requests"]),
    ("attn_mock_extra", "llama_e2e", "attention"): ("after", ["GeluCUDAKernelImpl", "after the op's last kernel"],
                                                    ["--accept 'elementwise_kernel:GeluCUDAKernelImpl'"]),
    ("attn_mock_missing", "llama_e2e", "attention"): ("submodule", ["rotary embedding"], ["rotary"]),
    ("attn_mock_count", "llama_e2e", "attention"): ("count", ["nvjet_tst_gemm 5 times", "launches it 4 times"],
                                                    ["as often per forward"]),
    ("attn_mock", "llama_e2e_eager", "attention"): ("graph", ["the mock launches graph, the E2E run eager"],
                                                    ["launch the mock eagerly"]),
}
ALIGNED = [("hf_dsa_mock", "hf_dsa_e2e", "dsa"), ("hf_llama_mock", "hf_llama_e2e", "attention"),
           ("attn_mock", "llama_e2e", "attention"), ("mla_mock", "mla_e2e", "mla"), ("dsa_mock", "dsa_e2e", "dsa")]


@pytest.mark.parametrize("pair", sorted(PLANTED), ids=lambda p: p[0] + "-" + p[1])
def test_a_planted_fault_is_named_first_with_its_numbers_and_fix(pair):
    kind, says, fix = PLANTED[pair]
    mock, e2e, op = pair
    v = verdict(EX / mock, EX / e2e, op=op, record_in_store=False)
    assert not v.passed and v.causes, v.checks[["name", "reason"]].to_string()
    first = v.causes[0]
    assert first.kind == kind, [(c.kind, c.says) for c in v.causes]
    for words in says:
        assert words in first.says, first.says
    for words in fix:
        assert words in first.fix, first.fix
    assert first.source and 0 < first.explains <= 1.0
    assert v.answer.startswith(f"FAIL ({op}): ") and kind in v.answer


def test_the_causes_explain_most_of_the_gap_and_are_ranked():
    """Ranked by the share of the families' latency gap each explains; the planted one explains most."""
    for mock, e2e, op in sorted(PLANTED):
        v = verdict(EX / mock, EX / e2e, op=op, record_in_store=False)
        shares = [c.explains for c in v.causes]
        assert shares == sorted(shares, reverse=True), (mock, shares)
    v = verdict(EX / "hf_dsa_mock_fp32", EX / "hf_dsa_e2e", op="dsa", record_in_store=False)
    assert [c.kind for c in v.causes] == ["dtype"] and v.causes[0].explains > 0.9
    # the doubled grids of float32's narrower vectors are no other problem size
    assert "shapes" not in set(v.checks.loc[~v.checks["passed"], "name"])


def test_both_faults_of_the_indexer_mock_are_named():
    """hf_*_mock_missing leaves out the rotary embedding and replaces the indexer's top-k: two causes."""
    v = verdict(EX / "hf_dsa_mock_missing", EX / "hf_dsa_e2e", op="dsa", record_in_store=False)
    named = {c.evidence.get("submodule") for c in v.causes if c.kind == "submodule"}
    assert named == {"the indexer", "the rotary embedding"}
    assert v.answer == "FAIL (dsa): 2 causes: submodule: the indexer, submodule: the rotary embedding"


@pytest.mark.parametrize("pair", ALIGNED, ids=lambda p: p[0] + "-" + p[1])
def test_an_aligned_pair_gets_no_cause(pair):
    mock, e2e, op = pair
    v = verdict(EX / mock, EX / e2e, op=op, record_in_store=False)
    assert v.passed and v.causes == [] and v.answer == f"PASS ({op})"


def test_a_gap_nothing_explains_is_said_so(tmp_path):
    """The aligned Llama pair decodes 0.91x as long in the mock; a latency bound of 5 % fails it, and
    no rule may invent a cause for the same kernels at the same sizes."""
    cfg = tmp_path / "tight.toml"
    cfg.write_text("[verdict]\nlatency_ratio = 1.05\n")
    v = verdict(EX / "hf_llama_mock", EX / "hf_llama_e2e", op="attention", record_in_store=False, config=str(cfg))
    assert set(v.checks.loc[~v.checks["passed"], "name"]) == {"latency"}
    assert [c.kind for c in v.causes] == ["unexplained"]
    c = v.causes[0]
    assert c.says.startswith("nothing in the kernels explains") and "latency" in c.says
    assert c.explains == 0 and v.answer == "FAIL (attention): no cause found in the kernels"


@pytest.fixture(scope="module")
def layerwise(tmp_path_factory):
    root = tmp_path_factory.mktemp("lw")
    for pack in ("moe", "compiled"):
        with tarfile.open(LW / f"{pack}.tar.gz") as tar:
            tar.extractall(root, filter="data")
    return root


MOE = {
    "hf_moe_mock_fp32": ("dtype", ["fp32", "bf16"]),
    "hf_moe_mock_eager": ("implementation", ["experts one by one", "grouped GEMM experts"]),
    "hf_moe_mock_grouped": ("implementation", ["grouped GEMM experts", "none of its kernels"]),
    "hf_moe_mock_batch": ("batch", ["batch 4x the E2E run's"]),
    "hf_moe_mock_topk": ("tokens", ["num_experts_per_tok", "0.5x the E2E run's"]),
}


@pytest.mark.parametrize("mock", sorted(MOE))
def test_moe_faults_are_diagnosed(layerwise, mock):
    """DeepSeek-V3's MoE block against generate() marked as SGLang marks it (H100 captures)."""
    kind, says = MOE[mock]
    v = verdict(layerwise / mock, layerwise / "hf_moe_e2e_sglang", op="moe", record_in_store=False)
    assert v.causes and v.causes[0].kind == kind, [(c.kind, c.says) for c in v.causes]
    for words in says:
        assert words in v.causes[0].says, v.causes[0].says
    aligned = verdict(layerwise / "hf_moe_mock", layerwise / "hf_moe_e2e_sglang", op="moe", record_in_store=False)
    assert aligned.passed and aligned.causes == []


def test_a_compiled_e2e_run_is_a_cause(layerwise):
    """torch.compile'd generate() (Inductor, CUDA graphs) against the eager mock: the compilation and
    the graph replay are both named, each with its fix; the mock compiled the same way has none."""
    v = verdict(layerwise / "hf_llama_mock", layerwise / "hf_llama_e2e_compiled", op="attention",
                record_in_store=False)
    kinds = {c.kind: c for c in v.causes}
    assert {"compiled", "graph"} <= set(kinds)
    assert "the E2E run is compiled" in kinds["compiled"].says and "triton_" in kinds["compiled"].says
    assert "torch.compile" in kinds["compiled"].fix and "CUDA graph" in kinds["graph"].fix
    same = verdict(layerwise / "hf_llama_mock_compiled", layerwise / "hf_llama_e2e_compiled", op="attention",
                   record_in_store=False)
    assert same.passed and same.causes == []


@pytest.mark.parametrize("pair", sorted(PLANTED), ids=lambda p: p[0] + "-" + p[1])
def test_the_first_screen_leads_with_the_answer_and_fits(pair, tmp_path):
    """At 100 columns: the answer on line 1, the planted cause in the first 8 lines, all in 25."""
    mock, e2e, op = pair
    r = run_align("verdict", str(EX / mock), str(EX / e2e), "--op", op, "--no-record", env={"COLUMNS": "100"})
    assert r.returncode == 1, r.stderr
    lines = r.stdout.rstrip("\n").splitlines()
    assert lines[0].startswith(f"FAIL ({op}): ") and len(lines) <= 25, r.stdout
    assert all(len(line) <= 100 for line in lines), r.stdout
    kind = PLANTED[pair][0]
    assert any(line.startswith(f"1. {kind} [") for line in lines[:8]), r.stdout
    assert "checks:" in lines and "not recorded (--no-record)" in r.stderr and "ranges: mock " in r.stderr
    # the full reasons only with --explain
    assert "largest gaps" not in r.stdout
    full = run_align("verdict", str(EX / mock), str(EX / e2e), "--op", op, "--no-record", "--explain",
                     env={"COLUMNS": "100"})
    assert full.returncode == 1 and "pairing: mock phases and E2E forwards" in full.stdout


def test_json_holds_the_causes_launches_shapes_and_ranges(tmp_path):
    store = tmp_path / "store"
    r = run_align("verdict", str(EX / "hf_llama_mock_batch"), str(EX / "hf_llama_e2e"), "--op", "attention",
                  "-f", "json", "--store", str(store))
    assert r.returncode == 1, r.stderr
    v = json.loads(r.stdout)
    assert v["schema_version"] == 2 and v["answer"] == "FAIL (attention): 1 cause: batch"
    (c,) = v["causes"]
    assert c["kind"] == "batch" and c["evidence"]["mock"]["batch"] == 8 and c["evidence"]["e2e"]["batch"] == 4
    assert set(c) == {"kind", "label", "phase", "says", "fix", "source", "evidence", "explains", "families"}
    assert {r["phase"] for r in v["launch"]} == {"context", "generation"}
    assert all({"mock_mode", "e2e_mode", "mock_api_ns", "e2e_api_ns"} <= set(r) for r in v["launch"])
    grown = [s for s in v["shapes"] if not s["same"] and s["cause"].startswith("another problem size")]
    assert grown and all({"grid", "block", "registers", "static_smem", "dynamic_smem", "kernels"} <= set(x)
                         for s in grown for x in s["mock"] + s["e2e"])
    assert v["ranges"] == {"mock": "^mock_(context|prefill|generation|decode)$ (verdict.toml [mock] range)",
                           "e2e": "op attention (registry patterns)"}
    assert v["recorded"].startswith(str(store)) and json.loads(open(v["recorded"]).read())["causes"] == v["causes"]
    # align diff's JSON carries each family's launches too
    d = run_align("diff", str(EX / "hf_llama_mock_batch"), str(EX / "hf_llama_e2e"), "--op", "attention", "-f", "json")
    rows = json.loads(d.stdout)
    assert all("mock_launches" in r and "e2e_launches" in r for r in rows)
    assert any(r["mock_launches"] and r["mock_launches"][0]["grid"] != r["e2e_launches"][0]["grid"]
               for r in rows if r["mock_launches"] and r["e2e_launches"])


def test_ops_cuts_the_op_as_the_verdict_does():
    """align ops E2E --op dsa uses the range the verdict uses (verdict.toml [e2e] dsa), says so, and
    finds the same kernel families."""
    r = run_align("ops", str(EX / "hf_dsa_e2e"), "--op", "dsa", "--kernels", "-f", "json")
    assert r.returncode == 0, r.stderr
    assert "range: layers\\.\\d+\\.self_attn$ (verdict.toml [e2e] dsa)" in r.stderr
    rows = json.loads(r.stdout)
    v = verdict(EX / "hf_dsa_mock", EX / "hf_dsa_e2e", op="dsa", record_in_store=False)
    assert v.comparison.e2e.range_used == "layers\\.\\d+\\.self_attn$ (verdict.toml [e2e] dsa)"
    items = v.comparison.e2e.items
    assert len(rows) == len(items) and {r["family"] for r in rows} == set(items["family"].astype(str))
    assert {r["range"] for r in rows} == {f":layers.{i}.self_attn" for i in range(4)}


def test_users_extend_the_rules(tmp_path):
    """A user's causes file goes in front: its sub-module wins, its wording replaces ours key by key;
    a broken rule is one line naming the file."""
    mine = tmp_path / "mine.toml"
    mine.write_text("[[subops]]\nname = \"our RoPE kernel\"\nkernels = ['neg_kernel_cuda']\n"
                    "[words.submodule]\nfix = \"call rope() before attention\"\n")
    v = verdict(EX / "hf_llama_mock_missing", EX / "hf_llama_e2e", op="attention", record_in_store=False,
                causes=str(mine))
    assert v.causes[0].says.startswith("the mock does not run our RoPE kernel")
    assert v.causes[0].fix == "call rope() before attention"
    bad = tmp_path / "bad.toml"
    bad.write_text("[[subops]]\nname = \"x\"\nkernels = ['(']\n")
    with pytest.raises(AlignError, match="bad regex in \\[\\[subops\\]\\] kernels of .*bad.toml"):
        load_rules(bad)
    bad.write_text("[words.dtype]\nsays = \"{nope}\"\n")
    with pytest.raises(AlignError, match=re.escape("[words.dtype] of") + ".*names a field it is not given"):
        verdict(EX / "hf_llama_mock_fp32", EX / "hf_llama_e2e", op="attention", record_in_store=False,
                causes=str(bad))
    r = run_align("verdict", str(EX / "hf_llama_mock"), str(EX / "hf_llama_e2e"), "--op", "attention",
                  "--no-record", "--causes", str(tmp_path / "absent.toml"))
    assert r.returncode == 2 and "cannot read causes file" in r.stderr and "Traceback" not in r.stderr


def test_version_and_profiles_given_twice():
    r = run_align("--version")
    assert r.returncode == 0 and re.fullmatch(r"align \d+\.\d+\.\d+\n", r.stdout)
    r = run_align("verdict", str(EX / "hf_llama_mock"), str(EX / "hf_llama_e2e"), "--mock", str(EX / "hf_llama_mock"))
    assert r.returncode == 2 and "profiles given twice" in r.stderr
    r = run_align("verdict", str(EX / "hf_llama_mock"))
    assert r.returncode == 2 and "missing the E2E profile" in r.stderr


def test_markdown_and_report_lead_with_the_causes():
    from align.compare.report import render_html

    v = verdict(EX / "attn_mock_count", EX / "llama_e2e", op="attention", record_in_store=False)
    md = v.to_markdown()
    assert "**FAIL (attention): 1 cause: count**" in md and md.index("1. **count**") < md.index("| check |")
    html = render_html(v)
    assert html.index("<h2>Causes</h2>") < html.index("<h2>Checklist</h2>") and "nvjet_tst_gemm 5 times" in html


@pytest.mark.parametrize("mock", ["hf_dsa_mock_eager", "hf_dsa_mock_batch", "hf_llama_mock_shape"])
def test_every_shape_cause_says_what_differs(mock):
    """A family whose grids mix the same values otherwise (hf_dsa_mock_eager) once got an empty cause."""
    e2e, op = ("hf_dsa_e2e", "dsa") if "dsa" in mock else ("hf_llama_e2e", "attention")
    v = verdict(EX / mock, EX / e2e, op=op, record_in_store=False)
    causes = v.comparison.shapes["cause"]
    assert not any(c.rstrip().endswith((":", "):")) or c.endswith(": ") for c in causes), list(causes)


def test_a_narrow_diff_keeps_its_numbers():
    """At 100 columns the words fold (headers at "_") before a number column goes."""
    r = run_align("diff", str(EX / "hf_dsa_mock_fp32"), str(EX / "hf_dsa_e2e"), "--op", "dsa", env={"COLUMNS": "100"})
    assert r.returncode == 0, r.stderr
    left = next((line for line in r.stderr.splitlines() if "left out to fit" in line), "")
    assert "mock_ns" not in left and "latency_ratio" not in left and "e2e_ns" not in left
    assert "ratio" in r.stdout and all(len(line) <= 100 for line in r.stdout.splitlines())


def test_grids_that_mix_the_same_values_otherwise_are_named():
    from align.compare.shapes import _cause

    cfg = (128, 1, 1, 32, 0, 0)
    mock = [((1, 2, 1), cfg), ((2, 1, 1), cfg)]
    e2e = [((1, 1, 1), cfg), ((2, 2, 1), cfg)]
    assert _cause(mock, e2e, False) == ("another problem size (batch, sequence or heads): "
                                        "grids 1,2,1/2,1,1 vs 1,1,1/2,2,1")

