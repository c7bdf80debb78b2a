#!/usr/bin/env bash
# A top-k trace of an engine we did not write: transformers' own DeepSeek-V3.2 (V3.2's per-head dims,
# 16 local heads, top-2048, two layers, random weights, bf16) under its own generate(), traced through
# forward hooks on DeepseekV32Indexer (align/data/topk_hooks.toml). The seeded chat / long-context
# workload at half length: long prompts of 1024-4096 tokens, so decode steps past position 2048 select
# a sparse subset. On a machine with a CUDA GPU and transformers >= 5.23 (its wheel in .whl/):
#   profiles/examples/trace_hf/capture.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT_DIR=${1:-profiles/examples/trace_hf}
[ -n "${ALIGN_GPU_ENV_DONE:-}" ] || . scripts/gpu-env.sh
profiles/examples/trace/topk_run.sh "$OUT_DIR" --engine transformers --config v32 --layers 2 --requests 16 \
  --seed 0 --length-scale 0.5 --block-size 64 --shard-size 4 --device cuda --dtype bfloat16
