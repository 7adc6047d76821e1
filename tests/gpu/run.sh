#!/usr/bin/env bash
# GPU check (needs an NVIDIA GPU with a driver). Builds Parley with the cuda
# plugin, then:
#  1. tests/gpu/gpu_check: every CUDA kernel against the cpu plugin on random
#     inputs, and attention timed against the H100 roofline;
#  2. whole models on the cuda device: the parity suite (every tiny family
#     against its transformers goldens: logits, greedy and beam tokens), the
#     F16 KV cache suite (the tensor-core attention kernel serving F32 models),
#     the serving engine's suite (paged KV in device memory, batches against
#     each request alone) and the text C API suite (demo translation and chat
#     models, exact texts);
#  3. end-to-end greedy decode of the demo dialogue model, cuda next to cpu
#     in the same run (a 7.5 MB model: this measures per-step overhead —
#     launches, copies, the host decoding loop — not memory bandwidth).
# Without a GPU it reports "skipped" (exit 77) after step 1. Nothing here has
# been run on a GPU by the authors yet; see plugins/cuda/README.md.
#   bash tests/gpu/run.sh [BUILD_DIR]
set -uo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DPARLEY_CUDA=ON >/dev/null || exit 1
fi
cmake --build "$build" --target gpu_check parley_cuda parley_cpu test_model test_engine test_text_api parley_bench \
  -j"$(nproc)" || exit 1
plugins="$build/lib/parley/plugins"

echo "== 1. kernels against the cpu plugin"
# The cpu plugin is the reference: its int8 / bf16 activation paths off
# (PARLEY_CPU_EXACT=1), as tests/simt compares with it.
PARLEY_CPU_EXACT=1 "$build/tests/gpu/gpu_check" "$plugins/libparley_cuda.so"
rc=$?
[ $rc -eq 77 ] && exit 77
failed=$((rc != 0))

export PARLEY_PLUGIN_BUILD_DIR="$plugins" PARLEY_PLUGIN_PATH= PARLEY_TEST_DEVICE=cuda
export PARLEY_PARITY_DIR="$PWD/tests/parity" PARLEY_TOKENIZER_DIR="$PWD/tests/tokenizers"
export PARLEY_DEMO_MODELS="$PWD/samples/support-bot/models"
echo "== 2. whole models on the cuda device"
"$build/tests/model/test_model" --gtest_filter='Families/Parity.*' || failed=1
# F16 and I8 KV caches on cuda: the tensor-core attention kernel with F32
# queries, and the SIMT split-KV kernel over int8 rows with their scales
# (decode with GQA packing and splits, the fused append, beam reorders).
PARLEY_TEST_KV_DTYPES=f16,int8 "$build/tests/model/test_model" --gtest_filter='Models/KvCache.*' || failed=1
# The serving engine on cuda (its paged KV pool in device memory): every
# family's goldens and batches against each request alone, with F32 and I8
# caches (the SIMT kernel) and F16 ones (the tensor-core kernel).
"$build/tests/model/test_engine" \
  --gtest_filter='Families/EngineParity.*:Families/EngineFamilies.*:EngineBatching.*' || failed=1
# 16-bit activations on cuda (parley_model_options.activation_dtype): the F16
# / BF16 row kernels, LINEAR with 16-bit inputs and the tensor-core attention
# over a cache of the same type; every family near its F32 logits, greedy and
# beam, then the engine's batches against each request alone.
"$build/tests/model/test_model" --gtest_filter='Activations16Bit.*:Families/Activations16BitFamily.*' || failed=1
PARLEY_TEST_ACTIVATIONS=f16,bf16 "$build/tests/model/test_engine" \
  --gtest_filter='Families/EngineFamilies.*_activations*' || failed=1
PARLEY_TEST_ACTIVATIONS=f16 "$build/tests/text_api/test_text_api" || failed=1  # exact texts: F16 only (see tests/device_guard)
"$build/tests/text_api/test_text_api" || failed=1

echo "== 3. end-to-end decode, demo dialogue model (greedy, 1 sequence, 128-token prompt, 256 new tokens)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prompt=$(python3 -c 'print([1 + (i * 37) % 500 for i in range(128)])')
for dev in cpu cuda; do
  cat >"$tmp/$dev.json" <<EOF
{"model": "$PARLEY_DEMO_MODELS/support-llama.parley", "plugin_dir": "$plugins", "threads": 0,
 "repeats": 5, "device": "$dev", "workload": "llm", "prompt": $prompt, "eos_token_id": 0,
 "decode_tokens": 256}
EOF
  "$build/tests/bench/parley_bench" "$tmp/$dev.json" >"$tmp/$dev.out" || failed=1
done
python3 - "$tmp" <<'EOF'
import json, sys
d = sys.argv[1]
rows = {dev: json.load(open(f"{d}/{dev}.out"))["result"] for dev in ("cpu", "cuda")}
print(f"{'device':8} {'prefill tok/s':>14} {'decode tok/s':>13}")
for dev, r in rows.items():
    print(f"{dev:8} {r['prefill_tokens_per_s']:14.0f} {r['decode_tokens_per_s']:13.1f}")
print(f"cuda/cpu decode: {rows['cuda']['decode_tokens_per_s'] / rows['cpu']['decode_tokens_per_s']:.2f}x")
EOF
exit $failed
