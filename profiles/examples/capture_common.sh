# Sourced by the capture scripts here: set-up on a GPU machine and the capture() helper.
# capture NAME KIND OP [ALIGN PROFILE FLAGS] -- CMD ...: `align profile KIND --op OP` into $OUT_DIR/NAME,
# then the `nsys stats` CSVs of the same SQLite file as test oracles (oracle_<report>.csv, stats.log).
# Set ONLY="name ..." to capture only those entries.
PY=${PYTHON:-python3}
. scripts/gpu-env.sh
$PY -m align doctor
NSYS_BIN=$($PY -c 'from align.capture.discover import discover; print(discover().path)')
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true

# oracles DIR: the `nsys stats` CSVs of DIR/report.sqlite (oracle_<report>.csv, stats.log)
oracles() {
  "$NSYS_BIN" stats --force-export=false --format csv --output "$1/oracle" \
    --report cuda_gpu_kern_sum --report cuda_gpu_kern_sum:base --report nvtx_gpu_proj_sum \
    --report nvtx_kern_sum --report nvtx_sum --report cuda_api_sum "$1/report.sqlite" > "$1/stats.log" 2>&1
}

capture() {
  local name=$1 kind=$2 op=$3; shift 3
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  local flags=()
  while [ "$1" != "--" ]; do flags+=("$1"); shift; done
  shift
  $PY -m align profile "$kind" --store "$OUT_DIR" --name "$name" --op "$op" --overwrite "${flags[@]}" -- "$@"
  oracles "$OUT_DIR/$name"
  ls -la "$OUT_DIR/$name"
}

# cap NAME ...: capture() that a failure does not stop, and that starts nothing once ALIGN_DEADLINE
# seconds have passed since this file was sourced
T0=$SECONDS
late() { [ -n "${ALIGN_DEADLINE:-}" ] && [ $((SECONDS - T0)) -ge "$ALIGN_DEADLINE" ]; }
cap() { if late; then echo "skipped $1: past ALIGN_DEADLINE"; return 0; fi; capture "$@" || echo "FAILED $1"; }
