#!/usr/bin/env bash
# Capture the pairs the diagnosis is tested on beyond the shipped planted faults (capture_common.sh's
# capture(), with `nsys stats` oracles of each file), all transformers' own models and modules:
#   - mocks planted with two faults at once: float32 and a batch of 8 where the E2E run has 4;
#   - an E2E run that shares the GPU with a competing process (mock/examples/gpu_hog.py, started
#     outside nsys, so its GEMMs are not in the profile): a latency gap no kernel explains;
#   - the aligned mocks and E2E runs again on the same card, as references.
# Run from the repository root on a GPU machine (transformers >= 5.23 in .whl/, scripts/gpu-env.sh):
#   profiles/examples/capture_diagnose.sh [OUT_DIR]
# profiles/examples/diagnose/pack.sh OUT_DIR packs them as shipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-profiles/examples}
. profiles/examples/capture_common.sh
M=mock/examples


# the E2E run beside a competing process: started first, ended by its id once the capture is done
busy() {
  if late; then echo "skipped hf_llama_e2e_busy: past ALIGN_DEADLINE"; return 0; fi
  local ready
  ready=$(mktemp -u)
  $PY $M/gpu_hog.py --seconds 300 --ready "$ready" &
  local hog=$!
  for _ in $(seq 120); do [ -f "$ready" ] && break; sleep 0.5; done
  cap hf_llama_e2e_busy e2e attention -- $PY $M/hf_generate.py --model llama
  kill "$hog" 2>/dev/null || true
  wait "$hog" 2>/dev/null || true
}

# most telling first (ALIGN_DEADLINE=SECONDS stops starting new captures after that many seconds)
cap hf_llama_mock_fp32_batch mock attention --planted "two faults: float32 where the E2E run computes in bfloat16, and 8 requests where it has 4" \
  -- $PY $M/hf_attention_mock.py --model llama --dtype fp32 --batch 8
cap hf_llama_e2e e2e attention -- $PY $M/hf_generate.py --model llama --record-inputs
busy
cap hf_llama_mock mock attention -- $PY $M/hf_attention_mock.py --model llama --record-inputs
cap hf_dsa_mock_fp32_batch mock dsa --planted "two faults: float32 where the E2E run computes in bfloat16, and 8 requests where it has 4" \
  -- $PY $M/hf_attention_mock.py --model dsa --dtype fp32 --batch 8
cap hf_dsa_e2e e2e dsa -- $PY $M/hf_generate.py --model dsa --record-inputs
cap hf_dsa_mock mock dsa -- $PY $M/hf_attention_mock.py --model dsa --record-inputs
echo "captured in $((SECONDS - T0)) s"
