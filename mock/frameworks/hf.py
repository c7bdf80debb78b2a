"""transformers' own DeepSeek modules as way-A mock layers: ``DeepseekV32Attention`` (DSA, with its
indexer), ``DeepseekV3Attention`` (MLA) and ``DeepseekV32MoE`` (MoE), built from a config with random
weights, fed as the model feeds them: transformers' rotary embedding, ``create_causal_mask`` and its
own ``StaticCache`` / ``DynamicCache``. Needs transformers >= 5.23 (DeepSeek-V3.2).

TP is simulated on one GPU as aiconfigurator's collector does: the config's head counts are the
local ones (heads / tp); for MoE each expert's intermediate size is the local one (moe
intermediate / tp, every expert on every rank). Cached tokens are random latents written through the
cache's own ``update``, into one cache then copied, so both modules of a pair read the same contents.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from align_mock.frameworks.base import Adapter, Built, Case

# DeepSeek-V3.2's YaRN rotary parameters (its config.json)
V32_ROPE = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "original_max_position_embeddings": 4096,
            "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}
HEADS = 128
MOE_INTERMEDIATE = 2048
SMALL = dict(hidden_size=256, num_attention_heads=8, num_key_value_heads=8, q_lora_rank=64, kv_lora_rank=32,
             qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, index_n_heads=4, index_head_dim=32,
             index_topk=16, intermediate_size=512, moe_intermediate_size=64, n_routed_experts=16, n_group=4,
             topk_group=2, num_experts_per_tok=4, vocab_size=1000)
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _transformers():
    try:
        import transformers
        from transformers.models.deepseek_v32 import modeling_deepseek_v32  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"the transformers adapter needs transformers >= 5.23 with DeepSeek-V3.2 ({exc}): "
                          "pip install -e '.[hf]' (or 'transformers>=5.23')") from None
    return transformers


def make_config(case: Case):
    """The model config of ``case``: V3.2's per-head dims with local heads (``v32``), or CPU-sized
    (``small``); one layer, whose MLP is the MoE for op ``moe``."""
    _transformers()
    from transformers import DeepseekV3Config, DeepseekV32Config

    if case.config == "small":
        dims = dict(SMALL)
        heads, inter = dims.pop("num_attention_heads"), dims.pop("moe_intermediate_size")
    elif case.config == "v32":
        dims, heads, inter = {}, HEADS, MOE_INTERMEDIATE
    else:
        raise ValueError(f"unknown config {case.config!r}; use v32 or small")
    if heads % case.tp or inter % case.tp:
        raise ValueError(f"{heads} heads or MoE intermediate {inter} do not split over tp {case.tp}")
    dims.update(num_attention_heads=heads // case.tp, num_key_value_heads=heads // case.tp,
                moe_intermediate_size=inter // case.tp)
    common = dict(num_hidden_layers=1, first_k_dense_replace=0 if case.op == "moe" else 1,
                  rope_parameters=V32_ROPE, attn_implementation="sdpa", max_position_embeddings=163840)
    dims = {**common, **dims, **dict(case.overrides)}  # overrides last (attn_implementation="eager", say)
    if case.op == "mla":
        for key in ("index_n_heads", "index_head_dim", "index_topk"):
            dims.pop(key, None)
        return DeepseekV3Config(**dims)
    config = DeepseekV32Config(**dims)
    if case.op == "moe":
        # the experts kernel the model picks at init (a standalone module would fall back to the eager loop)
        from transformers.models.deepseek_v32.modeling_deepseek_v32 import DeepseekV32PreTrainedModel

        config._experts_implementation = \
            "grouped_mm" if DeepseekV32PreTrainedModel._can_set_experts_implementation() else "eager"
    return config


def _classes(op: str) -> tuple[type, type, type]:
    """(decoder layer, standalone module, rotary embedding) classes of ``op``."""
    if op == "mla":
        from transformers.models.deepseek_v3 import modeling_deepseek_v3 as m

        return m.DeepseekV3DecoderLayer, m.DeepseekV3Attention, m.DeepseekV3RotaryEmbedding
    from transformers.models.deepseek_v32 import modeling_deepseek_v32 as m

    return m.DeepseekV32DecoderLayer, (m.DeepseekV32MoE if op == "moe" else m.DeepseekV32Attention), \
        m.DeepseekV32RotaryEmbedding


def _init_weights(module: torch.nn.Module, seed: int) -> None:
    """Seeded random weights for parameters a standalone build leaves empty (experts, router):
    matrices N(0, 0.02), norm weights 1, biases and float buffers 0."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen).mul_(0.02))
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)
        for _, b in module.named_buffers():
            if b.is_floating_point():
                b.zero_()


