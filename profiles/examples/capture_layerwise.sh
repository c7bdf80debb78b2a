#!/usr/bin/env bash
# Capture E2E runs as the engines' layer-wise switches mark them, MoE pairs and compiled runs, all of
# transformers' own models (capture_common.sh's capture(), with `nsys stats` oracles of each file):
#   - E2E runs whose NVTX ranges are written as TensorRT-LLM's, vLLM's and SGLang's layer-wise markers
#     write them (align.annotate.layerwise_markers: dict-string texts, every module nested, output markers);
#   - DeepSeek-V3 (MLA + MoE, a first dense layer) and Qwen3-MoE generate(), against their own MoE
#     blocks standalone: aligned, and planted faults (fp32, experts run by the loop, another top-k, a
#     bigger batch);
#   - a torch.compile'd Llama generate() (static cache, Inductor, CUDA graphs), and the Llama attention
#     mock compiled the same way.
# Run from the repository root on a GPU machine (transformers >= 5.23 in .whl/, scripts/gpu-env.sh):
#   profiles/examples/capture_layerwise.sh [OUT_DIR]          # SETS="markers moe" by default
# SETS: markers (DSA and Llama with markers), moe (the DeepSeek-V3 MoE set), qwen (the Qwen3-MoE
# pair), compiled (the compiled Llama pair), base (the plain-named DSA and Llama pairs again, for a
# card other than the one that captured the shipped ones). ALIGN_DEADLINE=SECONDS stops starting new
# captures after that many seconds. profiles/examples/layerwise/pack.sh OUT_DIR packs the captures as
# they are shipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-profiles/examples}
. profiles/examples/capture_common.sh
M=mock/examples
# DeepSeek-V3's MoE layers: the E2E run's shape (4 requests of 512, 8 new tokens, 3 layers: one dense)
MOE="--layers 3 --new-tokens 8"

for set in ${SETS:-markers moe}; do
  case $set in
    markers)
      # the same runs as hf_dsa_e2e and hf_llama_e2e, marked as TensorRT-LLM's and vLLM's switches mark them
      cap hf_dsa_e2e_trtllm e2e dsa -- $PY $M/hf_generate.py --model dsa --markers trtllm
      cap hf_llama_e2e_vllm e2e attention -- $PY $M/hf_generate.py --model llama --markers vllm ;;
    moe)
      cap hf_moe_mock_fp32 mock moe --planted "another dtype: float32 where the E2E run computes in bfloat16" \
        -- $PY $M/hf_moe_mock.py --model moe --dtype fp32
      cap hf_moe_mock_eager mock moe --planted "experts run one by one in a loop (experts_implementation=eager) where the E2E run uses one grouped GEMM" \
        -- $PY $M/hf_moe_mock.py --model moe --experts-impl eager --iters 2 --warmup 1
      cap hf_moe_mock_topk mock moe --planted "a wrong num_experts_per_tok: 4 where the model routes each token to 8" \
        -- $PY $M/hf_moe_mock.py --model moe --top-k 4
      cap hf_moe_mock_batch mock moe --planted "a wrong batch: 16 requests where the E2E run has 4" \
        -- $PY $M/hf_moe_mock.py --model moe --batch 16
      cap hf_moe_mock_grouped mock moe --planted "experts on grouped_mm in the decode too, where generate() switches them to batched_mm" \
        -- $PY $M/hf_moe_mock.py --model moe --experts-impl grouped_mm
      cap hf_moe_mock mock moe -- $PY $M/hf_moe_mock.py --model moe --record-inputs
      cap hf_moe_e2e_sglang e2e moe -- $PY $M/hf_generate.py --model moe $MOE --markers sglang
      cap hf_moe_e2e e2e moe -- $PY $M/hf_generate.py --model moe $MOE ;;
    qwen)
      cap hf_qwen3moe_mock mock moe -- $PY $M/hf_moe_mock.py --model qwen3moe --record-inputs
      cap hf_qwen3moe_e2e_vllm e2e moe -- $PY $M/hf_generate.py --model qwen3moe $MOE --markers vllm
      cap hf_qwen3moe_e2e e2e moe -- $PY $M/hf_generate.py --model qwen3moe $MOE ;;
    compiled)
      # compiled and graphs recorded in a warm-up generate() outside the cudaProfilerApi capture
      cap hf_llama_mock_compiled mock attention -- $PY $M/hf_attention_mock.py --model llama --compile
      cap hf_llama_e2e_compiled e2e attention --capture-range cudaProfilerApi \
        -- $PY $M/hf_generate.py --model llama --compile --markers vllm --profiler-api ;;
    base)
      cap hf_dsa_mock mock dsa -- $PY $M/hf_attention_mock.py --model dsa --record-inputs
      cap hf_dsa_e2e e2e dsa -- $PY $M/hf_generate.py --model dsa --record-inputs
      cap hf_llama_mock mock attention -- $PY $M/hf_attention_mock.py --model llama --record-inputs
      cap hf_llama_e2e e2e attention -- $PY $M/hf_generate.py --model llama --record-inputs ;;
    *) echo "unknown set $set: use markers, moe, qwen, compiled or base" >&2; exit 2 ;;
  esac
done
echo "captured in $((SECONDS - T0)) s"
