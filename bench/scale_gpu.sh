#!/usr/bin/env bash
# A real collection split over the GPUs of one host by Dask (one worker per GPU, resource GPU=1),
# against the same grid collected on one GPU by align's local collector; rows compared one by one
# (seed 001's 2 %). On a machine with two or more CUDA GPUs:
#   bench/scale_gpu.sh OUT_DIR [OP]        OP default mla, the reduced grid of profiles/examples/collect
#   (SCALE_GRID="--cases ..." replaces that grid)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bench/scale_gpu.sh OUT_DIR [OP]}
OP=${2:-mla}
PY=${PYTHON:-python3}
[ -n "${ALIGN_GPU_ENV_DONE:-}" ] || ALIGN_WHEELS="${ALIGN_WHEELS:-.whl-dask}" . scripts/gpu-env.sh
mkdir -p "$OUT"
# shellcheck disable=SC2206
GRID=(${SCALE_GRID:---cases seq=1024,4096 --cases kv_len=2048,8192 --cases batch=1,8,32 --cases tp=1,8})
STORE=$(mktemp -d)
N=$(nvidia-smi --list-gpus | wc -l)
nvidia-smi --query-gpu=index,name,driver_version,power.limit,clocks.max.sm --format=csv | tee "$OUT/gpu.csv"
now() { date +%s.%N; }
t0=$(now)
CUDA_VISIBLE_DEVICES=0 $PY -m align collect --op "$OP" --force --store "$STORE" --out "$OUT/one" "${GRID[@]}" \
  --format json > "$OUT/one.json"
t1=$(now)
ADDRESS=tcp://127.0.0.1:8786
$PY -m distributed.cli.dask_scheduler --host 127.0.0.1 --port 8786 --no-dashboard > "$OUT/scheduler.log" 2>&1 &
SCHED=$!
WORKERS=$(scripts/dask-gpu-workers.sh "$ADDRESS" "$N")
trap 'kill $WORKERS $SCHED 2>/dev/null || true' EXIT
$PY -c "from distributed import Client; Client('$ADDRESS', timeout=60).wait_for_workers($N, timeout=180)"
t2=$(now)
$PY -m align collect --op "$OP" --force --store "$STORE" --out "$OUT/dask" "${GRID[@]}" --scheduler "$ADDRESS" \
  --format json > "$OUT/dask.json"
t3=$(now)
$PY -c "import json; print(json.dumps({'gpus': $N, 'one_gpu_s': round($t1 - $t0, 2), 'dask_s': round($t3 - $t2, 2)}))" \
  > "$OUT/times.json"
$PY bench/collect_rows_compare.py "$OUT/one" "$OUT/dask" > "$OUT/compare.md"
$PY bench/collect_rows_compare.py "$OUT/one" "$OUT/dask" --format json > "$OUT/compare.json"
cat "$OUT/times.json" "$OUT/compare.md"
