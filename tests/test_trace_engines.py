"""align trace topk on an engine we did not write: transformers' own DeepSeek-V3.2 (DeepseekV32Indexer),
attached through forward hooks described as data (align/data/topk_hooks.toml), under its own
generate(). A small random model on the CPU with top-k 16 over contexts of 40+ tokens: the trace
shows real sparsity, and every record is the indices the indexer returned."""

from __future__ import annotations

import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "DeepseekV32Config"):
    pytest.skip("transformers >= 5.23 has DeepSeek-V3.2", allow_module_level=True)

from align.errors import AlignError  # noqa: E402
from align.trace.topk import TopkTraceConfig, TopkTracer, load_summary, load_trace  # noqa: E402
from align.trace.topk.engines import attach_engine, load_hooks  # noqa: E402

from .conftest import ROOT  # noqa: E402

sys.path.insert(0, str(ROOT / "mock" / "examples"))
import hf_models  # noqa: E402


def committed_trace(base, tmp_path):
    """A committed GPU trace unpacked: (folder, records, run_meta); its summary is checked to equal the
    recomputation from its shards on the way."""
    import json
    import tarfile

    from align.trace.topk import load_summary, recompute_summary

    with tarfile.open(base / "topk_trace.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    out = tmp_path / "topk"
    df = load_trace(out)
    assert load_summary(out)["stats"] == recompute_summary(df)
    return out, df, json.loads((out / "run_meta.json").read_text())


def small_dsa(layers: int = 2):
    torch.manual_seed(0)
    config = hf_models.make_config("dsa", layers, small=True)
    return hf_models.causal_lm("dsa", config).eval(), config


def test_records_are_the_indices_transformers_returned_and_sparse(tmp_path):
    model, config = small_dsa()
    topk = config.index_topk
    used = []

    def grab(module, args, out):
        if args[0].shape[1] == 1:  # decode calls, recorded independently of the tracer
            used.append((module.layer_idx, int(args[4][0, -1]), out.clone()))

    grabs = [m.register_forward_hook(grab) for m in model.modules() if type(m).__name__ == "DeepseekV32Indexer"]
    prompt, new = 40, 6  # 40 visible tokens and more, top-k 16: a sparse selection from the first step
    tokens = torch.randint(3, config.vocab_size, (2, prompt))
    tracer = TopkTracer(TopkTraceConfig(out_dir=tmp_path, block_size=8))
    with attach_engine(tracer, model) as hook, torch.no_grad():
        assert hook.name == "transformers.deepseek_v32"
        tracer.begin_batch([7, 9], prompt, new - 1)  # generate's first token comes from the prefill
        model.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=new, min_new_tokens=new,
                       do_sample=False, pad_token_id=0, eos_token_id=None)
    for g in grabs:
        g.remove()
    tracer.close()
    n_indexers = sum(type(m).__name__ == "DeepseekV32Indexer" for m in model.modules())
    assert n_indexers == 2 and all(not m._forward_hooks for m in model.modules()
                                   if type(m).__name__ == "DeepseekV32Indexer")  # detached

    df = load_trace(tmp_path).set_index(["request_id", "layer", "step"])
    assert len(used) == 2 * (new - 1) and len(df) == 2 * 2 * (new - 1)
    for layer, pos, out in used:
        for row, rid in enumerate((7, 9)):
            rec = df.loc[(rid, layer, pos - prompt)]
            assert rec["position"] == pos and rec["topk"] == sorted(int(i) for i in out[row, 0])
            assert rec["n_selected"] == topk < pos + 1  # sparse: 16 of 41+ visible tokens
            assert rec["blocks"] == sorted({int(i) // 8 for i in out[row, 0]})


def test_hook_entries_are_data(tmp_path):
    hooks = load_hooks()
    assert {"transformers.deepseek_v32", "transformers.glm_moe_dsa"} <= set(hooks)
    assert all(h.source for h in hooks.values())
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(AlignError, match="no DSA indexer module of a known engine"):
        with attach_engine(TopkTracer(TopkTraceConfig(out_dir=tmp_path)), model):
            pass


def test_a_user_entry_adds_an_engine(tmp_path):
    f = tmp_path / "hooks.toml"
    f.write_text('[[engines]]\nname = "mine"\nclass = "torch.nn.modules.linear.Linear"\noutput = "indices"\n'
                 'layer_attr = "layer_idx"\nquery_arg = 0\nposition_arg = 1\nindices_are = "positions"\n'
                 'source = "a test"\n')
    assert load_hooks(str(f))["mine"].matches(torch.nn.Linear(1, 1))
    f.write_text('[[engines]]\nname = "bad"\n')
    with pytest.raises(AlignError, match="engine 'bad' in top-k hooks file .* lacks class"):
        load_hooks(str(f))


def _three_decode_steps(model, engine: str, out):
    """One request of 40 random tokens through generate() with the tracer attached by ``engine``'s
    entry: its first token from the prefill, then three decode steps recorded; the records."""
    tracer = TopkTracer(TopkTraceConfig(out_dir=out))
    tokens = torch.randint(3, 1000, (1, 40))
    with attach_engine(tracer, model) as hook, torch.no_grad():
        assert hook.name == engine
        tracer.begin_batch([1], 40, 3)
        model.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=4, min_new_tokens=4,
                       do_sample=False, pad_token_id=0, eos_token_id=None)
    tracer.close()
    return load_trace(out)


def test_glm5_indexer_is_the_same_entry_shape(tmp_path):
    """GLM-5's DSA (transformers' glm_moe_dsa, a small random model): its own entry attaches and
    records one decode step per layer and step, top-k 16 of 41+ visible tokens."""
    from transformers import AutoModelForCausalLM, GlmMoeDsaConfig

    cfg = GlmMoeDsaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, moe_intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=4,
                          num_experts_per_tok=2, n_group=1, topk_group=1, kv_lora_rank=32, q_lora_rank=64,
                          qk_rope_head_dim=16, v_head_dim=32, qk_nope_head_dim=32, index_topk=16, index_head_dim=32,
                          index_n_heads=4, first_k_dense_replace=2, max_position_embeddings=512)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    df = _three_decode_steps(model, "transformers.glm_moe_dsa", tmp_path)
    assert sorted(zip(df["layer"], df["step"])) == [(layer, s) for layer in (0, 1) for s in range(3)]
    assert (df["n_selected"] == 16).all() and (df["position"] == 40 + df["step"]).all()


