#!/usr/bin/env bash
# The DSA collector module `align collect --export-module` writes, driven on a GPU the way
# aiconfigurator's collect.py drives a module (tests/programs/collect_py_driver.py: import by path,
# get_*_test_cases, run_dsa(*case, device) in a spawned worker per GPU), and `align collect` of the
# same 8 cases; tests/test_gpu_results.py compares the two sets of rows. On an H200:
#   profiles/examples/collect/capture_contract.sh [OUT_DIR]   (default profiles/examples/collect/contract)
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
OUT_DIR=${1:-profiles/examples/collect/contract}
PY=${PYTHON:-python3}
[ -n "${ALIGN_GPU_ENV_DONE:-}" ] || . scripts/gpu-env.sh
rm -rf "$OUT_DIR" && mkdir -p "$OUT_DIR/driver"
OUT_ABS=$(cd "$OUT_DIR" && pwd)
STORE=$(mktemp -d)  # no verdict recorded here: --force, and the export and the collection say so
$PY -m align collect --op dsa --export-module "$OUT_DIR/collector" --force --store "$STORE" --format json \
  > "$OUT_DIR/export.json"
ONLY='[[1024,1,8,0],[1024,8,8,0],[4096,1,8,0],[4096,8,8,0],[2048,1,8],[2048,8,8],[8192,1,8],[8192,8,8]]'
(cd "$OUT_DIR/driver" && COLLECTOR_MEASURE_POWER=1 $PY "$ROOT/tests/programs/collect_py_driver.py" \
  "$OUT_ABS/collector/collect_dsa.py" dsa cuda:0 --only "$ONLY")
$PY -m align collect --op dsa --force --store "$STORE" --out "$OUT_DIR/align" --power --gpus 1 \
  --cases seq=1024,4096 --cases batch=1,8 --cases tp=8 --cases prefix=0 --cases kv_len=2048,8192 \
  --format json > "$OUT_DIR/collect.json"
$PY -m align collect --op dsa --out "$OUT_DIR/align" --check --format json > "$OUT_DIR/check.json" || true
