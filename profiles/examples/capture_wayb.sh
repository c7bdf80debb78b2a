#!/usr/bin/env bash
# Our way-B DSA mock (align_mock.dsa, written from DeepSeek-V3.2-Exp's inference/model.py) at the
# shape of hf_dsa_e2e (transformers' generate() of DeepSeek-V3.2, width 7168, TP 8: 16 local heads, batch 4,
# prompt 512, decode at ~520 cached tokens), captured as an aux profile (never picked as the newest
# mock of `align verdict --op dsa`), to show and explain how it differs from the independent
# reference:  align diff profiles/examples/wayb_dsa_mock profiles/examples/hf_dsa_e2e --op dsa
#   profiles/examples/capture_wayb.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-profiles/examples}
. profiles/examples/capture_common.sh
capture wayb_dsa_mock aux dsa -- $PY mock/examples/dsa_mock.py --config v32 --tp 8 --batch 4 --seq 512 --kv-len 520
# the same, following transformers where the choice is ours: fp32 indexer scores, an unfused RMSNorm
capture wayb_dsa_mock_follow aux dsa -- $PY mock/examples/dsa_mock.py --config v32 --tp 8 --batch 4 --seq 512 \
  --kv-len 520 --index-scores fp32 --rms-norm unfused