def signature(value: Any) -> Any:
    """Shapes, dtypes and strides of a call's tensors (nested); what a test compares with ``generate()``."""
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch."),
                "stride": list(value.stride())}
    if isinstance(value, (tuple, list)):
        return [signature(v) for v in value]
    if isinstance(value, dict):
        return {k: signature(v) for k, v in sorted(value.items()) if k != "past_key_values"}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return type(value).__name__


class _Inputs:
    """One attention call's inputs and a cache at ``kv_len`` cached tokens, as the model makes them."""

    def __init__(self, case: Case, config, rotary, device, dtype):
        from transformers import DynamicCache, StaticCache
        from transformers.masking_utils import create_causal_mask

        gen = torch.Generator(device="cpu").manual_seed(case.seed + 1)
        self.kind = case.cache_kind
        if self.kind == "static":
            self.cache = StaticCache(config=config, max_cache_len=case.kv_len + case.new_tokens)
        else:
            self.cache = DynamicCache(config=config)
        extra = {"allow_is_causal_skip": False} if case.op == "dsa" else {}

        def inputs(past: int, q_len: int) -> dict:
            hidden = torch.randn(case.batch, q_len, config.hidden_size, generator=gen).to(device=device, dtype=dtype)
            # as generate() makes them: from a padding mask of ones, one row per request (contiguous)
            position_ids = torch.arange(past, past + q_len, device=device).repeat(case.batch, 1)
            mask = create_causal_mask(config=config, inputs_embeds=hidden, attention_mask=None,
                                      past_key_values=self.cache, position_ids=position_ids, **extra)
            return {"hidden_states": hidden, "attention_mask": mask, "position_ids": position_ids,
                    "past_key_values": self.cache, "use_cache": True, "position_embeddings": rotary(hidden, position_ids)}

        if case.kv_len:
            self._fill(case, config, gen, device, dtype)
        self.kwargs = inputs(case.kv_len, case.new_tokens)
        self.start = case.kv_len

    def _fill(self, case: Case, config, gen, device, dtype) -> None:
        """``kv_len`` cached tokens of random latents, written through the cache's own ``update`` (and
        ``update_indexer``): what the attention would have cached, without running a prefill whose
        indexer scores alone (batch x tokens x index heads x tokens, fp32) outgrow the GPU."""
        def rand(*shape):
            return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

        b, t = case.batch, case.kv_len
        self.cache.update(rand(b, 1, t, config.kv_lora_rank), rand(b, 1, t, config.qk_rope_head_dim), 0)
        if case.op == "dsa":
            self.cache.update_indexer(rand(b, t, config.index_head_dim), 0)

    def copy(self) -> "_Inputs":
        """The same inputs with a cache of its own holding the same contents."""
        other = copy.copy(self)
        other.cache = copy.deepcopy(self.cache)
        other.kwargs = {**self.kwargs, "past_key_values": other.cache}
        other.snapshot = None
        return other

    def make_reset(self):
        """Put the cache back at ``start`` cached tokens: static layers by their position counters
        (in place: valid inside a CUDA graph), dynamic layers by their tensors before the call."""
        layers = self.cache.layers
        if self.kind == "static":
            def reset() -> None:
                for layer in layers:
                    if getattr(layer, "is_initialized", False):
                        layer.cumulative_length.fill_(self.start)
                    if getattr(layer, "is_indexer_initialized", False):
                        layer.indexer_cumulative_length.fill_(self.start)
            return reset
        saved = [dict(vars(layer)) for layer in layers]  # updates concatenate into new tensors: these stay

        def reset() -> None:
            for layer, state in zip(layers, saved):
                vars(layer).clear()
                vars(layer).update(state)
        return reset


