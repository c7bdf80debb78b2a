#!/usr/bin/env bash
# Capture a real server, transformers serve (issue 30), under `align profile e2e --serve` with the
# seed's system-wide flags, delay and duration, in two modes (one generate() per request; continuous
# batching), the LlamaAttention mock of the same dimensions beside them, and probes of DeepSeek-V3.2
# under both modes (server log and the first answer, no capture). Each capture gets the `nsys stats`
# oracles of its SQLite file (capture_common.sh).
# On a GPU machine, from the repository root, with transformers >= 5.23 in .whl/ and the server's
# wheels (../shared/wheels/serve) in .whl/serve/:
#   ALIGN_WHEELS=".whl .whl/serve" profiles/examples/capture_serve.sh [OUT_DIR]
# profiles/examples/serve/pack.sh OUT_DIR packs them as shipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-profiles/examples}
. profiles/examples/capture_common.sh
M=mock/examples
MODELS=${MODELS_DIR:-/tmp/align-models}
LOAD=${LOAD:-requests=16,concurrency=4,input=128,output=16}
DELAY=${DELAY:-30}
DURATION=${DURATION:-20}

$PY $M/hf_serve_model.py --model llama --layers 4 --out "$MODELS/llama"

# servecap NAME PRESET [FLAGS]: one served capture, tried again without system-wide CPU sampling when
# the machine refuses it (the flags used are in the entry's meta.json)
servecap() {
  local name=$1 preset=$2; shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  if late; then echo "skipped $name: past ALIGN_DEADLINE"; return 0; fi
  local dir=$OUT_DIR/$name
  local run=($PY -m align profile e2e --serve --preset "$preset" --model "$MODELS/llama" --op attention --port 8123
    --delay "$DELAY" --duration "$DURATION" --load "$LOAD" --report-timeout 120 --ready-timeout 240
    --store "$OUT_DIR" --name "$name" --overwrite "$@")
  "${run[@]}" || echo "status of $name: $?"
  if [ ! -f "$dir/report.sqlite" ]; then
    echo "no SQLite for $name: again without system-wide sampling"
    "${run[@]}" --sample none --cpuctxsw none || echo "status of $name: $?"
  fi
  [ -f "$dir/report.sqlite" ] && oracles "$dir"
  ls -la "$dir" || true
}

# probe MODEL PRESET: does transformers serve load and answer with this model? (no nsys; the server
# log and the first answer go to probe_MODEL_PRESET.log)
probe() {
  local model=$1 preset=$2 log=$OUT_DIR/probe_${1}_${2}.log
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" probe_${model}_${preset} "* ]]; then return 0; fi
  if late; then echo "skipped probe $model $preset: past ALIGN_DEADLINE"; return 0; fi
  [ -d "$MODELS/$model" ] || $PY $M/hf_serve_model.py --model "$model" --small --layers 2 --out "$MODELS/$model" >> "$log" 2>&1
  timeout 300 $PY - "$preset" "$MODELS/$model" >> "$log" 2>&1 <<'PY' || echo "probe $model $preset: exit $?" >> "$log"
import json, os, shlex, subprocess, sys, urllib.error, urllib.request
from align.capture.serve import preset_command
from align.capture.load import wait_ready, answer_body
cmd, p = preset_command(sys.argv[1], sys.argv[2], 1, 8124)
print("$", shlex.join(cmd), flush=True)
server = subprocess.Popen(cmd, env={**os.environ, **p["env"]})
try:
    print("ready after", round(wait_ready("http://127.0.0.1:8124/health", 240, alive=lambda: server.poll() is None), 1), "s", flush=True)
    body = json.dumps({"model": sys.argv[2], "prompt": "w1 w2 w3 w4 w5 w6 w7 w8", "max_tokens": 4}).encode()
    req = urllib.request.Request("http://127.0.0.1:8124/v1/completions", data=body, headers={"Content-Type": "application/json"})
    try:
        print("--- answer:", urllib.request.urlopen(req, timeout=120).read().decode())
    except urllib.error.HTTPError as exc:
        print("--- answer: HTTP", exc.code, answer_body(exc, 2000))
except Exception as exc:
    print("--- failed:", exc)
finally:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
PY
  tail -5 "$log"
}

servecap hf_serve_llama transformers
servecap hf_serve_llama_cb transformers-cb
# the mock of one request's forward (plain mode: one generate() of one prompt) and of the server's batch
cap hf_serve_llama_mock mock attention -- $PY $M/hf_attention_mock.py --model llama --batch 1 --seq 128 --kv-len 136
cap hf_serve_llama_mock_b4 mock attention -- $PY $M/hf_attention_mock.py --model llama --batch 4 --seq 128 --kv-len 136
probe dsa transformers
probe dsa transformers-cb
echo "captured in $((SECONDS - T0)) s"
