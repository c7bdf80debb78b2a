#!/usr/bin/env bash
# The GPU runs of both tracers (profiles/examples/trace), on a machine with a CUDA GPU:
#   profiles/examples/trace/capture.sh [OUT_DIR]
# 1. align trace topk run: the synthetic chat/long-context workload on the mock E2E model with the
#    demo config (V3.2 per-head shapes, top-2048), bf16 on cuda, eager decode; then its summary.
# 2. align trace modules --profiler on the DSA E2E example (eager decode): kernels per module.
# 3. the tracer tests on the GPU (their CUDA cases run only there).
# The nsys side (align trace modules --nvtx under align profile) is the example profile
# profiles/examples/dsa_modules, captured by profiles/examples/capture.sh.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT_DIR=${1:-profiles/examples/trace}
PY=${PYTHON:-python3}
[ -n "${ALIGN_GPU_ENV_DONE:-}" ] || . scripts/gpu-env.sh
profiles/examples/trace/topk_run.sh "$OUT_DIR" --config demo --layers 2 --requests 16 --seed 0 \
  --length-scale 0.25 --block-size 64 --shard-size 4 --device cuda --dtype bfloat16
$PY -m align trace modules --profiler --layer 'layers\.1$' --out "$OUT_DIR/modules_dsa_e2e.json" --format json \
  -- $PY mock/examples/dsa_e2e.py --eager --layers 2 > "$OUT_DIR/modules_dsa_e2e_tables.json"
$PY -m pytest -q -p no:cacheprovider tests/test_trace_modules.py tests/test_trace_topk.py tests/test_mock_layers.py \
  2>&1 | tail -15 | tee "$OUT_DIR/pytest_gpu.txt"
