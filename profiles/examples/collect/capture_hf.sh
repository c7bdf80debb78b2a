#!/usr/bin/env bash
# A reduced DSA collection timed on transformers' own DeepseekV32Attention (seed 000 way A,
# `align collect --framework transformers`), gated on the way-A verdict: transformers' module built
# standalone (hf_dsa_mock) against transformers' generate() (hf_dsa_e2e). On an H200 with the
# transformers >= 5.23 wheel in .whl/:
#   profiles/examples/collect/capture_hf.sh [OUT_DIR]        (default profiles/examples/collect/dsa_transformers)
# Then, on any machine: python bench/aic_collect_compare.py OUT_DIR > OUT_DIR/aic_ratio.txt
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT_DIR=${1:-profiles/examples/collect/dsa_transformers}
PY=${PYTHON:-python3}
[ -n "${ALIGN_GPU_ENV_DONE:-}" ] || . scripts/gpu-env.sh
mkdir -p "$OUT_DIR"
STORE=$(mktemp -d)
nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv | tee "$OUT_DIR/gpu.csv"
$PY -m align verdict --op dsa --mock profiles/examples/hf_dsa_mock --e2e profiles/examples/hf_dsa_e2e \
  --store "$STORE" --format json > "$OUT_DIR/verdict.json" || true
$PY -m align collect --op dsa --framework transformers --store "$STORE" --out "$OUT_DIR" \
  --cases seq=1024,4096 --cases prefix=0 --cases kv_len=2048,8192 --cases batch=1,8,32 --cases tp=1,8 \
  --format json > "$OUT_DIR/collect.json" || echo "align collect exited $?" >&2
$PY -m align collect --op dsa --framework transformers --out "$OUT_DIR" --verify 4 --format json \
  > "$OUT_DIR/verify.json" || echo "verification exited $?" >&2
