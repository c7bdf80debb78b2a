"""DSA top-k decode traces: writer sharding/order/crash safety, summary, indexer hook, prefix analysis, runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from align.trace.topk import (  # noqa: E402
    PrefixIndex,
    TopkTraceConfig,
    TopkTracer,
    TopkTraceWriter,
    build_record,
    load_meta,
    load_requests,
    load_summary,
    load_trace,
    prefix_overlap,
    read_jsonl,
    recompute_summary,
    shard_name,
)
from align.trace.workload import WorkloadSpec, make_requests, plan_batches, run_workload  # noqa: E402
from align_mock.config import DSAConfig  # noqa: E402
from align_mock.dsa import Indexer  # noqa: E402
from align_mock.model import DecodeLoop, Transformer  # noqa: E402


def shard_lines(directory: Path) -> dict[int, list[dict]]:
    out = {}
    for path in sorted(directory.glob("topk_shard_*.jsonl")):
        recs, torn = read_jsonl(path)
        assert torn == 0
        out[int(path.stem.rsplit("_", 1)[1])] = recs
    return out


def test_config_explicit_beats_env_beats_default(tmp_path):
    env = {"ALIGN_TOPK_TRACE_DIR": str(tmp_path), "ALIGN_TOPK_TRACE_BLOCK_SIZE": "16",
           "ALIGN_TOPK_TRACE_SHARD_SIZE": "3", "ALIGN_TOPK_TRACE_LAYERS": "2, 0", "ALIGN_TOPK_TRACE_SCORES": "yes"}
    cfg = TopkTraceConfig.from_env(env, block_size=32)
    assert (cfg.out_dir, cfg.enabled, cfg.block_size, cfg.shard_size) == (tmp_path, True, 32, 3)
    assert cfg.layers == (0, 2) and cfg.record_scores and cfg.sample_every == 1
    assert not TopkTraceConfig.from_env({}).enabled  # no folder, no tracing
    assert not TopkTraceConfig.from_env({**env, "ALIGN_TOPK_TRACE": "0"}).enabled
    with pytest.raises(ValueError, match="ALIGN_TOPK_TRACE_EVERY"):
        TopkTraceConfig.from_env({"ALIGN_TOPK_TRACE_EVERY": "often"})
    with pytest.raises(ValueError, match="block_size"):
        TopkTraceConfig(block_size=0)


def test_build_record_blocks_and_offsets():
    rec = build_record(7, 1, 3, 200, [130, 5, 64, 63, 0, 66], block_size=64, scores=[6, 5, 4, 3, 2, 1], t_ns=1)
    assert rec["topk"] == [0, 5, 63, 64, 66, 130]
    assert rec["scores"] == [2.0, 5.0, 3.0, 4.0, 1.0, 6.0]  # follow their positions
    assert rec["blocks"] == [0, 1, 2] and rec["tokens_per_block"] == [3, 2, 1] and rec["n_blocks"] == 3
    assert rec["offset_hist"] == [5, 0, 0, 1]  # offsets 0, 5, 63, 0, 2, 2 in quarters of 64
    assert rec["offset_mean"] == pytest.approx((0 + 5 + 63 + 0 + 2 + 2) / 6)


def test_concurrent_producers_shard_by_request_in_order(tmp_path):
    cfg = TopkTraceConfig(out_dir=tmp_path, shard_size=3, summary_interval_s=0.0)
    writer = TopkTraceWriter(cfg)
    n_threads, steps, layers = 4, 25, 3
    produced: dict[int, list[tuple[int, int]]] = {}

    def produce(t: int) -> None:
        mine = list(range(t, 16, n_threads))  # interleaved requests, shards shared between threads
        for step in range(steps):
            for rid in mine:
                for layer in range(layers):
                    assert writer.record(rid, layer, step, 100 + step, [step, rid, 40 + layer])
                    produced.setdefault(rid, []).append((step, layer))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    final = writer.close()
    assert final["writer"]["dropped"] == 0 and final["writer"]["errors"] == 0
    assert final["writer"]["written"] == final["writer"]["enqueued"] == 16 * steps * layers

    shards = shard_lines(tmp_path)
    assert sorted(shards) == [0, 1, 2, 3, 4, 5]
    seen: dict[int, list[tuple[int, int]]] = {}
    for shard, recs in shards.items():
        assert {r["request_id"] // 3 for r in recs} == {shard}  # only its requests
        for r in recs:
            seen.setdefault(r["request_id"], []).append((r["step"], r["layer"]))
    assert seen == produced  # every record, each request in production order
    df = load_trace(tmp_path)
    assert load_summary(tmp_path)["stats"] == recompute_summary(df)
    assert load_meta(tmp_path)["shard_size"] == 3


CRASH_CHILD = textwrap.dedent("""
    import sys
    from align.trace.topk import TopkTraceConfig, TopkTraceWriter
    w = TopkTraceWriter(TopkTraceConfig(out_dir=sys.argv[1], shard_size=2, summary_interval_s=0.01,
                                        record_scores=True, queue_size=256))
    step = 0
    while True:
        for rid in range(8):
            w.record(rid, step % 4, step, 4096 + step, range(rid, 4096 + rid, 2), scores=[0.5] * 2048)
        step += 1
