#!/usr/bin/env python3
"""Builds tiny random-weight Hugging Face models for every architecture the
converter supports, converts them to .parley (float32) and records golden
outputs from `transformers`.

    python tests/parity/make_goldens.py tests/parity        # regenerate everything

writes OUT_DIR/models/<name>.parley and OUT_DIR/goldens/<name>.json (see
tests/parity/README.md for what a golden holds). For the models in
STORAGE_MODELS it also converts the same checkpoint to every reduced storage
type, OUT_DIR/models/<name>.<dtype>.parley (float16, bfloat16, int8); their
reference stays the float32 golden (tests/model/test_storage.cpp). Needs torch and transformers
(`pip install -r formats/python/requirements-convert.txt`). Nothing is
downloaded: every model is built from a config object. Same versions and
seed -> same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
try:
    import parley_format  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "formats", "python"))

import torch  # noqa: E402
import transformers as T  # noqa: E402

from parley_format.convert import convert  # noqa: E402

SEED = 1234
MAX_NEW_TOKENS = 8


def _enc_dec(d, el, dl, eh, dh, ef, df, vocab, max_pos, **kw):
    return dict(d_model=d, encoder_layers=el, decoder_layers=dl, encoder_attention_heads=eh,
                decoder_attention_heads=dh, encoder_ffn_dim=ef, decoder_ffn_dim=df, vocab_size=vocab,
                max_position_embeddings=max_pos, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, **kw)


# name -> (config class, model class, config kwargs, generation overrides)
# Token ids: inputs are drawn from [4, vocab) minus the specials.
MODELS = {
    # Post-norm, sinusoidal positions (no offset), scale_embedding, swish,
    # shared + tied embeddings, final_logits_bias, pad = decoder start = vocab-1.
    "marian": (T.MarianConfig, T.MarianMTModel,
               _enc_dec(32, 2, 1, 4, 4, 64, 48, 112, 32, activation_function="swish", scale_embedding=True,
                        pad_token_id=111, decoder_start_token_id=111, eos_token_id=0, forced_eos_token_id=0,
                        bos_token_id=None),
               {"bad_words_ids": [[111]]}),  # as OPUS-MT: never generate <pad> (-> suppress_tokens)
    # Pre-norm + final norms, sinusoidal positions from padding (offset pad+1),
    # scale_embedding, ReLU, forced BOS (target language), untied lm_head.
    "m2m100": (T.M2M100Config, T.M2M100ForConditionalGeneration,
               _enc_dec(24, 1, 2, 2, 3, 40, 32, 104, 48, activation_function="relu", scale_embedding=True,
                        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                        tie_word_embeddings=False),
               {"forced_bos_token_id": 7}),
    # Post-norm, learned positions offset 2, layernorm_embedding, GELU (erf),
    # no embedding scale, forced EOS, untied lm_head.
    "bart": (T.BartConfig, T.BartForConditionalGeneration,
             _enc_dec(24, 2, 2, 3, 2, 48, 40, 96, 40, activation_function="gelu", scale_embedding=False,
                      pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                      forced_eos_token_id=2, forced_bos_token_id=None, tie_word_embeddings=False),
             {}),
    # Pre-norm + final norms + layernorm_embedding, learned positions offset 2,
    # scale_embedding, gelu_new, tied.
    "mbart": (T.MBartConfig, T.MBartForConditionalGeneration,
              _enc_dec(32, 1, 1, 2, 4, 48, 64, 120, 40, activation_function="gelu_new", scale_embedding=True,
                       pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                       forced_eos_token_id=2),
              {}),
    # Learned positions, pre-norm LayerNorm, Conv1D + fused c_attn, gelu_new, tied.
    "gpt2": (T.GPT2Config, T.GPT2LMHeadModel,
             dict(n_embd=32, n_layer=2, n_head=4, n_inner=None, vocab_size=128, n_positions=48,
                  activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                  bos_token_id=0, eos_token_id=2, pad_token_id=1),
             {}),
    # RMSNorm, RoPE with llama3 scaling, GQA 4:2, SiLU gated FFN, untied, two EOS ids.
    "llama": (T.LlamaConfig, T.LlamaForCausalLM,
              dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=64, vocab_size=128, max_position_embeddings=64, rms_norm_eps=1e-5,
                   tie_word_embeddings=False, bos_token_id=0, eos_token_id=[2, 3], pad_token_id=1,
                   rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 8}),
              {}),
    # Linear RoPE scaling, attention + MLP biases, MQA (1 KV head), tied, 1 layer.
    "llama_bias": (T.LlamaConfig, T.LlamaForCausalLM,
                   dict(hidden_size=24, num_hidden_layers=1, num_attention_heads=3, num_key_value_heads=1,
                        intermediate_size=40, vocab_size=100, max_position_embeddings=64, rms_norm_eps=1e-6,
                        tie_word_embeddings=True, attention_bias=True, mlp_bias=True, bos_token_id=0,
                        eos_token_id=2, pad_token_id=1,
                        rope_parameters={"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0}),
                   {}),
    # head_dim (16) != hidden/heads (8), GQA 6:2, sliding_window >= max length (inactive).
    "mistral": (T.MistralConfig, T.MistralForCausalLM,
                dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                     head_dim=16, intermediate_size=64, vocab_size=96, max_position_embeddings=64,
                     sliding_window=64, rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=0,
                     eos_token_id=2, pad_token_id=1,
                     rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
                {}),
    # Q/K/V bias (no O bias), MQA, tied embeddings.
    "qwen2": (T.Qwen2Config, T.Qwen2ForCausalLM,
              dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                   intermediate_size=48, vocab_size=144, max_position_embeddings=64, rms_norm_eps=1e-6,
                   tie_word_embeddings=True, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                   rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
              {}),
    # Q/K RMSNorm per head before RoPE, head_dim 16 with hidden 32 and 4 heads, GQA 4:2, untied.
    "qwen3": (T.Qwen3Config, T.Qwen3ForCausalLM,
              dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   head_dim=16, intermediate_size=48, vocab_size=128, max_position_embeddings=64,
                   rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                   rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
              {}),
    # Linear RoPE scaling (factor 2, theta 2500), head_dim 16, MQA (2:1), untied; prompts of 12-16
    # tokens so that every rotary frequency turns through a sizeable angle.
    "llama_rope_linear": (T.LlamaConfig, T.LlamaForCausalLM,
                          dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                               intermediate_size=48, vocab_size=80, max_position_embeddings=32, rms_norm_eps=1e-5,
                               tie_word_embeddings=False, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                               rope_parameters={"rope_type": "linear", "rope_theta": 2500.0, "factor": 2.0}),
                          {}),
    # Llama-3 RoPE scaling with all three regimes on head_dim 16: theta 100 gives wavelengths
    # 6.3 | 11.2, 19.9 | 35.3 ... against high/low-frequency wavelengths 32/4 = 8 and 32/1 = 32,
    # so 1 frequency is kept, 2 are smoothed and 5 divided by 8. Plain MHA (2 heads, 2 KV heads).
    # Prompts of up to 34 tokens: positions beyond original_max_position_embeddings (32).
    "llama3_rope": (T.LlamaConfig, T.LlamaForCausalLM,
                    dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=48, vocab_size=64, max_position_embeddings=64, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                         rope_parameters={"rope_type": "llama3", "rope_theta": 100.0, "factor": 8.0,
                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 32}),
                    {}),
    # Qwen2 untied (separate lm_head) with GQA 8:2 (4 query heads per KV head), head_dim 8.
    "qwen2_untied": (T.Qwen2Config, T.Qwen2ForCausalLM,
                     dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                          intermediate_size=64, vocab_size=112, max_position_embeddings=64, rms_norm_eps=1e-6,
                          tie_word_embeddings=False, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                          rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
                     {}),
    # Sliding-window attention (window 4 < max length 64) in every layer, as Mistral-7B-v0.1;
    # prompts of 7-10 tokens and 8 new ones, so the window cuts keys in prefill and decoding.
    "mistral_window": (T.MistralConfig, T.MistralForCausalLM,
                       dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            head_dim=8, intermediate_size=48, vocab_size=96, max_position_embeddings=64,
                            sliding_window=4, rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=0,
                            eos_token_id=2, pad_token_id=1,
                            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
                       {}),
    # Qwen2 use_sliding_window with max_window_layers 1 of 3 layers: layer 0 full, layers 1-2 window 3; untied.
    "qwen2_window": (T.Qwen2Config, T.Qwen2ForCausalLM,
                     dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=48, vocab_size=112, max_position_embeddings=64, rms_norm_eps=1e-6,
                          tie_word_embeddings=False, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                          use_sliding_window=True, sliding_window=3, max_window_layers=1,
                          rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
                     {}),
    # Qwen3 with explicit per-layer layer_types: sliding (window 5), full, sliding.
    "qwen3_layer_types": (T.Qwen3Config, T.Qwen3ForCausalLM,
                          dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                               head_dim=8, intermediate_size=48, vocab_size=104, max_position_embeddings=64,
                               rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=0, eos_token_id=2,
                               pad_token_id=1, use_sliding_window=True, sliding_window=5,
                               layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                               rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
                          {}),
    # GPT-2 scale_attn_by_inverse_layer_idx (scores of layer i scaled by 1/(i+1)) and
    # reorder_and_upcast_attn (float32 scores; eager path), 3 layers.
    "gpt2_layer_scale": (T.GPT2Config, T.GPT2LMHeadModel,
                         dict(n_embd=32, n_layer=3, n_head=4, n_inner=None, vocab_size=120, n_positions=48,
                              activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                              scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=True,
                              bos_token_id=0, eos_token_id=2, pad_token_id=1),
                         {}),
    # Marian with separate source (112) and target (90) vocabularies: share_encoder_decoder_embeddings=False,
    # own encoder and decoder tables, lm_head / final_logits_bias over the target vocabulary (tied to
    # the decoder's table), pad = decoder start = 89.
    "marian_separate_vocab": (T.MarianConfig, T.MarianMTModel,
                              _enc_dec(32, 2, 1, 4, 4, 64, 48, 112, 32, activation_function="swish",
                                       scale_embedding=True, share_encoder_decoder_embeddings=False,
                                       decoder_vocab_size=90, pad_token_id=89, decoder_start_token_id=89,
                                       eos_token_id=0, forced_eos_token_id=0, bos_token_id=None),
                              {"bad_words_ids": [[89]]}),
    # mBART without decoder_start_token_id: transformers' generate() starts from bos_token_id (0).
    "mbart_no_start": (T.MBartConfig, T.MBartForConditionalGeneration,
                       _enc_dec(32, 1, 1, 2, 4, 48, 64, 120, 40, activation_function="gelu", scale_embedding=True,
                                pad_token_id=1, bos_token_id=0, eos_token_id=2, forced_eos_token_id=2),
                       {}),
}

# Prompt (decoder-only) / source (encoder-decoder) lengths of the golden
# batch; models not listed use DEFAULT_LENGTHS.
DEFAULT_LENGTHS = [5, 3, 4]
PROMPT_LENGTHS = {
    "llama_rope_linear": [14, 12, 16],
    "llama3_rope": [34, 24, 29],
    "mistral_window": [9, 7, 10],
    "qwen2_window": [8, 6, 9],
    "qwen3_layer_types": [10, 8, 7],
}

# Models whose golden must show what their option does: the same checkpoint
# with the option switched off must give other logits (checked when the
# golden is made; tests/parity/test_convert.py re-checks the sliding windows
# and the GPT-2 layer scale with the numpy reference).
ABLATIONS = {
    "mistral_window": {"sliding_window": None},
    "qwen2_window": {"layer_types": ["full_attention"] * 3},
    "qwen3_layer_types": {"layer_types": ["full_attention"] * 3},
    "gpt2_layer_scale": {"scale_attn_by_inverse_layer_idx": False},
}


# Reduced-precision copies (same checkpoint, other storage types), checked
# against the float32 goldens by tests/model/test_storage.cpp: one
# decoder-only model with GQA, one with Q/K norm, one encoder-decoder.
STORAGE_MODELS = ("llama", "qwen3", "marian")
STORAGE_DTYPES = ("float16", "bfloat16", "int8")


def _randomize(model: torch.nn.Module, gen: torch.Generator, skip: tuple[str, ...]) -> None:
    """HF's init (std 0.02) gives near-uniform logits, where greedy and beam
    search hinge on ties; draw larger weights so the goldens are decisive."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(s in name for s in skip):
                continue
            if p.ndim == 1:
                is_scale = name.endswith("weight") and ("norm" in name or "ln_" in name or "layernorm" in name)
                base = 1.0 if is_scale else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[1] if p.ndim == 2 else p.shape[-1]
                if "wte" in name or "embed_tokens" in name or "shared" in name or "embed_positions" in name or "wpe" in name:
                    std = 0.5
                elif "c_attn" in name or "c_fc" in name or "c_proj" in name:  # Conv1D: [in, out]
                    std = 1.0 / np.sqrt(p.shape[0])
                else:
                    std = 1.0 / np.sqrt(fan_in)
                p.copy_(std * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("final_logits_bias"):
                b.copy_(0.5 * torch.randn(b.shape, generator=gen))


def _f(a) -> list:
    """float32 values as JSON numbers that round-trip exactly."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 0:
        return float(a)  # type: ignore[return-value]
    return [_f(x) for x in a] if a.ndim > 1 else [float(f"{v:.9g}") for v in a.tolist()]


def _ids(a) -> list:
    return np.asarray(a).astype(np.int64).tolist()


def _special(cfg) -> set[int]:
    out = set()
    for k in ("pad_token_id", "bos_token_id", "decoder_start_token_id", "forced_bos_token_id"):
        v = getattr(cfg, k, None)
        if isinstance(v, int):
            out.add(v)
    eos = cfg.eos_token_id
    out.update(eos if isinstance(eos, list) else ([eos] if eos is not None else []))
    return out


def _draw(gen: torch.Generator, n: int, vocab: int, banned: set[int]) -> list[int]:
    out = []
    while len(out) < n:
        v = int(torch.randint(4, vocab, (1,), generator=gen))
        if v not in banned:
            out.append(v)
    return out


def build(name: str, workdir: str):
    cfg_cls, model_cls, kw, gen_over = MODELS[name]
    torch.manual_seed(SEED)
    cfg = cfg_cls(**kw)
    cfg.architectures = [model_cls.__name__]
    model = model_cls(cfg).eval()
    g = torch.Generator().manual_seed(SEED + sum(map(ord, name)))
    _randomize(model, g, skip=("embed_positions",) if name == "marian" else ())
    if cfg.tie_word_embeddings:
        model.tie_weights()
    gc = model.generation_config
    for k, v in gen_over.items():
        setattr(gc, k, v)
    hf_dir = os.path.join(workdir, name)
    model.save_pretrained(hf_dir)
    # Goldens come from the model as reloaded from disk: exactly what the converter read.
    model = model_cls.from_pretrained(hf_dir, attn_implementation="eager").eval()
    return model, hf_dir, g


def golden(name: str, model, g: torch.Generator) -> dict:
    cfg = model.config
    V = cfg.vocab_size
    # Decoder (target) ids: Marian's decoder_vocab_size when its vocabularies are separate.
    VT = (cfg.decoder_vocab_size or V) if not getattr(cfg, "share_encoder_decoder_embeddings", True) else V
    banned = _special(cfg)
    pad = cfg.pad_token_id
    gc = model.generation_config
    eos = gc.eos_token_id
    eos_list = eos if isinstance(eos, list) else [eos]
    lengths = PROMPT_LENGTHS.get(name, DEFAULT_LENGTHS)
    B, S = len(lengths), max(lengths)
    out: dict = {"name": name, "architecture": type(model).__name__, "vocab_size": VT,
                 "versions": {"torch": torch.__version__, "transformers": T.__version__}}
    common_gen = dict(do_sample=False, max_new_tokens=MAX_NEW_TOKENS, pad_token_id=pad, eos_token_id=eos,
                      bos_token_id=gc.bos_token_id, forced_bos_token_id=gc.forced_bos_token_id,
                      forced_eos_token_id=gc.forced_eos_token_id, no_repeat_ngram_size=0,
                      repetition_penalty=1.0, length_penalty=1.0, early_stopping=False)
    if cfg.is_encoder_decoder:
        # None (mbart_no_start) is passed as is: generate() then applies its own fallback.
        common_gen["decoder_start_token_id"] = gc.decoder_start_token_id
        src = torch.full((B, S), pad, dtype=torch.long)
        mask = torch.zeros((B, S), dtype=torch.long)
        for b, n in enumerate(lengths):
            toks = _draw(g, n - 1, V, banned) + [eos_list[0]]  # sources end with EOS, as tokenizers make them
            src[b, :n] = torch.tensor(toks)
            mask[b, :n] = 1
        start = gc.decoder_start_token_id if gc.decoder_start_token_id is not None else gc.bos_token_id
        prefix = torch.tensor([[start] + _draw(g, 3, VT, banned) for _ in range(B)])
        with torch.no_grad():
            logits = model(input_ids=src, attention_mask=mask, decoder_input_ids=prefix).logits
        out["inputs"] = {"padding_side": "right", "input_ids": _ids(src), "attention_mask": _ids(mask),
                         "decoder_input_ids": _ids(prefix)}
        out["logits"] = {"what": "logits for decoder_input_ids given the padded source; every position valid",
                         "shape": list(logits.shape), "values": _f(logits[..., :])}
        gen_inputs = dict(input_ids=src, attention_mask=mask)
    else:
        ids = torch.full((B, S), pad, dtype=torch.long)
        mask = torch.zeros((B, S), dtype=torch.long)
        for b, n in enumerate(lengths):
            toks = [gc.bos_token_id] + _draw(g, n - 1, V, banned)
            ids[b, S - n:] = torch.tensor(toks)
            mask[b, S - n:] = 1
        # HF generate's rule (GenerationMixin._prepare_position_ids_for_generation):
        # position = number of attended tokens before this one; padding -> 0.
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        out["inputs"] = {"padding_side": "left", "input_ids": _ids(ids), "attention_mask": _ids(mask),
                         "position_ids": _ids(pos)}
        out["logits"] = {"what": "logits at every position; compare only where attention_mask is 1",
                         "shape": list(logits.shape), "values": _f(logits)}
        gen_inputs = dict(input_ids=ids, attention_mask=mask)
    with torch.no_grad():
        greedy = model.generate(**gen_inputs, num_beams=1, **common_gen)
        beam = model.generate(**gen_inputs, num_beams=3, num_return_sequences=2, output_scores=True,
                              return_dict_in_generate=True, **common_gen)
    settings = {k: v for k, v in common_gen.items()}
    if gc.bad_words_ids:
        settings["bad_words_ids"] = gc.bad_words_ids
    out["greedy"] = {"settings": settings, "sequences": _ids(greedy),
                     "note": ("decoder sequences starting with decoder_start_token_id" if cfg.is_encoder_decoder
                              else "prompt (as padded above) followed by new tokens") +
                     "; finished rows are filled with pad_token_id"}
    out["beam"] = {"settings": dict(settings, num_beams=3, num_return_sequences=2),
                   "sequences": _ids(beam.sequences), "sequences_scores": _f(beam.sequences_scores),
                   "note": "num_return_sequences rows per input, best first; sequences_scores are HF's "
                           "length-normalised sum of log-probabilities (length_penalty 1.0)"}
    return out


def ablation(name: str, model_cls, hf_dir: str, gold: dict) -> dict:
    """The golden's logits and greedy tokens again with ABLATIONS[name]
    switched off; refuses to write a golden its option does not change."""
    over = ABLATIONS[name]
    model = model_cls.from_pretrained(hf_dir, attn_implementation="eager", **over).eval()
    inp = gold["inputs"]
    ids, mask = torch.tensor(inp["input_ids"]), torch.tensor(inp["attention_mask"])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=torch.tensor(inp["position_ids"])).logits
        greedy = model.generate(input_ids=ids, attention_mask=mask, num_beams=1, **gold["greedy"]["settings"])
    want = np.asarray(gold["logits"]["values"], dtype=np.float64)
    valid = np.asarray(inp["attention_mask"], dtype=bool)
    diff = float(np.abs(logits.numpy().astype(np.float64) - want)[valid].max())
    if diff < 1e-2:
        raise SystemExit(f"{name}: switching off {over} changes the logits by only {diff:.3g}; the golden would not "
                         "test the option")
    return {"config": over, "max_abs_logit_diff": float(f"{diff:.4g}"),
            "greedy_differs": _ids(greedy) != gold["greedy"]["sequences"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", help="e.g. tests/parity (writes models/ and goldens/ inside)")
    ap.add_argument("--only", nargs="*", help="model names (default: all)")
    args = ap.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    T.logging.set_verbosity_error()
    models_dir = os.path.join(args.out_dir, "models")
    goldens_dir = os.path.join(args.out_dir, "goldens")
    os.makedirs(models_dir, exist_ok=True)
    os.makedirs(goldens_dir, exist_ok=True)
    names = args.only or list(MODELS)
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            model, hf_dir, g = build(name, work)
            path = os.path.join(models_dir, f"{name}.parley")
            r = convert(hf_dir, path, dtype="float32", force=True, progress=False)
            if name in STORAGE_MODELS:
                for dtype in STORAGE_DTYPES:
                    rs = convert(hf_dir, os.path.join(models_dir, f"{name}.{dtype}.parley"), dtype=dtype,
                                 force=True, progress=False)
                    print(f"{name}.{dtype}: {rs.file_size} bytes model")
            gold = golden(name, model, g)
            gold["model_file"] = f"models/{name}.parley"
            gold["hf_config"] = json.loads(model.config.to_json_string(use_diff=True))
            gold["hf_config"].pop("transformers_version", None)
            if name in ABLATIONS:
                gold["ablation"] = ablation(name, MODELS[name][1], hf_dir, gold)
                print(f"{name}: without the option {gold['ablation']}")
            with open(os.path.join(goldens_dir, f"{name}.json"), "w") as f:
                json.dump(gold, f, separators=(",", ":"), sort_keys=True)
                f.write("\n")
            print(f"{name}: {r.file_size} bytes model, "
                  f"{os.path.getsize(os.path.join(goldens_dir, name + '.json'))} bytes golden")
    return 0


if __name__ == "__main__":
    sys.exit(main())
