#!/usr/bin/env bash
# Pack a capture_serve.sh output folder as shipped here: one tarball of store entries (SQLite export,
# meta.json, nsys.log, the nsys stats oracles; no .nsys-rep) and the DeepSeek-V3.2 probe logs.
# Usage: profiles/examples/serve/pack.sh CAPTURE_DIR
set -euo pipefail
src=${1:?usage: pack.sh CAPTURE_DIR}
out=$(cd "$(dirname "$0")" && pwd)
entries=$(cd "$src" && for e in hf_serve_llama hf_serve_llama_cb hf_serve_llama_mock hf_serve_llama_mock_b4; do
  [ -d "$e" ] && echo "$e"; done; ls probe_*.log 2>/dev/null || true)
tar -C "$src" --sort=name --owner=0 --group=0 --mtime=2026-12-07 --exclude=report.nsys-rep --exclude=report.qdstrm \
  --exclude=report.incomplete.qdstrm -czf "$out/serve.tar.gz" $entries
ls -la "$out"/*.tar.gz
