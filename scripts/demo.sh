#!/usr/bin/env bash
# The main job on the shipped real GPU profiles (H100, captured by profiles/examples/capture.sh):
# what each profile holds and its kernel summary, mock layer next to the E2E model. Needs no GPU
# and no nsys.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
export COLUMNS=${COLUMNS:-160}
A=.venv/bin/align
$A profiles --store profiles
for p in examples/attn_mock examples/llama_e2e; do
  $A info "$p" --store profiles
  $A kernels "$p" --store profiles --name short --limit 12
done
