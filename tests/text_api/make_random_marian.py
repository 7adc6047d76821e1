"""Writes tests/text_api/random_marian.parley: a random-weight Marian model
(1 encoder and 1 decoder layer, hidden size 16, 48 positions) with the
tokenizers of the demo de->en model (samples/support-bot/models). Its output is
meaningless, which is the point: tests/text_api/test_translate_protect.c checks
that protected spans survive exactly once whatever a model produces, and its
48 positions make long-text splitting easy to reach.

Regenerate (numpy only):
  PYTHONPATH=formats/python build/venv/bin/python tests/text_api/make_random_marian.py
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "parity"))
sys.path.insert(0, os.path.join(ROOT, "formats", "python"))

from restore import _fields, _tokenizers  # noqa: E402
from parley_format import read_header, tensor_infos, write_model  # noqa: E402
from parley_format.convert.storage import store  # noqa: E402
from parley_format.convert.verify import config_from_header  # noqa: E402
from parley_format.types import GenerationConfig  # noqa: E402

SEED = 1313
HIDDEN, FFN, HEADS, POSITIONS = 16, 32, 2, 48


def main() -> None:
    src = os.path.join(ROOT, "samples", "support-bot", "models", "opus-mt-de-en.parley")
    dst = os.path.join(HERE, "random_marian.parley")
    header = read_header(src)
    cfg = config_from_header(header)
    old_h, old_f, old_p = cfg.encoder.hidden_size, cfg.encoder.ffn_size, cfg.encoder.max_positions
    stack = dict(num_layers=1, hidden_size=HIDDEN, num_heads=HEADS, ffn_size=FFN, max_positions=POSITIONS,
                 embedding_scale=float(np.sqrt(HIDDEN)))
    cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, **stack),
                              decoder=dataclasses.replace(cfg.decoder, **stack))
    rng = np.random.default_rng(SEED)
    tensors = {}
    for info in tensor_infos(header):
        if ".layers." in info.name and ".layers.0." not in info.name:
            continue
        shape = list(info.shape)
        if "embed_positions" in info.name:
            shape = [POSITIONS, HIDDEN]
        else:
            shape = [HIDDEN if d == old_h else FFN if d == old_f else d for d in shape]
        if info.name.endswith("norm.weight"):
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            value = 0.5 * rng.standard_normal(shape)
        tensors.update(store(info.name, value.astype(np.float32), "float32"))
    del old_p
    gen = GenerationConfig(**_fields(header.Generation(), GenerationConfig))
    gen = dataclasses.replace(gen, num_beams=2, max_length=POSITIONS)
    write_model(dst, cfg, tensors, tokenizers=_tokenizers(src, header), generation=gen,
                metadata={"source": "tests/text_api/make_random_marian.py (random weights, seed %d)" % SEED})
    print(dst, os.path.getsize(dst), "bytes")


if __name__ == "__main__":
    main()
