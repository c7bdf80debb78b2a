#!/usr/bin/env bash
# Pack a capture_diagnose.sh output folder as shipped here: one tarball of store entries (SQLite
# export, meta.json, nsys.log, the nsys stats oracles; no .nsys-rep, so that the checkout stays small
# enough to travel to the GPU machine). Usage: profiles/examples/diagnose/pack.sh CAPTURE_DIR
set -euo pipefail
src=${1:?usage: pack.sh CAPTURE_DIR}
out=$(cd "$(dirname "$0")" && pwd)
entries=$(cd "$src" && for e in hf_llama_mock_fp32_batch hf_llama_e2e hf_llama_e2e_busy hf_llama_mock \
  hf_dsa_mock_fp32_batch hf_dsa_e2e hf_dsa_mock; do [ -f "$e/report.sqlite" ] && echo "$e"; done)
tar -C "$src" --sort=name --owner=0 --group=0 --mtime=2026-12-07 --exclude=report.nsys-rep --exclude=report.qdstrm \
  -czf "$out/diagnose.tar.gz" $entries
ls -la "$out"/*.tar.gz