def test_cli_runs_the_workload_on_transformers_own_model(tmp_path):
    """align trace topk run --engine transformers: the seeded workload under transformers' generate();
    one record per request, layer and decode step; the summary equals its recomputation from the
    shards; run_meta.json says which engine ran and that the blocks are logical."""
    import json

    from align.trace.topk import load_requests, load_summary, recompute_summary

    from .conftest import run_align

    out = tmp_path / "t"
    r = run_align("trace", "topk", "run", "--engine", "transformers", "--out", str(out), "--requests", "5",
                  "--length-scale", "0.2", "-f", "json")
    assert r.returncode == 0, r.stderr
    df = load_trace(out)
    reqs = load_requests(out)
    meta = json.loads((out / "run_meta.json").read_text())
    assert meta["model"]["engine"] == "transformers" and meta["model"]["class"] == "DeepseekV32ForCausalLM"
    assert meta["blocks"].startswith("logical")
    layers = meta["model"]["layers_built"]
    assert len(df) == layers * int(reqs["output_len"].sum()) == json.loads(r.stdout)["records"]
    assert load_summary(out)["stats"] == recompute_summary(df)
    assert (df["position"] == df["request_id"].map(reqs.set_index("request_id")["prompt_len"]) + df["step"]).all()
    assert (df["n_selected"] <= meta["model"]["index_topk"]).all()
    bad = run_align("trace", "topk", "run", "--engine", "vllm", "--out", str(tmp_path / "u"))
    assert bad.returncode == 2 and "unknown engine 'vllm'" in bad.stderr


