#!/usr/bin/env bash
# Seed corpus for fuzz_model_loader: the reference test models plus a few
# small hand-made starts (empty, preamble only, truncated header).
# Usage: make_seed_corpus.sh PYTHON OUT_DIR
set -euo pipefail
py=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
"$py" "$here/../data/make_test_models.py" "$out" >/dev/null
printf '' >"$out/empty"
head -c 64 "$out/tiny_decoder.parley" >"$out/preamble_only"
head -c 600 "$out/tiny_decoder.parley" >"$out/truncated_header"
# Files with tokenizers and chat formats (the target also builds and runs them).
for f in gpt2 llama3 qwen2 qwen3 mistral; do
  cp "$here/../tokenizers/files/$f.parley" "$out/tokenizer_$f.parley"
done
# Marian with separate source and target vocabularies (format 1.3: the
# target tokenizer's ids are decoder ids).
cp "$here/../parity/models/marian_separate_text.parley" "$out/marian_separate_text.parley"
