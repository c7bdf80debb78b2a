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
PY=${PYTHON:-python3}
[ -n "${ALIGN_GPU_ENV_DONE:-}" ] || . scripts/gpu-env.sh
mkdir -p "$OUT_DIR"
TOPK=$(mktemp -d)/topk
$PY -m align trace topk run --engine transformers --config v32 --layers 2 --requests 16 --seed 0 \
  --length-scale 0.5 --block-size 64 --shard-size 4 --device cuda --dtype bfloat16 --format json \
  --out "$TOPK" > "$OUT_DIR/run.json"
$PY -m align trace topk summary "$TOPK" --format json > "$OUT_DIR/topk_summary_cli.json"
cp "$TOPK"/run_meta.json "$TOPK"/summary.json "$TOPK"/requests.jsonl "$OUT_DIR/"
tar -C "$(dirname "$TOPK")" -czf "$OUT_DIR/topk_trace.tar.gz" topk
ls -la "$OUT_DIR"
