#!/usr/bin/env bash
# Seed corpus for fuzz_sentencepiece: the real SentencePiece protos of the
# tokenizer fixtures (tests/tokenizers/hf), each behind the selector byte of
# the fixture table it belongs to (the order in fuzz_sentencepiece.cpp).
# Usage: make_sentencepiece_seeds.sh OUT_DIR
set -euo pipefail
out=$1
hf=$(cd "$(dirname "$0")/../tokenizers/hf" && pwd)
mkdir -p "$out"
i=0
for f in nllb/sentencepiece.bpe.model mbart/sentencepiece.bpe.model m2m100/sentencepiece.bpe.model \
  marian/source.spm marian/target.spm mistral/tokenizer.model; do
  { printf "\\x$(printf %02x $i)"; cat "$hf/$f"; } >"$out/$i-${f//\//-}"
  i=$((i + 1))
done
