#!/usr/bin/env bash
# Capture the shipped example profiles on a GPU machine, with align's own `align profile`, and
# write the `nsys stats` CSVs of the same files as test oracles.
#
# Run from the repository root on a machine with a CUDA GPU, PyTorch and transformers:
#   profiles/examples/capture.sh [OUT_DIR]
# nsys: $NSYS, else what `align doctor` finds. On our H100/H200 image the only nsys is the one
# bundled with Nsight Compute; its importer needs libdw (Debian's libdw1 and libelf1 .debs in
# .debs/) and a host-linux-x64 link, which this script sets up when it finds that layout.
# Python packages missing there (sqlite-utils and its small deps) are installed from .whl/ if present.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-profiles/examples}
PY=${PYTHON:-python3}

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/align-site .whl/*.whl
  export PYTHONPATH=/tmp/align-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}

NCU_HOST=$(ls -d /opt/nvidia/nsight-compute/*/host 2>/dev/null | sort -V | tail -1 || true)
if [ -z "${NSYS:-}" ] && ! command -v nsys >/dev/null && [ -n "$NCU_HOST" ]; then
  if [ -d .debs ]; then
    mkdir -p /tmp/dw && for d in .debs/*.deb; do dpkg -x "$d" /tmp/dw; done
    export LD_LIBRARY_PATH=/tmp/dw/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  fi
  desktop=$(ls -d "$NCU_HOST"/linux-desktop-* | head -1)
  [ -e "$NCU_HOST/host-linux-x64" ] || ln -sfn "$desktop" "$NCU_HOST/host-linux-x64"
  export NSYS=$NCU_HOST/target-linux-x64/nsys
fi

$PY -m align doctor
NSYS_BIN=$($PY -c 'from align.nsys.discover import discover; print(discover().path)')
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true

# name | kind | align profile flags | command
capture() {
  local name=$1 kind=$2; shift 2
  local flags=()
  while [ "$1" != "--" ]; do flags+=("$1"); shift; done
  shift
  $PY -m align profile "$kind" --store "$OUT_DIR" --name "$name" --overwrite "${flags[@]}" -- "$@"
  local dir=$OUT_DIR/$name
  # Oracles: nsys's own reports on the same SQLite file.
  "$NSYS_BIN" stats --force-export=false --format csv --output "$dir/oracle" \
    --report cuda_gpu_kern_sum --report cuda_gpu_kern_sum:base --report nvtx_gpu_proj_sum \
    --report nvtx_kern_sum --report nvtx_sum --report cuda_api_sum "$dir/report.sqlite" > "$dir/stats.log" 2>&1
  ls -la "$dir"
}

capture attn_mock mock -- $PY mock/examples/attention_mock.py
capture attn_mock_profiler_api mock --capture-range cudaProfilerApi -- $PY mock/examples/attention_mock.py --profiler-api
capture llama_e2e e2e -- $PY mock/examples/llama_e2e.py
capture llama_e2e_eager e2e -- $PY mock/examples/llama_e2e.py --eager
