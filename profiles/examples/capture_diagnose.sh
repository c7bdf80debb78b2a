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

for model in llama dsa; do
  op=attention; [ "$model" = dsa ] && op=dsa
  capture hf_${model}_mock_fp32_batch mock $op --planted "two faults: float32 where the E2E run computes in bfloat16, and 8 requests where it has 4" \
    -- $PY $M/hf_attention_mock.py --model $model --dtype fp32 --batch 8
  capture hf_${model}_mock mock $op -- $PY $M/hf_attention_mock.py --model $model --record-inputs
  capture hf_${model}_e2e e2e $op -- $PY $M/hf_generate.py --model $model --record-inputs
done

# the E2E run beside a competing process: started first, ended by its id once the capture is done
ready=$(mktemp -u)
$PY $M/gpu_hog.py --seconds 300 --ready "$ready" &
hog=$!
for _ in $(seq 120); do [ -f "$ready" ] && break; sleep 0.5; done
capture hf_llama_e2e_busy e2e attention -- $PY $M/hf_generate.py --model llama
kill "$hog" 2>/dev/null || true
wait "$hog" 2>/dev/null || true
