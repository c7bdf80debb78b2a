#!/usr/bin/env bash
# Long contexts: transformers' own DeepSeek-V3.2 (V3.2's per-head dims, 16 local heads, top-2048, two
# layers, random weights, bf16) under generate(), on RULER-shaped requests (--dataset ruler: budgets of
# 4k-128k tokens split into input and each task's output) at 1/16 of their length, so contexts run up to
# 8k tokens, four times the top-k (the indexer's fp32 scores of an 8k prefill take 17 GB; 16k would take
# 68 GB); their outputs scale alike, 2-8 tokens. On a machine with a CUDA GPU and transformers >= 5.23 (its wheel in .whl/):
#   profiles/examples/trace_hf_long/capture.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT_DIR=${1:-profiles/examples/trace_hf_long}
[ -n "${ALIGN_GPU_ENV_DONE:-}" ] || . scripts/gpu-env.sh
profiles/examples/trace/topk_run.sh "$OUT_DIR" --engine transformers --dataset ruler --config v32 --layers 2 \
  --requests 24 --seed 0 --length-scale 0.0625 --batch-size 1 --block-size 64 --shard-size 4 --device cuda \
  --dtype bfloat16