def test_the_committed_h200_trace_of_transformers_shows_sparsity(tmp_path):
    """profiles/examples/trace_hf (capture.sh on the H200): transformers' own DeepSeek-V3.2, V3.2's dims,
    top-2048, under generate(). It loads back, its summary equals the recomputation from the shards,
    and every decode step past position 2047 selects 2048 of its visible tokens, a share below 1."""
    import json

    base = ROOT / "profiles" / "examples" / "trace_hf"
    out, df, meta = committed_trace(base, tmp_path)
    assert meta["model"]["engine"] == "transformers" and meta["model"]["index_topk"] == 2048
    assert meta["model"]["device"] == "cuda" and meta["model"]["dtype"] == "torch.bfloat16"
    assert json.loads((base / "summary.json").read_text()) == load_summary(out)
    visible = df["position"] + 1
    sparse = df[visible > 2048]
    assert len(sparse) > 100 and (sparse["n_selected"] == 2048).all()
    assert (df.loc[visible <= 2048, "n_selected"] == visible[visible <= 2048]).all()  # all visible, below top-k
    assert (sparse["n_selected"] / (sparse["position"] + 1)).min() < 0.7


def test_seed_field_names_round_trip(tmp_path, monkeypatch):
    """--schema seed writes seed 003's names (request_id / step_idx / layer_id / selected_token_pos,
    logical_block_id, token_pos); run_meta.json maps them; load_trace reads them back as align's,
    equal to the same seeded run written with align's names."""
    import json

    from align.trace.topk import load_summary, recompute_summary

    from .conftest import run_align

    runs = {}
    for names in ("align", "seed"):
        out = tmp_path / names
        r = run_align("trace", "topk", "run", "--out", str(out), "--requests", "4", "--length-scale", "0.1",
                      "--schema", names, "-f", "json")
        assert r.returncode == 0, r.stderr
        runs[names] = out
    line = json.loads((runs["seed"] / "topk_shard_00000.jsonl").read_text().splitlines()[0])
    assert {"request_id", "step_idx", "layer_id", "selected_token_pos", "logical_block_id", "token_pos"} <= set(line)
    assert not {"layer", "step", "topk", "blocks", "position"} & set(line)
    meta = json.loads((runs["seed"] / "run_meta.json").read_text())
    assert meta["record_names"]["topk"] == "selected_token_pos" and meta["config"]["names"] == "seed"
    a, b = (load_trace(runs[n]).drop(columns=["t_ns", "write_ns", "step_ns"]) for n in ("align", "seed"))
    import pandas as pd

    pd.testing.assert_frame_equal(a, b)  # the same records; only wall times differ between runs
    assert load_summary(runs["seed"])["stats"] == recompute_summary(load_trace(runs["seed"]))
    monkeypatch.setenv("ALIGN_TOPK_TRACE_NAMES", "seed")
    assert TopkTraceConfig.from_env(out_dir=tmp_path).names == "seed"
    bad = run_align("trace", "topk", "run", "--out", str(tmp_path / "x"), "--schema", "nope")
    assert bad.returncode == 2 and "unknown --schema 'nope'" in bad.stderr


def test_each_decode_step_carries_its_wall_time(tmp_path):
    """step_ns (the seed's C latency placeholder): a layer's time from its call at the previous position
    of the same batch; on the CPU the host clock, so it is the difference of consecutive t_ns."""
    model, config = small_dsa()
    tracer = TopkTracer(TopkTraceConfig(out_dir=tmp_path))
    tokens = torch.randint(3, config.vocab_size, (2, 24))
    with attach_engine(tracer, model), torch.no_grad():
        tracer.begin_batch([1, 2], 24, 4)
        model.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=5, min_new_tokens=5,
                       do_sample=False, pad_token_id=0, eos_token_id=None)
    tracer.close()
    df = load_trace(tmp_path).sort_values(["request_id", "layer", "step"])
    assert df.loc[df["step"] == 0, "step_ns"].isna().all()
    later = df[df["step"] > 0]
    assert (later["step_ns"] > 0).all()
    for (_, _), g in df.groupby(["request_id", "layer"]):
        t = g["t_ns"].to_numpy()
        assert (g["step_ns"].to_numpy()[1:] == t[1:] - t[:-1]).all()


def test_the_committed_long_context_h200_trace(tmp_path):
    """profiles/examples/trace_hf_long (capture.sh on the H200): RULER-shaped requests at contexts up
    to 8k, four times the top-k: steps near 8k select a quarter of the visible tokens; every step after
    a batch's first carries its GPU wall time (CUDA events); the summary equals the recomputation."""
    from align.trace.topk import load_requests

    out, df, meta = committed_trace(ROOT / "profiles" / "examples" / "trace_hf_long", tmp_path)
    assert meta["workload"]["dataset"] == "ruler" and meta["model"]["engine"] == "transformers"
    assert set(load_requests(out)["kind"]) == {"ruler"}
    assert df["position"].max() >= 8000 and (df["n_selected"] <= 2048).all()
    share = df["n_selected"] / (df["position"] + 1)
    assert share.min() <= 0.26
    assert df.loc[df["step"] == 0, "step_ns"].isna().all() and (df.loc[df["step"] > 0, "step_ns"] > 0).all()


