#!/usr/bin/env bash
# Capture the shipped example profiles on a GPU machine, with align's own `align profile`, and
# write the `nsys stats` CSVs of the same files as test oracles.
#
# Run from the repository root on a machine with a CUDA GPU, PyTorch and transformers:
#   profiles/examples/capture.sh [OUT_DIR]
# nsys: $NSYS, else what `align doctor` finds; scripts/gpu-env.sh sets up the nsys bundled with
# Nsight Compute on our H100/H200 image and installs missing Python packages from .whl/.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-profiles/examples}
PY=${PYTHON:-python3}

. scripts/gpu-env.sh

$PY -m align doctor
NSYS_BIN=$($PY -c 'from align.nsys.discover import discover; print(discover().path)')
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true

# Capture only these entries when ONLY="name ..." is set.
# name | kind | align profile flags | command
capture() {
  local name=$1 kind=$2; shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  local flags=()
  while [ "$1" != "--" ]; do flags+=("$1"); shift; done
  shift
  $PY -m align profile "$kind" --store "$OUT_DIR" --name "$name" --op attention --overwrite "${flags[@]}" -- "$@"
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
# planted misalignments of the mock, for align verdict's tests (each must fail for its reason)
capture attn_mock_extra mock -- $PY mock/examples/attention_mock.py --plant extra
capture attn_mock_missing mock -- $PY mock/examples/attention_mock.py --plant missing
capture attn_mock_count mock -- $PY mock/examples/attention_mock.py --plant count
capture attn_mock_fp32 mock -- $PY mock/examples/attention_mock.py --dtype fp32
capture attn_mock_slow mock -- $PY mock/examples/attention_mock.py --batch 16
# DeepSeek-V3.2 sparse attention (align_mock): the mock layer and a small E2E model built from it
capture dsa_mock mock --op dsa -- $PY mock/examples/dsa_mock.py
capture dsa_e2e e2e --op dsa -- $PY mock/examples/dsa_e2e.py
# plain MLA (DeepSeek-V3): the same layer and model without the indexer
capture mla_mock mock --op mla -- $PY mock/examples/dsa_mock.py --attention mla
capture mla_e2e e2e --op mla -- $PY mock/examples/dsa_e2e.py --attention mla
# module tracer (align trace modules --nvtx): an NVTX range per module call of the DSA E2E model
capture dsa_modules e2e --op dsa -- $PY -m align trace modules --nvtx --format json -- \
  $PY mock/examples/dsa_e2e.py --eager --layers 2
