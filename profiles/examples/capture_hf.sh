#!/usr/bin/env bash
# Capture the independent example pairs: transformers' own models end to end (generate(), no phase
# ranges, per-module NVTX only) against mocks built from transformers' own attention classes, an
# aligned one and planted faults; with the `nsys stats` oracles of each file (capture_common.sh).
#
# Run from the repository root on a GPU machine (transformers >= 5.23 for DeepSeek-V3.2; its wheel
# in .whl/ is installed by scripts/gpu-env.sh):
#   profiles/examples/capture_hf.sh [OUT_DIR]            # MODELS="llama dsa" by default
# `align verdict --op OP` without paths takes the newest comparable pair; the planted faults
# (--planted) are never taken, and the E2E variants come first, the main E2E run last.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-profiles/examples}
. profiles/examples/capture_common.sh
M=mock/examples

for model in ${MODELS:-llama dsa}; do
  op=attention; [ "$model" = dsa ] && op=dsa
  # planted faults: another dtype, another attention implementation, a sub-op left out, a wrong shape
  # (4x the prompt), a wrong batch (8 requests where the E2E run has 4)
  capture hf_${model}_mock_fp32 mock $op --planted "another dtype: float32 where the E2E run computes in bfloat16" -- $PY $M/hf_attention_mock.py --model $model --dtype fp32
  capture hf_${model}_mock_eager mock $op --planted "another attention implementation: eager softmax + bmm where the E2E run uses SDPA" -- $PY $M/hf_attention_mock.py --model $model --attn-impl eager
  capture hf_${model}_mock_missing mock $op --planted "a sub-op left out (rotary embedding / the indexer's top-k replaced by fixed indices)" -- $PY $M/hf_attention_mock.py --model $model --plant missing
  capture hf_${model}_mock_shape mock $op --planted "a wrong shape: 4x the prompt (2048 tokens where the E2E run has 512)" -- $PY $M/hf_attention_mock.py --model $model --seq 2048
  capture hf_${model}_mock_batch mock $op --planted "a wrong batch: 8 requests where the E2E run has 4" -- $PY $M/hf_attention_mock.py --model $model --batch 8
  if [ "$model" = dsa ]; then
    # E2E shaped as engines run: TensorRT-LLM step ranges (context, generation, mixed); two processes
    capture hf_dsa_e2e_steps e2e dsa -- $PY $M/hf_generate.py --model dsa --engine-steps
    capture hf_dsa_e2e_procs e2e dsa -- $PY $M/hf_generate.py --model dsa --procs 2 --layers 2 --new-tokens 8
    # on a machine of two GPUs or more: one process per GPU, as tensor-parallel ranks run
    if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
      capture hf_dsa_e2e_ranks e2e dsa -- $PY $M/hf_generate.py --model dsa --procs 2 --layers 2 --new-tokens 8
      # the same ranks in a torch.distributed NCCL group, all-reducing each layer's attention output
      capture hf_dsa_e2e_tp e2e dsa -- $PY $M/hf_generate.py --model dsa --procs 2 --distributed --layers 2 \
        --new-tokens 8
    fi
  fi
  capture hf_${model}_mock mock $op -- $PY $M/hf_attention_mock.py --model $model --record-inputs
  capture hf_${model}_e2e e2e $op -- $PY $M/hf_generate.py --model $model --record-inputs
done
