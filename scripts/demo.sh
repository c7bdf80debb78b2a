#!/usr/bin/env bash
# The main job on the shipped real GPU profiles (H100/H200, captured by profiles/examples/capture*.sh):
# the mock layer's and the E2E model's kernels, the E2E run's GPU time by op, the attention op per
# forward in both (found by NVTX; in the graph-replayed decode at capture time), a diff, and the
# verdict: a planted misaligned mock fails, the real one passes.
# Needs no GPU and no nsys.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
export COLUMNS=${COLUMNS:-160}
A=".venv/bin/align"
S="--store profiles"
$A profiles $S
for p in examples/attn_mock examples/llama_e2e; do
  $A info "$p" $S
  $A kernels "$p" $S --name short --limit 12
done
$A nvtx examples/llama_e2e $S --limit 8
$A ops examples/llama_e2e $S
$A ops examples/llama_e2e $S --op attention --phase generation
$A ops examples/attn_mock $S --range '^mock_(context|generation)$' --phase generation
$A diff examples/attn_mock_count examples/llama_e2e $S --op attention --phase generation --sequence
# the answer: is the mock faithful to the E2E run? (a mock with a planted extra GEMM is not)
$A verdict --op attention --mock examples/attn_mock_count --e2e examples/llama_e2e $S || true
$A verdict --op attention --mock examples/attn_mock --e2e examples/llama_e2e $S
# an independent pair (H200): transformers' own generate() of DeepSeek-V3.2, whose ranges name no phase,
# against transformers' own DeepseekV32Attention; prefill and decode forwards are told apart by their kernels
$A verdict --op dsa --mock examples/hf_dsa_mock --e2e examples/hf_dsa_e2e $S
