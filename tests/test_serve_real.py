"""A real server under `align profile e2e --serve` (issue 30): transformers serve on an H100, captured
by profiles/examples/capture_serve.sh and packed in profiles/examples/serve/serve.tar.gz: plain mode
(one generate() per request) and continuous batching, with the seed's system-wide flags, delay and
duration; the LlamaAttention mock of one request and of four beside them; the DeepSeek-V3.2 probes.
Each capture is checked against nsys stats of itself, and every verdict against the run's own facts
(the load in meta.json, the layer count in the capture script)."""

from __future__ import annotations

import json
import re
import tarfile

import pandas as pd
import pytest

import align
from align.attribute.ops import OpView

from .conftest import ROOT, run_align
from .test_examples import _compare_kernel_csv

PACK = ROOT / "profiles" / "examples" / "serve" / "serve.tar.gz"
SCRIPT = ROOT / "profiles" / "examples" / "capture_serve.sh"
SERVED = ("hf_serve_llama", "hf_serve_llama_cb")
MOCKS = ("hf_serve_llama_mock", "hf_serve_llama_mock_b4")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    with tarfile.open(PACK) as tar:
        tar.extractall(root, filter="data")
    return root


def _meta(store, name: str) -> dict:
    return json.loads((store / name / "meta.json").read_text())


def _layers() -> int:
    """The served model's decoder layers, as the capture script built it."""
    return int(re.search(r"hf_serve_model\.py --model llama --layers (\d+)", SCRIPT.read_text()).group(1))


def _verdict(store, mock: str, e2e: str, *extra: str):
    r = run_align("verdict", "--op", "attention", "--mock", str(store / mock), "--e2e", str(store / e2e), "--no-record",
                  "-f", "json", *extra)
    return r, (json.loads(r.stdout) if r.stdout.strip() else None)


def test_the_pack_is_what_the_capture_script_makes(store):
    entries = sorted(p.name for p in store.iterdir() if (p / "meta.json").exists())
    assert entries == sorted(SERVED + MOCKS)
    script = SCRIPT.read_text()
    for name in entries:
        assert name in script
        assert (store / name / "report.sqlite").exists() and not (store / name / "report.nsys-rep").exists()


@pytest.mark.parametrize("name", SERVED + MOCKS)
def test_each_capture_equals_nsys_stats_of_itself(store, name):
    entry = store / name
    r = run_align("kernels", str(entry), "--format", "csv")
    assert r.returncode == 0, r.stderr
    _compare_kernel_csv(r.stdout, (entry / "oracle_cuda_gpu_kern_sum.csv").read_text())
    oracle = (entry / "oracle_nvtx_gpu_proj_sum.csv").read_text()
    wide = run_align("nvtx", str(entry), "--wide", "--format", "csv")
    if oracle:
        assert wide.returncode == 0 and wide.stdout == oracle
    else:  # nsys stats: "does not contain NV Tools Extension (NVTX) data"; align says so in one line
        assert "does not contain NV Tools Extension (NVTX) data" in (entry / "stats.log").read_text()
        assert wide.returncode == 2 and "has no NVTX data" in wide.stderr and "Traceback" not in wide.stderr


@pytest.mark.parametrize("name", SERVED)
def test_a_served_capture_is_the_seeds_system_wide_window_with_every_request_answered(store, name):
    meta = _meta(store, name)
    told = meta["nsys_command"]
    for flag, value in (("--sample", "system-wide"), ("--cpuctxsw", "system-wide"), ("--delay", "30"),
                        ("--duration", "20")):
        assert told[told.index(flag) + 1] == value
    assert meta["serve"] and meta["status"] == "ok" and "transformers.cli.transformers serve" in meta["command_line"]
    spec, load = meta["load_spec"], meta["load"]
    assert load["sent"] == spec["requests"] == load["answered"] and load["errors"] == 0
    assert spec["model"] in meta["command_line"]  # the load asked for the model the server is pinned to
    assert ("--continuous-batching" in meta["command_line"]) == name.endswith("_cb")


@pytest.mark.parametrize("name", SERVED)
def test_the_servers_process_holds_all_the_gpu_work_and_no_nvtx_of_its_own(store, name):
    """One process (the server) launched every kernel; the only NVTX in it is CCCL's own (cub's
    DeviceScan ranges, from torch's scans), in plain mode; none at all under continuous batching."""
    r = run_align("processes", str(store / name), "-f", "json")
    procs = [p for p in json.loads(r.stdout) if p["kernels"]]
    oracle = pd.read_csv(store / name / "oracle_cuda_gpu_kern_sum.csv")
    assert len(procs) == 1 and procs[0]["kernels"] == int(oracle["Instances"].sum())
    assert procs[0]["name"].endswith("python3")
    with align.load(store / name) as p:
        nvtx = p.nvtx(marks=False) if p.has_nvtx else pd.DataFrame(columns=["domain", "text"])
    assert set(nvtx["domain"]) <= {"CCCL"} and set(nvtx["text"]) <= {"cub::DeviceScan::InclusiveScan"}
    assert (len(nvtx) > 0) == (name == "hf_serve_llama")


