"""CPU tests of the DeepSeek-V3.2 mock layers (align_mock): DSA / MLA attention, MoE, the small E2E
model and the bench pairs, all on ``DSAConfig.small()`` in fp32 (plus one bf16 smoke test)."""

from __future__ import annotations

import inspect
import json
import re

import pytest

torch = pytest.importorskip("torch")

from align import annotate  # noqa: E402
from align_mock.bench_api import build_pair  # noqa: E402
from align_mock.config import DSAConfig  # noqa: E402
from align_mock.dsa import (  # noqa: E402
    KVCache,
    MLAAttention,
    apply_rotary,
    hadamard,
    hadamard_matrix,
    precompute_freqs_cis,
)
from align_mock.model import DecoderLayer, Transformer  # noqa: E402
from align_mock.moe import MoE  # noqa: E402

# inference/config_671B_v3.2.json of deepseek-ai/DeepSeek-V3.2-Exp, verbatim
REFERENCE_JSON = {
    "vocab_size": 129280, "dim": 7168, "inter_dim": 18432, "moe_inter_dim": 2048, "n_layers": 61,
    "n_dense_layers": 3, "n_heads": 128, "n_routed_experts": 256, "n_shared_experts": 1,
    "n_activated_experts": 8, "n_expert_groups": 8, "n_limited_groups": 4, "route_scale": 2.5,
    "score_func": "sigmoid", "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "dtype": "fp8", "scale_fmt": "ue8m0",
    "index_n_heads": 64, "index_head_dim": 128, "index_topk": 2048,
}


@pytest.fixture(autouse=True)
def _no_grad_seeded():
    torch.manual_seed(0)
    with torch.no_grad():
        yield


@pytest.fixture
def cfg():
    return DSAConfig.small()


def attention_with_cache(cfg, use_indexer=True, batch=2, prior=20, extra=1):
    """An attention layer, a cache of prior + extra slots whose first ``prior`` are random, the rope table."""
    attn = MLAAttention(cfg, use_indexer=use_indexer).eval()
    cache = KVCache(cfg, batch, prior + extra, indexer=use_indexer).fill_random_(prior)
    return attn, cache, precompute_freqs_cis(cfg, prior + extra)


# --- config -------------------------------------------------------------------------------------

def test_defaults_match_reference_config(tmp_path):
    path = tmp_path / "config_671B_v3.2.json"
    path.write_text(json.dumps(REFERENCE_JSON))
    assert DSAConfig.from_json(path) == DSAConfig()
    ref = DSAConfig()
    # ModelArgs defaults of inference/model.py (the json does not set them)
    assert (ref.original_seq_len, ref.rope_theta, ref.rope_factor, ref.beta_fast, ref.beta_slow, ref.mscale,
            ref.max_seq_len, ref.max_batch_size) == (4096, 10000.0, 40, 32, 1, 1.0, 16384, 8)
    assert ref.yarn_active and ref.local_heads == 128 and ref.qk_head_dim == 192


def test_from_json_rejects_unknown_keys(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"dim": 64, "hidden_size": 3}))
    with pytest.raises(ValueError, match="hidden_size"):
        DSAConfig.from_json(path)


def test_tp_split_properties():
    cfg = DSAConfig.small(tp_size=2)
    assert (cfg.local_heads, cfg.local_experts, cfg.local_inter_dim, cfg.local_shared_inter_dim) == (2, 4, 64, 16)
    with pytest.raises(ValueError, match="n_heads .* tp_size"):
        _ = DSAConfig.small(tp_size=3).local_heads
    with pytest.raises(ValueError, match="tp_size"):
        DSAConfig.small(tp_size=0)


# --- building blocks ----------------------------------------------------------------------------

def test_hadamard_butterfly_equals_matrix_and_is_orthonormal():
    x = torch.randn(3, 5, 16)
    h = hadamard_matrix(16)
    torch.testing.assert_close(hadamard(x), x @ h)
    torch.testing.assert_close(h @ h, torch.eye(16), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="power-of-two"):
        hadamard(torch.randn(2, 12))


