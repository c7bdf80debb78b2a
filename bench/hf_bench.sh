#!/usr/bin/env bash
# align bench --framework transformers (seed 000 way A): transformers' own module inside its
# DeepSeek decoder layer against the same class built standalone, same weights and inputs, at
# DeepSeek-V3.2's per-head dims, TP 1 and 8, context and generation; one JSON per shape into OUT_DIR
# (default profiles/examples/hf_bench). On a GPU machine, with the transformers >= 5.23 wheel in .whl/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-profiles/examples/hf_bench}
mkdir -p "$OUT_DIR"
[ -n "${ALIGN_GPU_ENV_DONE:-}" ] || . scripts/gpu-env.sh
PY=${PYTHON:-python3}
run() {  # name, op, then align bench arguments
  local name=$1 op=$2; shift 2
  echo "== $name: align bench --framework transformers --op $op $*" >&2
  $PY -m align bench --framework transformers --op "$op" "$@" --format json > "$OUT_DIR/$name.json" \
    || echo "$name failed (exit $?)" >&2
}
run dsa_ctx_tp1_b1_s4096 dsa --phase context --tp 1 --batch 1 --seq 4096
run dsa_ctx_tp8_b1_s4096 dsa --phase context --tp 8 --batch 1 --seq 4096
run dsa_gen_tp1_b32_kv8192 dsa --phase generation --tp 1 --batch 32 --kv-len 8192
run dsa_gen_tp8_b64_kv8192 dsa --phase generation --tp 8 --batch 64 --kv-len 8192
run mla_ctx_tp8_b1_s4096 mla --phase context --tp 8 --batch 1 --seq 4096
run mla_gen_tp8_b64_kv8192 mla --phase generation --tp 8 --batch 64 --kv-len 8192
run moe_ctx_tp8_b1_s4096 moe --phase context --tp 8 --batch 1 --seq 4096
run moe_gen_tp8_b64 moe --phase generation --tp 8 --batch 64
