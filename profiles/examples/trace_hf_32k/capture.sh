#!/usr/bin/env bash
# Contexts to 32k, sixteen times the top-k: transformers' own DeepSeek-V3.2 (V3.2's per-head dims, 16 local
# heads, top-2048, two layers, random weights, bf16) under generate(), on RULER-shaped requests (--dataset
# ruler: 4k-128k budgets) at a quarter of their length, so contexts are 1k-32k. Prompts are prefilled 2048
# tokens at a time (--prefill-chunk: a whole 32k prompt's fp32 indexer scores would take 275 GB); each request
# then generates until EOS or 48 tokens (--max-new-tokens: seed 003's until-EOS loop; with random weights
# EOS, token 1, is not expected, so requests.jsonl says which way each ended). On a machine with a CUDA GPU
# and transformers >= 5.23 (its wheel in .whl/):
#   profiles/examples/trace_hf_32k/capture.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT_DIR=${1:-profiles/examples/trace_hf_32k}
[ -n "${ALIGN_GPU_ENV_DONE:-}" ] || . scripts/gpu-env.sh
profiles/examples/trace/topk_run.sh "$OUT_DIR" --engine transformers --dataset ruler --config v32 --layers 2 \
  --requests 18 --seed 0 --length-scale 0.25 --max-seq-len 32768 --prefill-chunk 2048 --max-new-tokens 48 \
  --batch-size 1 --block-size 64 --shard-size 4 --device cuda --dtype bfloat16
