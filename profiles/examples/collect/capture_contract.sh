#!/usr/bin/env bash
# A collector module `align collect --export-module` writes, driven on a GPU the way aiconfigurator's
# collect.py drives a module (tests/programs/collect_py_driver.py: import by path, get_*_test_cases,
# run_<op>(*case, device) in a spawned worker per GPU), and `align collect` of the same cases;
# tests/test_gpu_results.py compares the two sets of rows. On an H200:
#   profiles/examples/collect/capture_contract.sh [NAME ...]   (default: dsa)
# NAME: dsa (written to contract/), mla, moe, dsa_transformers, mla_transformers (to contract_NAME/).
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
PY=${PYTHON:-python3}
[ -n "${ALIGN_GPU_ENV_DONE:-}" ] || . scripts/gpu-env.sh
STORE=$(mktemp -d)  # no verdict recorded here: --force, and the export and the collection say so
ATTN_CTX='[1024,1,8],[1024,8,8],[4096,1,8],[4096,8,8]'
ATTN_GEN='[2048,1,8],[2048,8,8],[8192,1,8],[8192,8,8]'
# MLA's context [seq, batch, tp] and generation [kv_len, batch, tp] look alike: name the phase
MLA_ONLY='[[1024,1,8,"context"],[1024,8,8,"context"],[4096,1,8,"context"],[4096,8,8,"context"],
[2048,1,8,"generation"],[2048,8,8,"generation"],[8192,1,8,"generation"],[8192,8,8,"generation"]]'
ATTN_CASES=(--cases seq=1024,4096 --cases batch=1,8 --cases tp=8 --cases kv_len=2048,8192)

one() {  # NAME OP FRAMEWORK ONLY [--cases ...]
  local name=$1 op=$2 framework=$3 only=$4
  shift 4
  local out=profiles/examples/collect/contract${name:+_$name}
  [ "$name" = dsa ] && out=profiles/examples/collect/contract
  rm -rf "$out" && mkdir -p "$out/driver"
  local out_abs
  out_abs=$(cd "$out" && pwd)
  $PY -m align collect --op "$op" --framework "$framework" --export-module "$out/collector" --force \
    --store "$STORE" --format json > "$out/export.json"
  (cd "$out/driver" && COLLECTOR_MEASURE_POWER=1 $PY "$ROOT/tests/programs/collect_py_driver.py" \
    "$out_abs/collector/collect_$op.py" "$op" cuda:0 --only "$only")
  $PY -m align collect --op "$op" --framework "$framework" --force --store "$STORE" --out "$out/align" --power \
    --gpus 1 "$@" --format json > "$out/collect.json"
  $PY -m align collect --op "$op" --framework "$framework" --out "$out/align" --check --format json \
    > "$out/check.json" || true
  echo "contract $name: $(cat "$out"/driver/*perf.txt | wc -l) driver lines (headers included)" >&2
}

for name in "${@:-dsa}"; do
  case $name in
    dsa) one dsa dsa align "[${ATTN_CTX//,8]/,8,0]},$ATTN_GEN]" "${ATTN_CASES[@]}" --cases prefix=0 ;;
    dsa_transformers) one "$name" dsa transformers "[${ATTN_CTX//,8]/,8,0]},$ATTN_GEN]" "${ATTN_CASES[@]}" \
      --cases prefix=0 ;;
    mla) one mla mla align "$MLA_ONLY" "${ATTN_CASES[@]}" ;;
    mla_transformers) one "$name" mla transformers "$MLA_ONLY" "${ATTN_CASES[@]}" ;;
    moe) one moe moe align '[[64,1,8,"balanced"],[1024,1,8,"balanced"],[64,1,8,"power_law_1.01"],[1024,1,8,"power_law_1.01"]]' \
      --cases tokens=64,1024 --cases tp=1 --cases ep=8 --cases distribution=balanced,power_law_1.01 ;;
    *) echo "unknown contract $name: dsa, mla, moe, dsa_transformers or mla_transformers" >&2; exit 2 ;;
  esac
done