def test_forwards_are_cut_from_the_kernel_stream_where_no_range_holds_the_op(store):
    """Plain mode: every request is prefilled alone, then decoded one token per step; each call of
    attention is one SDPA kernel, so the calls are requests x layers, and requests x (output - 1) x
    layers decode calls, as the load and the model make them."""
    spec, layers = _meta(store, "hf_serve_llama")["load_spec"], _layers()
    with align.load(store / "hf_serve_llama") as p:
        view = OpView(p)
        items = view.op_items("attention")
    assert (items["method"].astype(str) == "name").all() and (items["op_range"] < 0).all()
    per = items.groupby("forward").agg(n=("code", "size"), family=("family", "first"))
    assert (per["n"] == 1).all()
    calls = per["family"].astype(str).value_counts()
    assert sorted(calls.tolist()) == sorted([spec["requests"] * layers, spec["requests"] * (spec["output_tokens"] - 1) * layers])


def test_the_mock_of_one_request_passes_on_the_ops_own_kernels_and_says_so(store):
    r, v = _verdict(store, "hf_serve_llama_mock", "hf_serve_llama")
    assert r.returncode == 0 and v["passed"], r.stderr
    assert v["headline"].startswith("ONLY THE OP'S OWN KERNELS COMPARED") and "no NVTX range" in v["headline"]
    spec, layers = _meta(store, "hf_serve_llama")["load_spec"], _layers()
    paired = {p["key"]: p["e2e_forwards"] for p in v["pairing"] if p["key"]}
    assert paired == {"context": spec["requests"] * layers,
                      "generation": spec["requests"] * (spec["output_tokens"] - 1) * layers}
    compiled = next(c for c in v["checks"] if c["name"] == "compiled")
    assert "cut from the kernel stream" in compiled["reason"]
    (proc,) = v["e2e_processes"]
    assert proc["forwards"] == sum(paired.values()) and "transformers.cli.transformers serve" in proc["served_command"]
    screen = run_align("verdict", "--op", "attention", "--mock", str(store / "hf_serve_llama_mock"), "--e2e",
                       str(store / "hf_serve_llama"), "--no-record")
    assert f"E2E process: pid {proc['pid']} python3" in screen.stdout


def test_the_mock_of_four_requests_fails_on_the_batch(store):
    """The server ran one request at a time; a mock of four is the wrong size, and the cause says so."""
    r, v = _verdict(store, "hf_serve_llama_mock_b4", "hf_serve_llama")
    assert r.returncode == 1 and not v["passed"]
    assert v["causes"][0]["kind"] == "batch" and "mock batch 4 vs E2E 1" in v["causes"][0]["says"]
    # no context kernel of both sides has a comparable grid: nothing says the prompt differs
    assert [c["kind"] for c in v["causes"]] == ["batch"]
    assert not next(c for c in v["checks"] if c["name"] == "shapes")["passed"]


def test_continuous_batching_steps_are_never_compared_as_pure_phases(store):
    r, v = _verdict(store, "hf_serve_llama_mock", "hf_serve_llama_cb")
    assert r.returncode == 2 and v is None and "Traceback" not in r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "batches continuously" in line and "'--continuous-batching'" in line
    assert "never compared as pure context or generation" in line and "--mock-phase" in line


def test_a_mock_mapped_to_mixed_meets_the_mixed_steps_and_fails_on_latency(store):
    """The user may call a mock's iterations mixed: they then meet the server's steps, as mixed."""
    r, v = _verdict(store, "hf_serve_llama_mock_b4", "hf_serve_llama_cb", "--mock-phase", "^mock_context$=mixed")
    assert r.returncode == 1 and not v["passed"], r.stderr
    (mixed,) = [p for p in v["pairing"] if p["key"]]
    assert mixed["key"] == "mixed" and mixed["evidence"] == "server batching"
    latency = next(c for c in v["checks"] if c["name"] == "latency")
    assert not latency["passed"] and "mixed" in latency["reason"]


def test_deepseek_v32_answers_in_plain_mode_and_is_refused_by_the_paged_cache(store):
    plain = (store / "probe_dsa_transformers.log").read_text()
    cb = (store / "probe_dsa_transformers-cb.log").read_text()
    answer = json.loads(plain.split("--- answer: ", 1)[1].splitlines()[0])
    assert answer["object"] == "text_completion" and answer["usage"]["completion_tokens"] == 4
    assert "ValueError: Invalid layer type: indexed_attention" in cb and "--- answer: {" not in cb


def test_the_report_leads_with_what_the_comparison_rests_on_and_names_the_server(store, tmp_path):
    html = tmp_path / "r.html"
    r = run_align("report", str(store / "hf_serve_llama_mock"), str(store / "hf_serve_llama"), "--op", "attention",
                  "-o", str(html))
    assert r.returncode == 0, r.stderr
    page = html.read_text()
    assert "ONLY THE OP&#x27;S OWN KERNELS COMPARED" in page or "ONLY THE OP'S OWN KERNELS COMPARED" in page
    assert "E2E process: pid" in page and "transformers.cli.transformers serve" in page

