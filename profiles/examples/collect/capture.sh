#!/usr/bin/env bash
# The reduced DSA collection of profiles/examples/collect, on a GPU machine (an H200 where the
# comparison with aiconfigurator's shipped H200 tables should hold):
#   profiles/examples/collect/capture.sh [OUT_DIR]
# 1. records the DSA verdict of the shipped mock/E2E pair (the gate of align collect),
# 2. collects both phases over a few shapes and TP values, with NVML power sampling,
# 3. re-runs 6 random finished cases (align collect --verify) and keeps their deviations.
# Then, on any machine: python bench/aic_collect_compare.py OUT_DIR/data > OUT_DIR/aic_ratio.txt
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT_DIR=${1:-profiles/examples/collect}
PY=${PYTHON:-python3}
[ -n "${ALIGN_GPU_ENV_DONE:-}" ] || . scripts/gpu-env.sh
mkdir -p "$OUT_DIR"
STORE=$(mktemp -d)
nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv | tee "$OUT_DIR/gpu.csv"
$PY -m align verdict --op dsa --mock profiles/examples/dsa_mock --e2e profiles/examples/dsa_e2e \
  --store "$STORE" --format json > "$OUT_DIR/verdict.json"
$PY -m align collect --op dsa --store "$STORE" --out "$OUT_DIR/data" --power \
  --cases seq=1024,4096 --cases prefix=0 --cases kv_len=2048,8192 --cases batch=1,8,32 --cases tp=1,8 \
  --format json > "$OUT_DIR/collect.json"
$PY -m align collect --op dsa --out "$OUT_DIR/data" --verify 6 --format json > "$OUT_DIR/verify.json"
