#!/usr/bin/env bash
# align bench for the DSA mock layer at a few shapes (TP 1 and 8, context and generation), on a
# GPU machine, writing one JSON per shape into OUT_DIR (default profiles/examples/dsa_bench).
# Then bench/aic_compare.py compares the mock's latencies with aiconfigurator's DSA module tables.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-profiles/examples/dsa_bench}
mkdir -p "$OUT_DIR"
[ -n "${ALIGN_GPU_ENV_DONE:-}" ] || . scripts/gpu-env.sh
PY=${PYTHON:-python3}
run() {  # name, then align bench arguments
  local name=$1; shift
  echo "== $name: align bench --op dsa $*" >&2
  $PY -m align bench --op dsa "$@" --format json > "$OUT_DIR/$name.json" || echo "$name failed (exit $?)" >&2
}
run ctx_tp1_b1_s4096 --phase context --tp 1 --batch 1 --seq 4096
run ctx_tp8_b1_s4096 --phase context --tp 8 --batch 1 --seq 4096
run gen_tp1_b32_kv8192 --phase generation --tp 1 --batch 32 --kv-len 8192
run gen_tp8_b64_kv8192 --phase generation --tp 8 --batch 64 --kv-len 8192
