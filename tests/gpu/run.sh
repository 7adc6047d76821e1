#!/usr/bin/env bash
# GPU check (needs an NVIDIA GPU with a driver): builds Parley with the cuda
# plugin and runs tests/gpu/gpu_check, which compares CUDA kernels with the
# cpu plugin on random inputs and times attention against the H100 roofline.
# On a machine without a GPU it reports "skipped" (exit 77).
#   bash tests/gpu/run.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DPARLEY_CUDA=ON >/dev/null
fi
cmake --build "$build" --target gpu_check parley_cuda -j"$(nproc)"
exec "$build/tests/gpu/gpu_check" "$build/lib/parley/plugins/libparley_cuda.so"