def _greedy_tokens(engine: str, spec, batch_size: int, new: int) -> list[tuple[list[int], list[list[int]]]]:
    """The tokens each batch of a workload generates greedily (EOS ignored), built exactly as
    run_workload builds the model and requests: (request ids, per row the generated tokens)."""
    import numpy as np

    from align.trace.workload import _transformers_model, make_requests, plan_batches
    from align_mock.config import named_config
    from align_mock.model import DecodeLoop, Transformer

    torch.manual_seed(spec.seed)
    if engine == "transformers":
        model, hf_cfg = _transformers_model("small", None, "cpu", None)
        vocab = hf_cfg.vocab_size
    else:
        cfg = named_config("small")
        model, vocab = Transformer(cfg, None, "dsa", device="cpu").eval(), cfg.vocab_size
    out = []
    for batch in plan_batches(make_requests(spec, vocab, named_config("small").max_seq_len, 64), batch_size):
        tokens = torch.as_tensor(np.stack([r.tokens for r in batch]), dtype=torch.long)
        with torch.no_grad():
            if engine == "transformers":
                gen = model.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=new,
                                     min_new_tokens=new, do_sample=False, pad_token_id=0, eos_token_id=None)
                rows = gen[:, tokens.shape[1]:].tolist()
            else:
                model.setup_caches(len(batch), tokens.shape[1] + new)
                first = model.prefill(tokens).argmax(-1, keepdim=True)
                loop = DecodeLoop(model, first, tokens.shape[1], use_cuda_graph=False)
                steps = [first[:, 0].tolist()]
                for _ in range(new - 1):
                    loop.step()
                    steps.append(loop.tokens[:, 0].tolist())
                rows = [list(r) for r in zip(*steps)]
        out.append(([r.request_id for r in batch], rows))
    return out


@pytest.mark.parametrize("engine", ["transformers", "mock"])
def test_generation_until_eos_stops_each_row_at_its_eos(tmp_path, engine):
    """--max-new-tokens N (seed 003's until-EOS generation): a row that emits EOS as its j-th generated
    token has exactly j decode steps recorded and finish "eos" in requests.jsonl, while the rest of its
    batch runs on to its own EOS or the cap. EOS is a token the greedy run really generates (found by
    running the same seeded workload without EOS first), so the stop is the engine's own."""
    from align.trace.topk import load_requests, load_summary, recompute_summary
    from align.trace.workload import WorkloadSpec, run_workload

    spec = WorkloadSpec(requests=4, seed=0, length_scale=0.1, length_quantum=8)
    new = 10
    batches = _greedy_tokens(engine, spec, 2, new)
    ids, rows = next((ids, rows) for ids, rows in batches if len(ids) == 2)
    eos = rows[0][4]
    first = {rid: (row.index(eos) if eos in row else None) for ids_, rows_ in batches for rid, row in zip(ids_, rows_)}
    assert first[ids[0]] <= 4
    run_workload(tmp_path / "t", spec, config="small", batch_size=2, engine=engine, max_new_tokens=new, eos_token=eos)
    reqs = load_requests(tmp_path / "t").set_index("request_id")
    df = load_trace(tmp_path / "t")
    layers = df["layer"].nunique()
    for rid, j in first.items():
        steps = new - 1 if j is None else j
        assert reqs.loc[rid, "finish"] == ("length" if j is None else "eos")
        assert reqs.loc[rid, "output_len"] == steps and reqs.loc[rid, "generated_tokens"] == steps + 1
        assert sorted(df.loc[df["request_id"] == rid, "step"]) == sorted(list(range(steps)) * layers)
    assert "eos" in set(reqs["finish"])
    assert load_summary(tmp_path / "t")["stats"] == recompute_summary(df)


