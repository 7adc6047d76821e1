#!/usr/bin/env python3
"""Writes the small Parley model files the C++ and Python tests use.

    python tests/data/make_test_models.py OUT_DIR [--big]

Deterministic: the same parley_format version writes byte-identical files.
See tests/data/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

try:
    import parley_format as pf
except ImportError:  # running from a checkout without `pip install -e formats/python`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "formats", "python"))
    import parley_format as pf

SEED = 20240601
SOURCE = "tests/data/make_test_models.py"

# --- tiny_decoder.parley: LlamaForCausalLM-shaped ---------------------------

DEC_VOCAB, DEC_HIDDEN, DEC_LAYERS, DEC_HEADS, DEC_KV, DEC_FFN = 64, 32, 2, 4, 2, 64
DEC_HEAD_DIM = DEC_HIDDEN // DEC_HEADS

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}</s>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_decoder_config() -> pf.ModelConfig:
    return pf.ModelConfig(
        architecture="LlamaForCausalLM",
        kind=pf.ModelKind.DecoderOnly,
        vocab_size=DEC_VOCAB,
        tie_word_embeddings=False,
        decoder=pf.StackConfig(
            num_layers=DEC_LAYERS,
            hidden_size=DEC_HIDDEN,
            num_heads=DEC_HEADS,
            num_kv_heads=DEC_KV,
            head_dim=DEC_HEAD_DIM,
            ffn_size=DEC_FFN,
            activation=pf.Activation.SiLU,
            gated_ffn=True,
            norm=pf.NormKind.RMSNorm,
            norm_placement=pf.NormPlacement.Pre,
            norm_epsilon=1e-6,
            qkv_bias=False,
            out_bias=False,
            ffn_bias=False,
            final_norm=True,
            position=pf.PositionKind.Rotary,
            max_positions=128,
            rope_theta=10000.0,
        ),
    )


def tiny_decoder_tensors(rng: np.random.Generator) -> dict:
    def w(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    kv_dim = DEC_KV * DEC_HEAD_DIM
    t = {
        "decoder.embed_tokens.weight": w(DEC_VOCAB, DEC_HIDDEN),
        "decoder.norm.weight": np.ones(DEC_HIDDEN, np.float32),
        "lm_head.weight": w(DEC_VOCAB, DEC_HIDDEN),
    }
    for i in range(DEC_LAYERS):
        p = f"decoder.layers.{i}."
        t[p + "input_layernorm.weight"] = np.ones(DEC_HIDDEN, np.float32)
        t[p + "post_attention_layernorm.weight"] = np.ones(DEC_HIDDEN, np.float32)
        t[p + "self_attn.q_proj.weight"] = w(DEC_HIDDEN, DEC_HIDDEN)
        t[p + "self_attn.k_proj.weight"] = w(kv_dim, DEC_HIDDEN)
        t[p + "self_attn.v_proj.weight"] = w(kv_dim, DEC_HIDDEN)
        t[p + "self_attn.o_proj.weight"] = w(DEC_HIDDEN, DEC_HIDDEN)
        t[p + "mlp.gate_proj.weight"] = w(DEC_FFN, DEC_HIDDEN)
        t[p + "mlp.up_proj.weight"] = w(DEC_FFN, DEC_HIDDEN)
        t[p + "mlp.down_proj.weight"] = w(DEC_HIDDEN, DEC_FFN)

    # Layer 1's down projection stored as int8 with per-output-channel scales.
    real = t.pop("decoder.layers.1.mlp.down_proj.weight")
    scales = (np.abs(real).max(axis=1) / 127.0).astype(np.float32)
    q = np.clip(np.rint(real / scales[:, None]), -127, 127).astype(np.int8)
    t["decoder.layers.1.mlp.down_proj.weight"] = pf.Quantized(
        q,
        pf.Quantization(
            scheme=pf.QuantScheme.SymmetricPerChannel,
            axis=0,
            scale_tensor="decoder.layers.1.mlp.down_proj.weight_scale",
        ),
    )
    t["decoder.layers.1.mlp.down_proj.weight_scale"] = scales
    return t


def tiny_bpe_json() -> bytes:
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<|end|>": 3}
    for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz .,!?'"):
        vocab[ch] = 4 + i
    merges = ["a b", "t h", "th e", "i n", "e r", "o n", "a n", "r e"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    assert len(vocab) <= DEC_VOCAB
    doc = {"model": {"type": "BPE", "vocab": vocab, "merges": merges}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def write_tiny_decoder(path: str) -> dict:
    rng = np.random.default_rng(SEED)
    return pf.write_model(
        path,
        tiny_decoder_config(),
        tiny_decoder_tensors(rng),
        tokenizers=[
            pf.Tokenizer(
                kind=pf.TokenizerKind.ByteLevelBPE,
                role=pf.TokenizerRole.Shared,
                model=tiny_bpe_json(),
                pre_tokenizer_regex=r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
                special_tokens=[
                    pf.SpecialToken(id=0, content="<pad>"),
                    pf.SpecialToken(id=1, content="<s>"),
                    pf.SpecialToken(id=2, content="</s>"),
                    pf.SpecialToken(id=3, content="<|end|>"),
                ],
            )
        ],
        generation=pf.GenerationConfig(bos_token_id=1, eos_token_ids=[2, 3], pad_token_id=0, max_length=64),
        chat_template=CHAT_TEMPLATE,
        metadata={"source": SOURCE, "license": "MIT"},
    )


# --- tiny_decoder_int4.parley: format 1.2 (I4 group-wise) ---------------------

I4_PATTERN_SHAPE = (2, 64)


def i4_pattern() -> np.ndarray:
    """Values of `zz.i4_pattern`: element i (row-major) is (7 * i + 3) % 16 - 8,
    so the C++ test can decode the nibbles by the documented layout and compare."""
    i = np.arange(np.prod(I4_PATTERN_SHAPE))
    return ((7 * i + 3) % 16 - 8).astype(np.int8).reshape(I4_PATTERN_SHAPE)


def write_tiny_decoder_int4(path: str) -> dict:
    """tiny_decoder's config and weights stored as parley-convert --dtype int4
    --group-size 32 stores them (layers' Linear weights I4 group-wise, token
    embedding and lm_head I8 per row), plus an I4 pattern tensor."""
    from parley_format.convert.storage import store

    rng = np.random.default_rng(SEED)
    tensors: dict = {}
    for name, value in tiny_decoder_tensors(rng).items():
        if isinstance(value, np.ndarray):
            tensors.update(store(name, value, "int4", group_size=32))
        else:
            tensors[name] = value  # the per-channel int8 example stays as it is
    tensors["zz.i4_pattern"] = pf.I4(pf.pack_i4(i4_pattern()), I4_PATTERN_SHAPE)
    return pf.write_model(path, tiny_decoder_config(), tensors, metadata={"source": SOURCE, "license": "MIT"})


# --- tiny_seq2seq.parley: MarianMTModel-shaped -------------------------------

S2S_VOCAB, S2S_HIDDEN, S2S_LAYERS, S2S_HEADS, S2S_FFN, S2S_POS = 48, 16, 2, 2, 32, 64


def tiny_seq2seq_config() -> pf.ModelConfig:
    def stack() -> pf.StackConfig:
        return pf.StackConfig(
            num_layers=S2S_LAYERS,
            hidden_size=S2S_HIDDEN,
            num_heads=S2S_HEADS,
            ffn_size=S2S_FFN,
            activation=pf.Activation.SiLU,  # Marian's "swish"
            gated_ffn=False,
            norm=pf.NormKind.LayerNorm,
            norm_placement=pf.NormPlacement.Post,
            norm_epsilon=1e-5,
            qkv_bias=True,
            out_bias=True,
            ffn_bias=True,
            final_norm=False,  # post-norm: no norm after the last layer
            position=pf.PositionKind.Sinusoidal,
            max_positions=S2S_POS,
            embedding_scale=float(np.sqrt(S2S_HIDDEN)),
        )

    return pf.ModelConfig(
        architecture="MarianMTModel",
        kind=pf.ModelKind.EncoderDecoder,
        vocab_size=S2S_VOCAB,
        tie_word_embeddings=True,
        final_logits_bias=True,
        encoder=stack(),
        decoder=stack(),
    )


def tiny_seq2seq_tensors(rng: np.random.Generator) -> dict:
    def w(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    H, F = S2S_HIDDEN, S2S_FFN
    t = {
        "shared.weight": w(S2S_VOCAB, H),
        "final_logits_bias": np.zeros((1, S2S_VOCAB), np.float32),
    }
    t["final_logits_bias"][0, :4] = [0.0, -1.0, 0.5, 0.25]

    def attn(prefix: str) -> None:
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t[f"{prefix}.{p}.weight"] = w(H, H)
            t[f"{prefix}.{p}.bias"] = w(H)

    def norm(name: str) -> None:
        t[name + ".weight"] = np.ones(H, np.float32)
        t[name + ".bias"] = np.zeros(H, np.float32)

    def ffn(prefix: str) -> None:
        t[prefix + ".fc1.weight"] = w(F, H)
        t[prefix + ".fc1.bias"] = w(F)
        t[prefix + ".fc2.weight"] = w(H, F)
        t[prefix + ".fc2.bias"] = w(H)

    for i in range(S2S_LAYERS):
        e = f"encoder.layers.{i}"
        attn(e + ".self_attn")
        norm(e + ".self_attn_layer_norm")
        ffn(e)
        norm(e + ".final_layer_norm")
        d = f"decoder.layers.{i}"
        attn(d + ".self_attn")
        norm(d + ".self_attn_layer_norm")
        attn(d + ".encoder_attn")
        norm(d + ".encoder_attn_layer_norm")
        ffn(d)
        norm(d + ".final_layer_norm")
    return t


def write_tiny_seq2seq(path: str) -> dict:
    rng = np.random.default_rng(SEED + 1)
    specials = [(0, "</s>"), (1, "<unk>"), (S2S_VOCAB - 1, "<pad>")]
    return pf.write_model(
        path,
        tiny_seq2seq_config(),
        tiny_seq2seq_tensors(rng),
        tokenizers=[
            pf.Tokenizer(kind="SentencePiece", role="Source", model=b"dummy source.spm\x00\x01\x02",
                         special_tokens=specials),
            pf.Tokenizer(kind="SentencePiece", role="Target", model=b"dummy target.spm, a bit longer\xff",
                         special_tokens=specials),
        ],
        generation=pf.GenerationConfig(
            bos_token_id=-1, eos_token_ids=[0], pad_token_id=S2S_VOCAB - 1,
            decoder_start_token_id=S2S_VOCAB - 1, forced_eos_token_id=0,
            max_length=32, num_beams=4, length_penalty=1.0, suppress_tokens=[S2S_VOCAB - 1],
        ),
        metadata={"source": SOURCE, "license": "MIT"},
    )


# --- big_sparse.parley: > 4.5 GiB, mostly a hole ----------------------------

BIG_ROWS, BIG_COLS = 1179648, 1024  # F32: 4.5 GiB


def write_big_sparse(path: str) -> dict:
    rng = np.random.default_rng(SEED + 2)
    return pf.write_model(
        path,
        pf.ModelConfig(
            architecture="LlamaForCausalLM",
            vocab_size=16,
            decoder=pf.StackConfig(num_layers=1, hidden_size=16, num_heads=1, ffn_size=16,
                                   norm=pf.NormKind.RMSNorm, position=pf.PositionKind.Rotary,
                                   max_positions=16),
        ),
        {
            "big.zero": pf.ZeroTensor((BIG_ROWS, BIG_COLS), pf.DType.F32),
            "zz.after_4g": rng.standard_normal((16, 16)).astype(np.float32),
        },
        metadata={"source": SOURCE, "license": "MIT"},
    )


# Hostile tokenizers: files that load (the container is sound) but whose
# tokenizer tables are wrong; building or running them must fail cleanly.
BYTE_VOCAB = [chr(c) for c in range(ord("a"), ord("a") + 26)] + ["ab", "abc"] + ["<s>", "</s>"]


def _bpe(**kw) -> pf.Tokenizer:
    base = dict(kind=pf.TokenizerKind.ByteLevelBPE, model=b"a b\nab c\n", vocab=BYTE_VOCAB,
                pre_tokenizer_regex=r" ?\p{L}+|\s+", special_tokens=[(28, "<s>"), (29, "</s>")])
    base.update(kw)
    return pf.Tokenizer(**base)


HOSTILE_TOKENIZERS = {
    "tok_bad_spm": pf.Tokenizer(kind=pf.TokenizerKind.SentencePiece, model=b"\x0a\xff\xff\xff\xff\x0fnot a proto"),
    "tok_bad_merge": _bpe(model=b"a b\nx y\n"),
    "tok_bad_merge_line": _bpe(model=b"ab\n"),
    "tok_bad_regex": _bpe(pre_tokenizer_regex="(unclosed"),
    "tok_redos": _bpe(pre_tokenizer_regex=r"^(a|aa)+$"),
    "tok_bad_prefix": _bpe(prefix=["<nope>"]),
    "tok_lang_without_languages": _bpe(prefix=["{lang}"]),
    "tok_ok": _bpe(prefix=["<s>"], suffix=["</s>"]),
    # Regexes that match the empty string (refused at load) and one that
    # matches empty only after an "a" (the matching loop must still put each
    # byte in exactly one word).
    "tok_empty_regex": _bpe(pre_tokenizer_regex="(?:)"),
    "tok_star_regex": _bpe(pre_tokenizer_regex="a*"),
    "tok_empty_after_a_regex": _bpe(pre_tokenizer_regex="(?<=a)|[b-z]+"),
    # \C matches one byte inside a character: refused (matching skips the UTF-8 check).
    "tok_backslash_c_regex": _bpe(pre_tokenizer_regex=r"\C+"),
}


def write_hostile_tokenizers(out_dir: str) -> None:
    cfg = tiny_decoder_config()
    for name, tok in HOSTILE_TOKENIZERS.items():
        pf.write_model(os.path.join(out_dir, name + ".parley"), cfg, {}, tokenizers=[tok])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--big", action="store_true", help="also write big_sparse.parley (> 4.5 GiB, sparse)")
    args = ap.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    jobs = [("tiny_decoder.parley", write_tiny_decoder), ("tiny_seq2seq.parley", write_tiny_seq2seq),
            ("tiny_decoder_int4.parley", write_tiny_decoder_int4)]
    if args.big:
        jobs.append(("big_sparse.parley", write_big_sparse))
    for name, fn in jobs:
        t0 = time.perf_counter()
        info = fn(os.path.join(args.out_dir, name))
        print(f"{name}: {info['file_size']} bytes, {len(info['tensors'])} tensors "
              f"({time.perf_counter() - t0:.2f} s)")
    write_hostile_tokenizers(args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
