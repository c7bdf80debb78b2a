#!/usr/bin/env bash
# Pack a capture_layerwise.sh output folder as shipped here: three tarballs of store entries (SQLite
# export, meta.json, nsys.log, the nsys stats oracles; no .nsys-rep: the checkout must stay small
# enough to travel to the GPU machine). Usage: profiles/examples/layerwise/pack.sh CAPTURE_DIR
set -euo pipefail
src=${1:?usage: pack.sh CAPTURE_DIR}
out=$(cd "$(dirname "$0")" && pwd)
pack() {
  local name=$1; shift
  tar -C "$src" --sort=name --owner=0 --group=0 --mtime=2026-12-07 --exclude=report.nsys-rep --exclude=report.qdstrm \
    -czf "$out/$name.tar.gz" "$@"
}
pack markers hf_dsa_mock hf_dsa_e2e hf_dsa_e2e_trtllm hf_llama_mock hf_llama_e2e hf_llama_e2e_vllm
pack compiled hf_llama_mock_compiled hf_llama_e2e_compiled hf_llama_mock
pack moe $(cd "$src" && ls -d hf_moe_* hf_qwen3moe_*)
ls -la "$out"/*.tar.gz