def test_yarn_scales_only_low_frequencies(cfg):
    plain = precompute_freqs_cis(cfg.replace(max_seq_len=cfg.original_seq_len), 64)
    yarn = precompute_freqs_cis(cfg, 64)
    assert yarn.shape == (64, cfg.qk_rope_head_dim // 2) and yarn.dtype == torch.complex64
    step_plain, step_yarn = plain[1].angle(), yarn[1].angle()
    torch.testing.assert_close(step_yarn[0], step_plain[0])  # fastest frequency untouched
    torch.testing.assert_close(step_yarn[-1], step_plain[-1] / cfg.rope_factor)  # slowest divided by the factor


def test_rotary_is_a_rotation(cfg):
    x = torch.randn(2, 6, 3, cfg.qk_rope_head_dim)
    freqs = precompute_freqs_cis(cfg, 6)
    y = apply_rotary(x, freqs)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[:, 0], x[:, 0])  # position 0: identity


# --- attention ----------------------------------------------------------------------------------

@pytest.mark.parametrize("use_indexer", [True, False], ids=["dsa", "mla"])
def test_attention_shapes_both_phases(cfg, use_indexer):
    attn, cache, freqs = attention_with_cache(cfg, use_indexer, prior=0, extra=16)
    x = torch.randn(2, 12, cfg.dim)
    ctx = attn(x, 0, cache, freqs[:12])
    gen = attn(torch.randn(2, 1, cfg.dim), torch.tensor([12]), cache, freqs[12:13])
    assert ctx.shape == (2, 12, cfg.dim) and gen.shape == (2, 1, cfg.dim)
    assert ctx.isfinite().all() and gen.isfinite().all()


