#!/usr/bin/env python3
"""Converts the Hugging Face tokenizer fixtures (tests/tokenizers/hf/<family>,
built by make_tokenizer_fixtures.py) into tokenizer-only Parley files
(tests/tokenizers/files/<family>.parley) with the converter's own export
(parley_format.convert.text), so the C++ parity test
(tests/tokenizers/test_tokenizers.cpp) checks the whole path: HF folder ->
converter -> file -> runtime tokenizer vs. AutoTokenizer's goldens.

The files hold a placeholder one-layer config sized to the tokenizer and no
tensors ("Runnable: NO"): only their tokenizers and chat formats are used.

    .venv/bin/python tests/tokenizers/make_tokenizer_files.py   # needs transformers
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "formats", "python"))

import parley_format as pf  # noqa: E402
from parley_format.convert.text import export_text  # noqa: E402

TRANSLATION = {"marian", "m2m100", "nllb", "mbart", "bart"}


def stack(max_positions: int) -> pf.StackConfig:
    return pf.StackConfig(num_layers=1, hidden_size=8, num_heads=1, num_kv_heads=1, head_dim=8, ffn_size=8,
                          activation=pf.Activation.ReLU, norm=pf.NormKind.LayerNorm, norm_epsilon=1e-5,
                          position=pf.PositionKind.Learned, max_positions=max_positions)


def main() -> int:
    from transformers import AutoTokenizer
    families = sorted(os.listdir(os.path.join(HERE, "hf")))
    os.makedirs(os.path.join(HERE, "files"), exist_ok=True)
    for fam in families:
        hf = os.path.join(HERE, "hf", fam)
        tok = AutoTokenizer.from_pretrained(hf)
        langs = getattr(tok, "lang_code_to_id", None) or {}
        vocab = max(max(tok.get_vocab().values()), max(tok.added_tokens_decoder, default=0),
                    max(langs.values(), default=0)) + 1
        seq2seq = fam in TRANSLATION
        text = export_text(hf, vocab, encoder_decoder=seq2seq)
        cfg = pf.ModelConfig(architecture=f"tokenizer-fixture:{fam}",
                             kind=pf.ModelKind.EncoderDecoder if seq2seq else pf.ModelKind.DecoderOnly,
                             vocab_size=vocab, decoder=stack(1024), encoder=stack(1024) if seq2seq else None)
        out = os.path.join(HERE, "files", f"{fam}.parley")
        pf.write_model(out, cfg, {}, tokenizers=text.tokenizers, chat_template=text.chat_template,
                       chat_format=text.chat_format, metadata={"fixture": fam})
        cf = "chat format" if text.chat_format else "no chat"
        print(f"{out}: {len(text.tokenizers)} tokenizer(s), {cf}, {os.path.getsize(out)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
