#!/usr/bin/env bash
# Converts the trained demo models (build/demo-train, from train_*.py) into
# the committed samples/support-bot/models/*.parley (float16 weights, with
# their tokenizers and chat format), and copies the shop policy the
# dialogue model was trained with (the bot's system prompt).
#   bash samples/support-bot/train/convert_models.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/../../.."
py=${1:-.venv/bin/python}
out=samples/support-bot/models
mkdir -p "$out"
for m in opus-mt-de-en opus-mt-en-de support-llama; do
  PYTHONPATH=formats/python "$py" -m parley_format.convert build/demo-train/$m "$out/$m.parley" \
    --dtype float16 --force --quiet
done
cp samples/support-bot/train/policy.txt "$out/policy.txt"
ls -l "$out"
