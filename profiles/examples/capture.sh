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

. profiles/examples/capture_common.sh

capture attn_mock mock attention -- $PY mock/examples/attention_mock.py
capture attn_mock_profiler_api mock attention --capture-range cudaProfilerApi -- $PY mock/examples/attention_mock.py --profiler-api
capture llama_e2e e2e attention -- $PY mock/examples/llama_e2e.py
capture llama_e2e_eager e2e attention -- $PY mock/examples/llama_e2e.py --eager
# planted misalignments of the mock, for align verdict's tests (each must fail for its reason)
capture attn_mock_extra mock attention --planted "an extra kernel (GELU on the inputs inside the mock's range)" -- $PY mock/examples/attention_mock.py --plant extra
capture attn_mock_missing mock attention --planted "a sub-op left out (no rotary embedding)" -- $PY mock/examples/attention_mock.py --plant missing
capture attn_mock_count mock attention --planted "a count mismatch: o_proj applied twice" -- $PY mock/examples/attention_mock.py --plant count
capture attn_mock_fp32 mock attention --planted "another dtype: float32" -- $PY mock/examples/attention_mock.py --dtype fp32
capture attn_mock_slow mock attention --planted "8x the tokens (batch 16 where the E2E run has 2)" -- $PY mock/examples/attention_mock.py --batch 16
# DeepSeek-V3.2 sparse attention (align_mock): the mock layer and a small E2E model built from it
capture dsa_mock mock dsa -- $PY mock/examples/dsa_mock.py
capture dsa_e2e e2e dsa -- $PY mock/examples/dsa_e2e.py
# plain MLA (DeepSeek-V3): the same layer and model without the indexer
capture mla_mock mock mla -- $PY mock/examples/dsa_mock.py --attention mla
capture mla_e2e e2e mla -- $PY mock/examples/dsa_e2e.py --attention mla
# module tracer (align trace modules --nvtx): an NVTX range per module call of the DSA E2E model
capture dsa_modules aux dsa -- $PY -m align trace modules --nvtx --format json -- \
  $PY mock/examples/dsa_e2e.py --eager --layers 2