def test_until_eos_or_the_model_length(tmp_path):
    """--max-new-tokens 0: until EOS or --max-seq-len (the seed's semantics): with an EOS never generated,
    each request fills prompt + generated tokens to the cap exactly."""
    import json

    from align.trace.topk import load_requests

    from .conftest import run_align

    out = tmp_path / "t"
    r = run_align("trace", "topk", "run", "--engine", "transformers", "--out", str(out), "--requests", "3",
                  "--length-scale", "0.2", "--max-new-tokens", "0", "--max-seq-len", "80", "--eos-token", "-1",
                  "-f", "json")
    assert r.returncode == 0, r.stderr
    reqs = load_requests(out)
    assert (reqs["prompt_len"] + reqs["generated_tokens"] == 80).all() and set(reqs["finish"]) == {"length"}
    meta = json.loads((out / "run_meta.json").read_text())
    assert meta["generation"] == {"until": "eos", "eos_token": -1, "max_new_tokens": 0, "cap": "max_seq_len 80",
                                  "prefill_chunk": None}
    for args, says in ((["--engine", "transformers", "--max-seq-len", "999999"], "beyond the model's"),
                       (["--engine", "mock", "--max-seq-len", "4096"], "beyond the mock model's"),
                       (["--engine", "mock", "--prefill-chunk", "64"], "prefill chunk is for the transformers")):
        bad = run_align("trace", "topk", "run", "--out", str(tmp_path / "bad"), *args)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr


def test_chunked_prefill_traces_the_same_decode(tmp_path):
    """--prefill-chunk (long prompts on a bounded device): all but the prompt's last token go through
    transformers' model in chunks of at most N tokens, in order, into the cache that generate() then
    continues with the last token alone; the decode records land at the same requests, layers, steps and
    positions as with one whole prefill. The selected tokens are not compared: in this small random
    model 16 of 174 prompt queries have the k-th and (k+1)-th index scores exactly equal (ReLU zeros
    over 4 index heads), and topk breaks such ties differently for other shapes."""
    from align.trace.workload import WorkloadSpec, run_workload

    spec = WorkloadSpec(requests=4, seed=1, length_scale=0.3)
    calls = []

    def spy(module, args, out):
        if type(module).__name__ == "DeepseekV32Indexer" and module.layer_idx == 0:
            calls.append((args[0].shape[1], int(args[4][0, 0])))  # query length, first position

    runs = {}
    for name, chunk in (("whole", None), ("chunked", 16)):
        calls.clear()
        handle = torch.nn.modules.module.register_module_forward_hook(spy)
        try:
            result = run_workload(tmp_path / name, spec, config="small", engine="transformers", prefill_chunk=chunk)
        finally:
            handle.remove()
        runs[name] = (load_trace(tmp_path / name).sort_values(["request_id", "layer", "step"]).reset_index(drop=True),
                      list(calls))
    keys = ["request_id", "layer", "step", "position", "n_selected"]
    (a, whole_calls), (b, chunked_calls) = runs["whole"], runs["chunked"]
    assert len(a) > 50 and a[keys].equals(b[keys])
    prompts = [r.prompt_len for r in result.requests]
    assert max(prompts) > 2 * 16
    assert [c for c in whole_calls if c[0] > 1] == [(p, 0) for p in prompts]  # one prefill call each
    starts = [i for i, c in enumerate(chunked_calls) if c[1] == 0] + [len(chunked_calls)]
    for p, lo, hi in zip(prompts, starts, starts[1:]):  # one batch per request here, in request order
        chunks = [(min(16, p - 1 - a_), a_) for a_ in range(0, p - 1, 16)] + [(1, p - 1)]
        steps = hi - lo - len(chunks)
        assert chunked_calls[lo:hi] == chunks + [(1, p + s_) for s_ in range(steps)] and steps > 0


