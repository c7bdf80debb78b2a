#!/usr/bin/env bash
# The reduced collections of profiles/examples/collect, on a GPU machine (an H200 where the
# comparison with aiconfigurator's shipped H200 tables should hold):
#   profiles/examples/collect/capture.sh [OUT_DIR] [OPS]       OPS default: "dsa mla moe"
# Per op, into OUT_DIR/<op>/ (the collection's --out, aiconfigurator's layout inside):
# 1. the op's verdict on its shipped mock/E2E pair (the gate of align collect): verdict.json;
#    moe has no shipped pair and is collected with --force (recorded in collection_meta.yaml),
# 2. a reduced grid with NVML power sampling: collect.json,
# 3. 6 random finished cases re-run (align collect --verify): verify.json,
# 4. the collection validated (align collect --check: counts, reasons, per-case flags): check.json.
# Then, on any machine: python bench/aic_collect_compare.py OUT_DIR/<op> > OUT_DIR/<op>/aic_ratio.txt
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT_DIR=${1:-profiles/examples/collect}
OPS=${2:-dsa mla moe}
PY=${PYTHON:-python3}
[ -n "${ALIGN_GPU_ENV_DONE:-}" ] || . scripts/gpu-env.sh
mkdir -p "$OUT_DIR"
STORE=$(mktemp -d)
nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv | tee "$OUT_DIR/gpu.csv"
declare -A GRID=(
  [dsa]="--cases seq=1024,4096 --cases prefix=0 --cases kv_len=2048,8192 --cases batch=1,8,32 --cases tp=1,8"
  [mla]="--cases seq=1024,4096 --cases kv_len=2048,8192 --cases batch=1,8,32 --cases tp=1,8"
  [moe]="--cases tokens=1,16,128,1024,4096 --cases tp=1 --cases ep=8,32 --cases distribution=balanced,power_law_1.01"
)
for op in $OPS; do
  dir=$OUT_DIR/$op
  mkdir -p "$dir"
  gate=()
  if [ -d "profiles/examples/${op}_mock" ]; then
    $PY -m align verdict --op "$op" --mock "profiles/examples/${op}_mock" --e2e "profiles/examples/${op}_e2e" \
      --store "$STORE" --format json > "$dir/verdict.json" || true
  else
    gate=(--force)
  fi
  # shellcheck disable=SC2086
  $PY -m align collect --op "$op" --store "$STORE" --out "$dir" --power "${gate[@]}" ${GRID[$op]} \
    --format json > "$dir/collect.json" || echo "$op: align collect exited $?" >&2
  $PY -m align collect --op "$op" --out "$dir" --verify 6 --format json > "$dir/verify.json" \
    || echo "$op: verification exited $?" >&2
  $PY -m align collect --op "$op" --out "$dir" --check --format json > "$dir/check.json" \
    || echo "$op: the check exited $?" >&2
done
# Then, on a machine with aiconfigurator 0.12.0 (the CPU one): the same check with its own whole-model
# estimate on the DSA (DeepSeek-V3.2) and MLA (DeepSeek-V3) tables:
#   for op in dsa mla; do align collect --op $op --out OUT_DIR/$op --check --aic /tmp/aic --format json \
#     > OUT_DIR/$op/check_aic.json; done
