#!/usr/bin/env bash
# One committed top-k trace: `align trace topk run ARGS...` into a fresh folder, its summary as the CLI
# prints it, run_meta/summary/requests beside the tarred shards in OUT_DIR. Called by the capture
# scripts of profiles/examples/trace, trace_hf and trace_hf_long (after scripts/gpu-env.sh):
#   profiles/examples/trace/topk_run.sh OUT_DIR ARGS...
set -euo pipefail
OUT_DIR=$1
shift
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
TOPK=$(mktemp -d)/topk
$PY -m align trace topk run --out "$TOPK" --format json "$@" > "$OUT_DIR/run.json"
$PY -m align trace topk summary "$TOPK" --format json > "$OUT_DIR/topk_summary_cli.json"
cp "$TOPK"/run_meta.json "$TOPK"/summary.json "$TOPK"/requests.jsonl "$OUT_DIR/"
tar -C "$(dirname "$TOPK")" -czf "$OUT_DIR/topk_trace.tar.gz" topk
ls -la "$OUT_DIR"