class TransformersAdapter(Adapter):
    name = "transformers"

    def version(self) -> str:
        return _transformers().__version__

    def _device(self, case: Case) -> tuple[torch.device, torch.dtype]:
        if case.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {case.dtype!r}; use one of {', '.join(DTYPES)}")
        device = torch.device(case.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device cuda requested but CUDA is not available")
        return device, DTYPES[case.dtype]

    def _modules(self, case: Case, in_layer: bool, config=None):
        """(config, the decoder layer or None, the op's module, the rotary embedding)."""
        config = config if config is not None else make_config(case)
        layer_cls, module_cls, rotary_cls = _classes(case.op)
        device, dtype = self._device(case)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with device:
                layer = layer_cls(config, layer_idx=0) if in_layer else None
                module = (layer.mlp if case.op == "moe" else layer.self_attn) if in_layer else \
                    (module_cls(config) if case.op == "moe" else module_cls(config, layer_idx=0))
                rotary = rotary_cls(config)
        finally:
            torch.set_default_dtype(previous)
        _init_weights(module, case.seed)
        module.eval().requires_grad_(False)
        return config, layer, module, rotary

    def _built(self, case: Case, where: str, module, inputs: _Inputs | None, x: torch.Tensor | None) -> Built:
        shape = {"framework": self.name, "version": self.version(), "class": type(module).__name__, **case.to_dict()}
        if case.op == "moe":
            shape.update(tokens=case.batch * case.new_tokens, cache="none",
                         experts_implementation=module.config._experts_implementation)
            return Built(self.name, shape["version"], where, module, lambda: module(x), None, graphable=True,
                         shape=shape, inputs={"hidden_states": signature(x)})
        cfg = module.config
        shape.update(local_heads=cfg.num_attention_heads, kv_lora_rank=cfg.kv_lora_rank,
                     qk_rope_head_dim=cfg.qk_rope_head_dim, cache_len=case.kv_len + case.new_tokens)
        if case.op == "dsa":
            shape.update(index_topk=min(cfg.index_topk, case.kv_len + case.new_tokens), index_n_heads=cfg.index_n_heads)
        kwargs = inputs.kwargs
        return Built(self.name, shape["version"], where, module, lambda: module(**kwargs)[0], inputs.make_reset(),
                     graphable=inputs.kind == "static", shape=shape, inputs=signature(kwargs))

    def build(self, case: Case, config=None) -> Built:
        """``config``: the model's own transformers config (an E2E run's, say) instead of one made
        from ``case.config``; its head counts are taken as the local ones."""
        config, _, module, rotary = self._modules(case, in_layer=False, config=config)
        device, dtype = self._device(case)
        if case.op == "moe":
            gen = torch.Generator(device="cpu").manual_seed(case.seed + 1)
            x = torch.randn(case.batch, case.new_tokens, config.hidden_size, generator=gen).to(device=device,
                                                                                                dtype=dtype)
            return self._built(case, "standalone", module, None, x)
        return self._built(case, "standalone", module, _Inputs(case, config, rotary, device, dtype), None)

    def build_pair(self, case: Case, config=None) -> tuple[Built, Built]:
        config, layer, inner, rotary = self._modules(case, in_layer=True, config=config)
        _, _, alone, _ = self._modules(case, in_layer=False, config=config)
        alone.load_state_dict(inner.state_dict())
        device, dtype = self._device(case)
        if case.op == "moe":
            gen = torch.Generator(device="cpu").manual_seed(case.seed + 1)
            x = torch.randn(case.batch, case.new_tokens, config.hidden_size, generator=gen).to(device=device,
                                                                                                dtype=dtype)
            return (self._built(case, "decoder layer", inner, None, x),
                    self._built(case, "standalone", alone, None, x))
        first = _Inputs(case, config, rotary, device, dtype)
        second = first.copy()
        return (self._built(case, "decoder layer", inner, first, None),
                self._built(case, "standalone", alone, second, None))
