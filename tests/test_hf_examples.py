"""The independent example scripts (mock/examples/hf_*.py) on the CPU, at CPU size: transformers'
own generate() and attention classes. The mock must feed the attention what generate() feeds it,
and the E2E run must mark modules only, with no range that names a phase (real nsys 2022.4)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import align
from align.ops.registry import load_registry

from .conftest import ROOT, run_align

EX = ROOT / "mock" / "examples"
pytest.importorskip("transformers.models.deepseek_v32")


def run_script(name: str, *args: str) -> dict:
    r = subprocess.run([sys.executable, str(EX / name), "--small", "--batch", "2", *args], capture_output=True,
                       text=True, timeout=600, cwd=EX)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["llama", "dsa"])
def test_mock_feeds_the_attention_as_generate_does(model):
    """Shapes, dtypes and strides of every tensor the attention receives, prefill and first decode step."""
    e2e = run_script("hf_generate.py", "--model", model, "--layers", "2", "--prompt", "16", "--new-tokens", "3",
                     "--record-inputs")
    mock = run_script("hf_attention_mock.py", "--model", model, "--seq", "16", "--kv-len", "17", "--iters", "1",
                      "--warmup", "1", "--record-inputs")
    assert e2e["output_len"] == 19 and len(e2e["attention_inputs"]) == 2
    assert mock["attention_inputs"] == e2e["attention_inputs"]
    assert mock["class"] == {"llama": "LlamaAttention", "dsa": "DeepseekV32Attention"}[model]


@pytest.mark.nsys
def test_e2e_names_modules_and_engine_steps_but_no_phase(nsys, tmp_path):
    r = run_align("profile", "e2e", "--name", "gen", "--store", str(tmp_path), "--trace", "nvtx", "--",
                  sys.executable, str(EX / "hf_generate.py"), "--model", "dsa", "--small", "--layers", "2",
                  "--batch", "2", "--prompt", "16", "--new-tokens", "4", "--engine-steps", cwd=EX)
    assert r.returncode == 0, r.stderr
    reg = load_registry()
    with align.load(tmp_path / "gen") as p:
        texts = set(p.nvtx(marks=False)["text"].astype(str))
    modules = {t for t in texts if not t.startswith("[Executor]")}
    assert modules == {"layers.0", "layers.1", "layers.0.self_attn", "layers.1.self_attn", "layers.0.mlp",
                       "layers.1.mlp"}
    assert not any(rx.search(t) for t in modules for rx in reg._phase_re.values())
    steps = sorted(texts - modules)
    assert [reg.step_phase(t) for t in steps] == ["context", "generation", "mixed", "generation"]


def test_the_adapter_feeds_the_attention_as_generate_does():
    """mock/frameworks' DSA module (dynamic cache, as generate() runs) receives tensors of the same
    shapes, dtypes and strides as generate()'s self_attn, in prefill and in the first decode step."""
    from align_mock.frameworks import Case, get_adapter

    e2e = run_script("hf_generate.py", "--model", "dsa", "--layers", "2", "--prompt", "16", "--new-tokens", "3",
                     "--record-inputs")
    adapter = get_adapter("transformers")
    got = [adapter.build(Case("dsa", phase, batch=2, seq=seq, kv_len=kv, config="small", dtype="float32",
                              device="cpu", cache="dynamic")).inputs
           for phase, seq, kv in (("context", 16, 0), ("generation", 1, 16))]
    assert got == e2e["attention_inputs"]