def test_tp_split_halves_head_weights(cfg):
    full = MLAAttention(cfg)
    half = MLAAttention(cfg.replace(tp_size=2))
    assert half.heads == full.heads // 2
    for name in ("wq_b", "wkv_b"):
        assert getattr(half, name).weight.shape[0] * 2 == getattr(full, name).weight.shape[0]
    assert half.wo.weight.shape == (cfg.dim, full.wo.weight.shape[1] // 2)
    for name in ("wq_a", "wkv_a"):
        assert getattr(half, name).weight.shape == getattr(full, name).weight.shape
    assert half.indexer.wq_b.weight.shape == full.indexer.wq_b.weight.shape  # indexer replicated
    cache = KVCache(cfg, 2, 9).fill_random_(8)
    freqs = precompute_freqs_cis(cfg, 9)
    assert half(torch.randn(2, 1, cfg.dim), 8, cache, freqs[8:9]).shape == (2, 1, cfg.dim)
    assert half(torch.randn(2, 5, cfg.dim), 0, cache, freqs[:5]).shape == (2, 5, cfg.dim)


def _selection_of(attn):
    """Record the indexer's top-k indices of the next calls."""
    picked = []
    attn.indexer.register_forward_hook(lambda _m, _a, out: picked.append(out))
    return picked


def test_generation_attends_only_topk_tokens(cfg):
    prior = 30
    attn, cache, freqs = attention_with_cache(cfg, prior=prior)
    picked = _selection_of(attn)
    x = torch.randn(2, 1, cfg.dim)
    pos = torch.tensor([prior])
    base = attn(x, pos, cache.clone(), freqs[prior:])
    chosen = set(picked[-1][0, 0].tolist())
    assert len(chosen) == cfg.index_topk
    unselected = sorted(set(range(prior)) - chosen)
    selected = sorted(chosen - {prior})
    assert unselected and selected
    for t, changes in ((unselected[0], False), (unselected[-1], False), (selected[0], True)):
        perturbed = cache.clone()
        perturbed.kv_latent[0, t] += 5.0
        perturbed.k_rope[0, t] -= 5.0
        out = attn(x, pos, perturbed, freqs[prior:])
        assert set(picked[-1][0, 0].tolist()) == chosen
        if changes:
            assert not torch.allclose(out[0], base[0])
        else:
            assert torch.equal(out[0], base[0]), f"unselected token {t} changed the output"
        assert torch.equal(out[1], base[1])  # the other request's cache is untouched


def test_context_attends_only_topk_tokens(cfg):
    prior, seqlen = 40, 3
    attn, cache, freqs = attention_with_cache(cfg, prior=prior, extra=seqlen)
    picked = _selection_of(attn)
    x = torch.randn(2, seqlen, cfg.dim)
    base = attn(x, prior, cache.clone(), freqs[prior:])
    chosen = set(picked[-1][0].flatten().tolist())
    unselected = sorted(set(range(prior)) - chosen)
    assert unselected
    perturbed = cache.clone()
    perturbed.kv_latent[0, unselected[0]] += 5.0
    assert torch.equal(attn(x, prior, perturbed, freqs[prior:]), base)
    perturbed = cache.clone()
    perturbed.kv_latent[0, min(chosen)] += 5.0
    assert not torch.allclose(attn(x, prior, perturbed, freqs[prior:])[0], base[0])


def test_mla_without_indexer_attends_every_token(cfg):
    attn, cache, freqs = attention_with_cache(cfg, use_indexer=False, prior=30)
    x = torch.randn(2, 1, cfg.dim)
    base = attn(x, 30, cache.clone(), freqs[30:])
    perturbed = cache.clone()
    perturbed.kv_latent[0, 0] += 5.0
    assert not torch.allclose(attn(x, 30, perturbed, freqs[30:])[0], base[0])


@pytest.mark.parametrize("use_indexer", [True, False], ids=["dsa", "mla"])
def test_context_matches_generation_step_by_step(cfg, use_indexer):
    """The naive (context) and absorbed (generation) forms agree: they differ only in the order of
    the fp32 sums (wkv_b applied before vs. folded into q and the output), so within 1e-5."""
    seqlen = 14  # > index_topk: the top-k is a real restriction for the later tokens
    attn, _, freqs = attention_with_cache(cfg, use_indexer, prior=0, extra=seqlen + 2)
    x = torch.randn(2, seqlen, cfg.dim)
    full = attn(x, 0, KVCache(cfg, 2, seqlen + 2, indexer=use_indexer), freqs[:seqlen])
    cache = KVCache(cfg, 2, seqlen + 2, indexer=use_indexer)
    attn(x[:, :4], 0, cache, freqs[:4])
    for p in range(4, seqlen):
        step = attn(x[:, p:p + 1], torch.tensor([p]), cache, freqs[p:p + 1])
        torch.testing.assert_close(step, full[:, p:p + 1], atol=1e-5, rtol=1e-5)


def test_chunked_context_equals_one_prefill(cfg):
    attn, _, freqs = attention_with_cache(cfg, prior=0, extra=20)
    x = torch.randn(2, 20, cfg.dim)
    full = attn(x, 0, KVCache(cfg, 2, 20), freqs)
    cache = KVCache(cfg, 2, 20)
    attn(x[:, :11], 0, cache, freqs[:11])
    torch.testing.assert_close(attn(x[:, 11:], 11, cache, freqs[11:]), full[:, 11:], atol=1e-5, rtol=1e-5)


def test_int_and_tensor_positions_agree(cfg):
    attn, cache, freqs = attention_with_cache(cfg, prior=12)
    x = torch.randn(2, 1, cfg.dim)
    assert torch.equal(attn(x, 12, cache.clone(), freqs[12:]), attn(x, torch.tensor([12]), cache.clone(), freqs[12:]))


def test_attention_errors(cfg):
    attn, cache, freqs = attention_with_cache(cfg, prior=4, extra=4)
    with pytest.raises(ValueError, match="do not fit"):
        attn(torch.randn(2, 6, cfg.dim), 4, cache, freqs[:6])
    with pytest.raises(ValueError, match="tensor start_pos"):
        attn(torch.randn(2, 2, cfg.dim), torch.tensor([4]), cache, freqs[:2])
    with pytest.raises(ValueError, match="indexer"):
        MLAAttention(cfg)(torch.randn(2, 2, cfg.dim), 0, KVCache(cfg, 2, 4, indexer=False), freqs[:2])


# --- MoE ----------------------------------------------------------------------------------------

def test_gate_grouped_topk(cfg):
    moe = MoE(cfg)
    x = torch.randn(64, cfg.dim)
    weights, indices = moe.gate(x)
    assert weights.shape == indices.shape == (64, cfg.n_activated_experts)
    torch.testing.assert_close(weights.sum(-1), torch.full((64,), cfg.route_scale))
    per_group = cfg.n_routed_experts // cfg.n_expert_groups
    biased = torch.sigmoid(x @ moe.gate.weight.T) + moe.gate.bias
    group_scores = biased.view(64, cfg.n_expert_groups, per_group).topk(2, dim=-1).values.sum(-1)
    top_groups = group_scores.topk(cfg.n_limited_groups, dim=-1).indices
    for row in range(64):
        allowed = {g * per_group + i for g in top_groups[row].tolist() for i in range(per_group)}
        assert set(indices[row].tolist()) <= allowed
        # best experts by biased score inside the chosen groups
        ranked = sorted(allowed, key=lambda e: -biased[row, e].item())
        assert set(indices[row].tolist()) == set(ranked[: cfg.n_activated_experts])
        # weights are the unbiased affinities, normalized
        aff = torch.sigmoid(x[row] @ moe.gate.weight.T)[indices[row]]
        torch.testing.assert_close(weights[row], aff / aff.sum() * cfg.route_scale)


@pytest.mark.parametrize("tp", [1, 2])
def test_moe_dense_equals_sparse(cfg, tp):
    cfg = cfg.replace(tp_size=tp)
    dense, sparse = MoE(cfg, mode="dense"), MoE(cfg, mode="sparse")
    sparse.load_state_dict(dense.state_dict())
    x = torch.randn(3, 7, cfg.dim)
    out = dense(x)
    assert out.shape == x.shape and out.isfinite().all()
    torch.testing.assert_close(sparse(x), out, atol=1e-5, rtol=1e-5)
    assert dense.experts.w1.shape == (cfg.local_experts * cfg.moe_inter_dim, cfg.dim)


def test_moe_auto_mode_by_token_count(cfg):
    moe = MoE(cfg.replace(moe_dense_max_tokens=8))
    assert moe.uses_dense(8) and not moe.uses_dense(9)
    with pytest.raises(ValueError, match="mode"):
        MoE(cfg, mode="grouped")


# --- bench pairs --------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["dsa", "mla", "moe"])
@pytest.mark.parametrize("phase,batch,seq,kv_len", [("context", 2, 12, 0), ("context", 2, 5, 9),
                                                    ("generation", 3, 1, 20)])
def test_build_pair_mock_equals_submodule(op, phase, batch, seq, kv_len):
    pair = build_pair(op, phase, batch=batch, seq=seq, kv_len=kv_len, config="small", device="cpu",
                      dtype=torch.float32)
    assert pair.op == op and pair.phase == phase and pair.reset is None
    assert pair.mock is not pair.submodule
    sub_state, mock_state = pair.submodule.state_dict(), pair.mock.state_dict()
    assert sub_state.keys() == mock_state.keys()
    for name, value in sub_state.items():
        assert torch.equal(value, mock_state[name]) and value.data_ptr() != mock_state[name].data_ptr(), name
    expected = pair.submodule_call()
    assert expected.shape == (batch, seq, 64) and expected.isfinite().all()
    torch.testing.assert_close(pair.mock_call(), expected, atol=0, rtol=0)
    torch.testing.assert_close(pair.mock_call(), expected, atol=0, rtol=0)  # idempotent: no reset needed
    assert pair.shape["batch"] == batch and pair.shape["kv_len"] == kv_len and pair.shape["local_heads"] == 4


def test_build_pair_tp_and_errors():
    pair = build_pair("dsa", "generation", tp=2, batch=1, kv_len=10, config="small", device="cpu",
                      dtype=torch.float32)
    assert pair.shape["local_heads"] == 2 and pair.mock.wq_b.weight.shape[0] == 2 * 24
    assert pair.mock_call().shape == (1, 1, 64)
    bad = [
        (dict(op="gqa"), "unknown op"),
        (dict(phase="decode"), "unknown phase"),
        (dict(tp=3), "not divisible by tp_size"),
        (dict(kv_len=600), "max_seq_len"),
        (dict(phase="generation", seq=4), "seq must be 1"),
        (dict(op="moe", layer_idx=0), "dense MLP"),
        (dict(config="v4"), "unknown config"),
        (dict(batch=0), "batch"),
    ]
    for changes, message in bad:
        args = dict(op="dsa", phase="context", config="small", device="cpu", dtype=torch.float32) | changes
        with pytest.raises(ValueError, match=message):
            build_pair(args.pop("op"), args.pop("phase"), **args)


# --- E2E model ----------------------------------------------------------------------------------

@pytest.mark.parametrize("attention", ["dsa", "mla"])
def test_e2e_generate_matches_full_prefill(cfg, attention):
    model = Transformer(cfg, attention=attention).eval()
    prompt = torch.randint(0, cfg.vocab_size, (2, 12))
    tokens, status = model.generate(prompt, steps=5)
    assert tokens.shape == (2, 6) and status == "eager (no CUDA)"
    eager, _ = model.generate(prompt, steps=5, use_cuda_graph=False)
    assert torch.equal(tokens, eager)
    # each decode step's logits equal those of a prefill of the whole sequence so far
    model.setup_caches(2, 20)
    model.prefill(prompt)
    seq = torch.cat([prompt, tokens], dim=1)
    for i in range(5):
        step_logits = model.decode_step(seq[:, 12 + i: 13 + i], torch.tensor([12 + i]))
        model_full = Transformer(cfg, attention=attention)
        model_full.load_state_dict(model.state_dict())
        model_full.setup_caches(2, 20)
        torch.testing.assert_close(step_logits, model_full.prefill(seq[:, : 13 + i]), atol=1e-4, rtol=1e-4)


def test_e2e_graph_replay_equals_eager_on_cuda(cfg):
    if not torch.cuda.is_available():
        pytest.skip("CUDA graphs need a GPU; on CPU generate runs eagerly (checked above)")
    model = Transformer(cfg, device="cuda").eval()
    prompt = torch.randint(0, cfg.vocab_size, (2, 12), device="cuda")
    graphed, status = model.generate(prompt, steps=6)
    eager, _ = model.generate(prompt, steps=6, use_cuda_graph=False)
    assert status == "captured"
    assert torch.equal(graphed, eager)


def test_e2e_nvtx_names(cfg, monkeypatch):
    model = Transformer(cfg).eval()
    include = re.compile(inspect.signature(annotate.nvtx_modules).parameters["include"].default)
    marked = {annotate.module_range_name(n) for n, _ in model.named_modules() if n and include.search(n)}
    assert marked == {"layers.0", "layers.0.self_attn", "layers.0.mlp", "layers.1", "layers.1.self_attn",
                      "layers.1.mlp"}
    pushed = []
    monkeypatch.setattr(annotate, "_push", pushed.append)
    monkeypatch.setattr(annotate, "_pop", lambda: None)
    remove = annotate.nvtx_modules(model)
    model.generate(torch.randint(0, cfg.vocab_size, (1, 9)), steps=1)
    remove()
    one_pass = ["layers.0", "layers.0.self_attn", "layers.0.mlp", "layers.1", "layers.1.self_attn", "layers.1.mlp"]
    assert pushed == ["prefill", *one_pass, "decode_step", *one_pass]


def test_decoder_layer_kinds(cfg):
    assert type(DecoderLayer(cfg, 0).mlp).__name__ == "MLP"
    assert type(DecoderLayer(cfg, 1).mlp).__name__ == "MoE"
    assert DecoderLayer(cfg, 1, "mla").self_attn.indexer is None
    with pytest.raises(ValueError, match="attention"):
        DecoderLayer(cfg, 0, "gqa")


def test_bf16_both_phases(cfg):
    model = Transformer(cfg, dtype=torch.bfloat16).eval()
    tokens, _ = model.generate(torch.randint(0, cfg.vocab_size, (2, 12)), steps=3)
    assert tokens.shape == (2, 4)
    pair = build_pair("dsa", "generation", batch=2, kv_len=16, config="small", device="cpu", dtype=torch.bfloat16)
    out = pair.mock_call()
    assert out.dtype == torch.bfloat16 and out.isfinite().all()
    assert torch.equal(out, pair.submodule_call())


def test_choices_that_follow_transformers_compute_the_same_function(cfg):
    """--rms-norm unfused and --index-scores fp32 (README: following the transformers reference where
    the choice is ours) change kernels, not the answer: the same weights give the same outputs."""
    import dataclasses

    from align_mock.dsa import RMSNorm

    x = torch.randn(3, 5, 64)
    fused, unfused = RMSNorm(64), RMSNorm(64, unfused=True)
    assert torch.allclose(fused(x), unfused(x), atol=1e-6)
    outs = []
    weights = MLAAttention(cfg, use_indexer=True).state_dict()
    for follow in (False, True):
        c = dataclasses.replace(cfg, index_score_dtype="fp32", rms_norm="unfused") if follow else cfg
        attn = MLAAttention(c, use_indexer=True).eval()
        attn.load_state_dict(weights)
        cache = KVCache(c, 2, 21, indexer=True).fill_random_(20, torch.Generator().manual_seed(3))
        h = torch.randn(2, 1, c.dim, generator=torch.Generator().manual_seed(4))
        outs.append(attn(h, torch.full((1,), 20), cache, precompute_freqs_cis(c, 21)[20:21]))
    assert attn.q_norm.unfused and attn.indexer.fp32_scores
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    with pytest.raises(ValueError, match="index_score_dtype"):
        DSAConfig(index_score_dtype="fp8")