def test_dots3_note_indexer_is_one_more_entry(tmp_path):
    """transformers' dots3_note (its DSA layers' Dots3NoteTextIndexer, interleaved RoPE) was added as
    one [[engines]] entry: a small random model records every layer and decode step, top-k 16 of 41+
    visible tokens, each the indices its indexer returned."""
    from transformers import Dots3NoteForCausalLM, Dots3NoteTextConfig

    cfg = Dots3NoteTextConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, moe_intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=4,
                              num_experts_per_tok=2, n_group=2, topk_group=1, n_shared_experts=1, kv_lora_rank=32,
                              q_lora_rank=64, qk_rope_head_dim=16, v_head_dim=32, qk_nope_head_dim=32, head_dim=48,
                              index_topk=16, index_head_dim=32, index_n_heads=4, use_sliding_window=False,
                              max_position_embeddings=512, shared_experts_intermediate_size=64, pad_token_id=0,
                              bos_token_id=2, eos_token_id=1)
    torch.manual_seed(0)
    model = Dots3NoteForCausalLM(cfg).eval()
    used = []
    # Dots3NoteAttention passes position_ids=None: the step's key count comes from its cache instead
    grabs = [m.register_forward_hook(lambda m, a, kw, o: used.append(
        (m.layer_idx, kw["past_key_values"].layers[m.layer_idx].indexer_keys.shape[1] - 1, o.clone()))
        if a[0].shape[1] == 1 else None, with_kwargs=True)
        for m in model.modules() if type(m).__name__ == "Dots3NoteTextIndexer"]
    df = _three_decode_steps(model, "transformers.dots3_note", tmp_path).set_index(["layer", "step"])
    for g in grabs:
        g.remove()
    assert len(grabs) == 2 and len(used) == len(df) == 2 * 3
    for layer, pos, out in used:
        rec = df.loc[(layer, pos - 40)]
        assert rec["topk"] == sorted(int(i) for i in out[0, 0]) and rec["n_selected"] == 16 < pos + 1


def test_researched_engines_are_cited_and_named_when_met(tmp_path):
    """vLLM's and SGLang's hook points are data ([[researched]]): every field filled and cited; a model
    holding one of those classes (here a stand-in module of that name) gets a one-line error that names
    the engine and where its top-k lives, not "no indexer found"."""
    from align.trace.topk.engines import RESEARCHED_FIELDS, researched

    found = researched()
    assert {e["name"] for e in found.values()} >= {"vllm.deepseek_v32", "sglang.dsa_indexer"}
    assert all(e[f] for e in found.values() for f in RESEARCHED_FIELDS)
    vllm = next(cls for cls, e in found.items() if e["name"] == "vllm.deepseek_v32")
    stand_in = type(vllm.rsplit(".", 1)[1], (torch.nn.Module,), {"__module__": vllm.rsplit(".", 1)[0]})
    with pytest.raises(AlignError, match=r"vLLM 0\.33\.0.*researched but not attachable yet: its top-k is "
                                         r"request-local token positions"):
        with attach_engine(TopkTracer(TopkTraceConfig(out_dir=tmp_path)), torch.nn.Sequential(stand_in())):
            pass


def test_the_committed_32k_context_h200_trace(tmp_path):
    """profiles/examples/trace_hf_32k (capture.sh on the H200): RULER-shaped requests at contexts up to
    32k, sixteen times the top-k, prefilled 2048 tokens at a time, each generating until EOS or 48
    tokens. Steps near 32k select 1/16 of the visible tokens; every request's records stop where
    requests.jsonl says it ended (one emitted EOS on the GPU); the summary equals the recomputation."""
    from align.trace.topk import load_requests

    out, df, meta = committed_trace(ROOT / "profiles" / "examples" / "trace_hf_32k", tmp_path)
    assert meta["generation"] == {"until": "eos", "eos_token": 1, "max_new_tokens": 48, "cap": "48 tokens",
                                  "prefill_chunk": 2048}
    assert meta["model"]["device"] == "cuda" and meta["workload"]["max_seq_len"] == 32768
    assert df["position"].max() >= 32000 and (df["n_selected"] == (df["position"] + 1).clip(upper=2048)).all()
    assert (df["n_selected"] / (df["position"] + 1)).min() < 0.0625 + 1e-3
    reqs = load_requests(out).set_index("request_id")
    layers = meta["model"]["layers_built"]
    counts = df.groupby("request_id")["step"].agg(["count", "max"])
    assert (counts["count"] == layers * reqs["output_len"]).all() and (counts["max"] == reqs["output_len"] - 1).all()
    assert set(reqs["finish"]) <= {"eos", "length"}
    assert (reqs.loc[reqs["finish"] == "length", "generated_tokens"] == 48).all()
    assert (reqs.loc[reqs["finish"] == "eos", "generated_tokens"] < 48).all()
    assert (df.loc[df["step"] > 0, "step_ns"] > 0).all()