""")


def test_sigkill_mid_stream_leaves_valid_jsonl(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CRASH_CHILD, str(tmp_path)])
    try:
        deadline = time.monotonic() + 20
        while sum(p.stat().st_size for p in tmp_path.glob("topk_shard_*.jsonl")) < 3 << 20:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    complete = torn = 0
    for path in tmp_path.glob("topk_shard_*.jsonl"):
        body, _, tail = path.read_bytes().rpartition(b"\n")
        lines = body.split(b"\n") if body else []
        for line in lines:  # every newline-terminated line is a whole record
            assert json.loads(line)["n_selected"] == 2048
        complete += len(lines)
        torn += bool(tail)  # at most a piece of the line a write was cut in
    df = load_trace(tmp_path)
    assert len(df) == complete > 0 and df.attrs["torn_lines"] == torn
    json.loads((tmp_path / "summary.json").read_text())  # atomic: always a whole file
    assert load_meta(tmp_path)["schema"] == "align.topk_trace/1"


def test_reopened_shard_cuts_a_torn_line(tmp_path):
    path = tmp_path / shard_name(0)
    path.write_bytes(b'{"request_id":0,"layer":0}\n{"request_id":0,"la')
    assert read_jsonl(path) == ([{"request_id": 0, "layer": 0}], 1)
    with TopkTraceWriter(TopkTraceConfig(out_dir=tmp_path)) as writer:
        writer.record(1, 0, 0, 10, [1, 2])
    recs, torn = read_jsonl(path)
    assert torn == 0 and [r["request_id"] for r in recs] == [0, 1]


def test_full_queue_drops_and_counts_without_blocking(tmp_path):
    writer = TopkTraceWriter(TopkTraceConfig(out_dir=tmp_path, queue_size=8), autostart=False)
    start = time.perf_counter()
    accepted = [writer.record(i % 3, 0, i, i, [0]) for i in range(5000)]
    assert time.perf_counter() - start < 2.0  # a blocking put would hang here: nothing consumes yet
    assert sum(accepted) == 8 and writer.dropped == 4992
    final = writer.close()
    assert final["writer"]["written"] == 8 and final["writer"]["dropped"] == 4992
    assert sum(final["writer"]["dropped_by_request"].values()) == 4992
    assert len(load_trace(tmp_path)) == 8
    assert not writer.record(0, 0, 0, 0, [0])  # closed: refused, counted
    assert writer.dropped == 4993


def test_a_bad_item_is_counted_and_the_trace_goes_on(tmp_path):
    with TopkTraceWriter(TopkTraceConfig(out_dir=tmp_path)) as writer:
        writer.record(0, 0, 0, 5, [1, 2])
        writer.record(0, 0, 1, 6, ["not", "a", "position"])
        writer.add_request(0, prompt_len=float("nan"))  # not JSON
        writer.record(0, 0, 2, 7, [3])
    final = load_summary(tmp_path)
    assert final["writer"]["errors"] == 2 and final["writer"]["written"] == 2
    assert list(load_trace(tmp_path)["step"]) == [0, 2] and load_requests(tmp_path).empty

def small_model(n_layers=2, device="cpu"):
    torch.manual_seed(0)
    return Transformer(DSAConfig.small(), n_layers, device=device).eval()


ON_DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                   reason="needs a GPU"))]


@pytest.mark.parametrize("device", ON_DEVICES)
def test_records_equal_the_indices_the_indexer_returned(tmp_path, device):
    model = small_model(device=device)
    used: list[tuple[int, int, torch.Tensor]] = []
    handles = []
    for layer in model.layers:
        def grab(module, args, out, layer_idx=layer.layer_idx):
            if out.shape[1] == 1:  # decode only
                used.append((layer_idx, int(args[2].reshape(-1)[0]), out.clone()))
        handles.append(layer.self_attn.indexer.register_forward_hook(grab))
    tracer = TopkTracer(TopkTraceConfig(out_dir=tmp_path, record_scores=True, block_size=4))
    prompt, steps = 5, 6  # 5 + 6 < top-k 8 at first: masked entries appear and are dropped
    tokens = torch.randint(0, 256, (2, prompt), device=device)
    with tracer.attach(model), torch.no_grad():
        assert model.layers[1].self_attn.indexer.layer_idx == 1
        model.setup_caches(2, prompt + steps)
        tracer.begin_batch([10, 3], prompt, [steps, 4])
        loop = DecodeLoop(model, model.prefill(tokens).argmax(-1, keepdim=True), prompt, use_cuda_graph=False)
        for _ in range(steps):
            loop.step()
    for h in handles:
        h.remove()
    tracer.close()
    assert all(layer.self_attn.indexer.trace_hook is None for layer in model.layers)  # detached
    assert Indexer.trace_hook is None and model.layers[0].self_attn.indexer.layer_idx is None

    df = load_trace(tmp_path).set_index(["request_id", "layer", "step"])
    assert len(used) == 2 * steps and len(df) == 2 * (steps + 4)
    for layer, pos, out in used:
        for row, (rid, n) in enumerate([(10, steps), (3, 4)]):
            if pos - prompt >= n:
                assert (rid, layer, pos - prompt) not in df.index
                continue
            rec = df.loc[(rid, layer, pos - prompt)]
            expected = sorted(int(i) for i in out[row, 0] if i <= pos)
            assert rec["topk"] == expected and rec["position"] == pos
            assert rec["n_masked"] == out.shape[-1] - len(expected)
            assert all(s is not None for s in rec["scores"])
            assert rec["blocks"] == sorted({i // 4 for i in expected})
    assert (df.loc[(10, 0, 0)]["n_masked"]) == 8 - (prompt + 1)


def test_tracer_sampling_layers_and_limit(tmp_path):
    cfg = TopkTraceConfig(out_dir=tmp_path, sample_every=2, layers=(1,), max_records=3)
    tracer = TopkTracer(cfg)
    idx = torch.tensor([[[0, 1]], [[1, 2]]])
    scores = torch.zeros(2, 1, 3)
    tracer(1, torch.tensor([2]), idx, scores)  # no batch: ignored
    tracer.begin_batch([5, 6], 2, 10)
    for pos in range(2, 8):
        for layer in (0, 1):
            tracer(layer, torch.tensor([pos]), idx, scores)
    final = tracer.close()
    df = load_trace(tmp_path)
    assert list(zip(df["request_id"], df["step"])) == [(5, 0), (6, 0), (5, 2)]
    assert set(df["layer"]) == {1} and "scores" in df and df["scores"].isna().all()
    assert final["writer"]["notes"] == {"skipped_max_records": 3}


def test_prefix_overlap_hand_built():
    recs = [build_record(0, 0, 0, 20, [1, 9, 17], 4),        # request 0: no shared prefix
            build_record(1, 0, 0, 20, [0, 1, 10, 13], 4),    # blocks 0, 2, 3
            build_record(1, 0, 1, 21, [5, 6, 7, 20], 4),     # blocks 1, 5
            build_record(1, 1, 0, 20, [2, 3], 4)]            # block 0
    df = pd.DataFrame(recs)
    out = prefix_overlap(df, {1: 10}, block_size=4).set_index("request_id")  # 10 tokens -> blocks 0, 1
    r1 = out.loc[1]
    assert (r1["shared_blocks"], r1["touched_blocks"], r1["touched_shared"]) == (2, 5, 2)
    assert r1["frac_touched_shared"] == pytest.approx(2 / 5) and r1["frac_shared_read"] == 1.0
    assert r1["mean_frac_blocks_shared"] == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)
    assert r1["mean_frac_tokens_shared"] == pytest.approx((2 / 4 + 3 / 4 + 1) / 3)
    r0 = out.loc[0]
    assert r0["shared_blocks"] == 0 and r0["frac_touched_shared"] == 0 and pd.isna(r0["frac_shared_read"])
    by_layer = prefix_overlap(df, {1: 10}, 4, by_layer=True).set_index(["request_id", "layer"])
    assert by_layer.loc[(1, 1), "touched_blocks"] == 1 and by_layer.loc[(1, 1), "frac_touched_shared"] == 1.0

    index = PrefixIndex(block_size=4)
    assert index.add(list(range(10))) == 0
    assert index.add(list(range(9)) + [99, 5]) == 2  # 9 shared tokens: two complete blocks
    assert index.add([1] + list(range(1, 12))) == 0  # same later blocks, different first: nothing shared


def test_workload_mix_is_seeded_and_capped():
    spec = WorkloadSpec(requests=200, seed=3)
    reqs = make_requests(spec, vocab_size=256, max_len=512, block_size=64)
    again = make_requests(spec, vocab_size=256, max_len=512, block_size=64)
    assert [(r.prompt_len, r.output_len, r.prefix_len) for r in reqs] == [
        (r.prompt_len, r.output_len, r.prefix_len) for r in again]
    assert all(r.prompt_len + r.output_len <= 512 and r.output_len <= 128 for r in reqs)
    assert 0.1 < sum(r.kind == "long" for r in reqs) / 200 < 0.3
    shared = [r for r in reqs if r.prefix_source is not None]
    assert 0.15 < len(shared) / 200 < 0.45
    for r in shared:
        assert (r.tokens[:r.prefix_len] == reqs[r.prefix_source].tokens[:r.prefix_len]).all()
        assert r.shared_prefix_tokens >= r.prefix_len // 64 * 64
    batches = plan_batches(make_requests(WorkloadSpec(requests=20, length_quantum=128), 256, 512, 64), 3)
    assert all(len({r.prompt_len for r in b}) == 1 and len(b) <= 3 for b in batches)
    assert any(len(b) > 1 for b in batches)


@pytest.mark.parametrize("device", ON_DEVICES)
def test_workload_runner_end_to_end(tmp_path, device):
    from typer.testing import CliRunner

    from align.cli.main import app

    spec = WorkloadSpec(requests=6, seed=1, length_scale=0.15, length_quantum=16, prefix_probability=0.6)
    result = run_workload(tmp_path / "t", spec, n_layers=2, batch_size=2, block_size=8, shard_size=2,
                          device=device)
    out = result.out_dir
    df = load_trace(out)
    assert load_summary(out)["stats"] == recompute_summary(df)
    assert load_summary(out)["writer"]["dropped"] == 0
    for shard, recs in shard_lines(out).items():
        assert {r["request_id"] // 2 for r in recs} == {shard}
    reqs = load_requests(out).set_index("request_id")
    for r in result.requests:
        mine = df[df["request_id"] == r.request_id]
        assert len(mine) == 2 * r.output_len  # every decode step of both layers
        assert sorted(set(mine["step"])) == list(range(r.output_len))
        assert (mine["position"] == r.prompt_len + mine["step"]).all()
        assert all(t <= p for tk, p in zip(mine["topk"], mine["position"]) for t in tk)
        assert reqs.loc[r.request_id, "shared_prefix_tokens"] == r.shared_prefix_tokens
    meta = load_meta(out)
    assert meta["model"]["device"] == device
    assert meta["model"]["index_topk"] == 8 and meta["block_size"] == 8 and meta["workload"]["requests"] == 6

    cli = CliRunner().invoke(app, ["trace", "topk", "summary", str(out), "--format", "json"])
    assert cli.exit_code == 0, cli.output
    tables = json.loads(cli.output)
    assert tables["overall"][0]["records"] == len(df)
    assert {row["request_id"] for row in tables["requests"]} == set(range(6))
    assert [row["layer"] for row in tables["layers"]] == [0, 1]
    cli = CliRunner().invoke(app, ["trace", "topk", "run", "--out", str(out), "--requests", "1"])
    assert cli.exit_code != 0  # never appends to an existing trace


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without CUDA")
def test_cli_cuda_without_a_gpu_is_bad_input(tmp_path):
    from .conftest import run_align

    r = run_align("trace", "topk", "run", "--out", str(tmp_path / "t"), "--device", "cuda")
    assert r.returncode == 2 and "no CUDA GPU" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "t").exists()
