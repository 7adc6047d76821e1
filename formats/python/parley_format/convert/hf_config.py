"""Hugging Face `config.json` / `generation_config.json` -> Parley config.

Pure Python (no torch, no transformers): the mapping is a function of the two
JSON dictionaries, so it is tested without the heavy dependencies.

Each family's numerics were read from transformers 5.x
(`transformers/models/<family>/modeling_<family>.py`); the comments cite the
class whose behaviour a field reproduces. Anything the Parley model cannot
express is refused with an `UnsupportedError` naming the option.

Position-id rules (stored in the file's metadata under
`parley.position_ids.encoder` / `parley.position_ids.decoder`, see
`POSITION_RULES`): the row of `P.embed_positions.weight` (or the RoPE
position) used for a token is `position_offset + p` where `p` is
  * `index`: the token's index in its sequence counted from the first
    token fed (padding included) plus the KV-cache length. HF
    Marian/BART/mBART (`torch.arange(past, past + seq_len)`), and the
    decoders of all encoder-decoder families (the decoder input never holds
    padding).
  * `non_pad_count`: the number of non-padding tokens before it in its
    sequence (padding tokens themselves are masked out and their rows do
    not matter: HF M2M100 uses row `pad_token_id`, which it zeroes; HF
    `generate` for decoder-only models gives them position 0).
    HF M2M100's encoder (`create_position_ids_from_input_ids`:
    `padding_idx + cumsum(non-pad)`), and every decoder-only family under
    `generate` (`attention_mask.cumsum(-1) - 1`, then `+1` per new token).
    For right-padded input without inner padding the two rules agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..types import GenerationConfig, ModelConfig, StackConfig
from .errors import ConversionError, UnsupportedError

POSITION_RULES = ("index", "non_pad_count")

ENCODER_DECODER = (
    "MarianMTModel",
    "M2M100ForConditionalGeneration",
    "BartForConditionalGeneration",
    "MBartForConditionalGeneration",
)
DECODER_ONLY = (
    "GPT2LMHeadModel",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
)
SUPPORTED_ARCHITECTURES = ENCODER_DECODER + DECODER_ONLY

# The HF config-class defaults of every key this module reads (transformers
# 5.x; `tests/parity/test_convert.py` checks them against the installed
# classes). config.json files written by older transformers may omit keys
# that were added later, so missing keys take these values, as HF would.
_BART_LIKE = dict(
    d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
    decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
    max_position_embeddings=1024, tie_word_embeddings=True,
)
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "MarianMTModel": dict(
        _BART_LIKE, vocab_size=58101, decoder_vocab_size=None, activation_function="gelu",
        scale_embedding=False, share_encoder_decoder_embeddings=True, pad_token_id=58100,
        eos_token_id=0, bos_token_id=None, decoder_start_token_id=58100, forced_eos_token_id=0,
    ),
    "M2M100ForConditionalGeneration": dict(
        _BART_LIKE, vocab_size=128112, activation_function="relu", scale_embedding=True,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
    ),
    "BartForConditionalGeneration": dict(
        _BART_LIKE, vocab_size=50265, activation_function="gelu", scale_embedding=False,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2,
    ),
    "MBartForConditionalGeneration": dict(
        _BART_LIKE, vocab_size=50265, activation_function="gelu", scale_embedding=False,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, forced_eos_token_id=2,
    ),
    "GPT2LMHeadModel": dict(
        vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False, add_cross_attention=False, tie_word_embeddings=True,
        bos_token_id=50256, eos_token_id=50256,
    ),
    "LlamaForCausalLM": dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=None, head_dim=None, hidden_act="silu",
        max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_theta=10000.0, rope_scaling=None, attention_bias=False, mlp_bias=False,
        bos_token_id=1, eos_token_id=2,
    ),
    "MistralForCausalLM": dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=None, hidden_act="silu",
        max_position_embeddings=131072, rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_theta=10000.0, rope_scaling=None, sliding_window=4096, bos_token_id=1, eos_token_id=2,
    ),
    "Qwen2ForCausalLM": dict(
        vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, head_dim=None, hidden_act="silu",
        max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_theta=10000.0, rope_scaling=None, use_sliding_window=False, sliding_window=None,
        max_window_layers=28, layer_types=None,
    ),
    "Qwen3ForCausalLM": dict(
        vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, head_dim=128, hidden_act="silu",
        max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_theta=10000.0, rope_scaling=None, attention_bias=False, use_sliding_window=False,
        sliding_window=None, max_window_layers=28, layer_types=None,
    ),
}

# HF ACT2FN names -> Parley Activation (transformers/activations.py).
ACTIVATIONS = {
    "relu": "ReLU",
    "gelu": "GeluErf",  # GELUActivation: x * 0.5 * (1 + erf(x / sqrt 2))
    "gelu_new": "GeluTanh",  # NewGELUActivation: tanh approximation
    "gelu_pytorch_tanh": "GeluTanh",
    "gelu_fast": "GeluTanh",  # same formula as gelu_new, written differently
    "silu": "SiLU",
    "swish": "SiLU",
}

# BART-family LayerNorms are nn.LayerNorm(d) with torch's default eps.
_TORCH_LAYER_NORM_EPS = 1e-5


@dataclass
class Plan:
    """Everything the tensor mapping and the writer need besides weights."""

    architecture: str
    config: ModelConfig
    generation: GenerationConfig
    metadata: dict[str, str]
    # family details the weight mapping needs
    family: str = ""
    share_embeddings: bool = True
    sinusoidal: str = ""  # "marian" or "m2m100" when the table is computed
    pad_token_id: int | None = None
    # per decoder layer, a factor folded into the query projection (weight and
    # bias); empty: none (GPT-2 scale_attn_by_inverse_layer_idx: 1 / (i + 1))
    query_scales: list[float] = field(default_factory=list)
    # Marian with separate vocabularies: the target (decoder) vocabulary; 0: vocab_size
    decoder_vocab_size: int = 0
    warnings: list[str] = field(default_factory=list)


class _Cfg:
    """config.json with the family's HF defaults underneath."""

    def __init__(self, raw: dict[str, Any], defaults: dict[str, Any]):
        self.raw = raw
        self.defaults = defaults

    def __getitem__(self, key: str) -> Any:
        if key in self.raw:
            return self.raw[key]
        if key in self.defaults:
            return self.defaults[key]
        raise ConversionError(f"config.json: required key {key!r} is missing")

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.raw:
            return self.raw[key]
        return self.defaults.get(key, default)


def architecture_of(raw: dict[str, Any]) -> str:
    archs = raw.get("architectures")
    if not archs:
        raise ConversionError("config.json: no 'architectures' entry, cannot tell which model this is")
    if not isinstance(archs, list) or len(archs) != 1 or not isinstance(archs[0], str):
        raise UnsupportedError(f"config.json: architectures {archs!r}: exactly one architecture is supported")
    arch = archs[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedError(
            f"architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    return arch


def _activation(name: Any, key: str) -> str:
    if name not in ACTIVATIONS:
        raise UnsupportedError(
            f"config.json: {key}={name!r} is not supported (supported: {', '.join(sorted(ACTIVATIONS))})"
        )
    return ACTIVATIONS[name]


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConversionError(f"config.json: {key}={value!r} is not an integer")
    return value


def _rope(c: _Cfg, stack: dict[str, Any], max_positions: int) -> None:
    """rope_theta and rope scaling, from transformers 5 `rope_parameters` or
    the older `rope_theta` + `rope_scaling` keys."""
    params = c.raw.get("rope_parameters")
    if params is not None and not isinstance(params, dict):
        raise UnsupportedError(f"config.json: rope_parameters={params!r}: per-layer-type RoPE is not supported")
    theta = (params or {}).get("rope_theta", c.get("rope_theta", 10000.0))
    scaling = dict(params) if params else (dict(c.get("rope_scaling")) if c.get("rope_scaling") else {})
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    stack["rope_theta"] = float(theta)
    if params is not None and "partial_rotary_factor" in params and params["partial_rotary_factor"] != 1.0:
        raise UnsupportedError("config.json: rope_parameters.partial_rotary_factor != 1 is not supported")
    if c.raw.get("partial_rotary_factor", 1.0) != 1.0:
        raise UnsupportedError("config.json: partial_rotary_factor != 1 is not supported")
    if rope_type == "default":
        return
    if rope_type == "linear":
        # _compute_linear_scaling_rope_parameters: inv_freq / factor.
        stack["rope_scaling"] = "Linear"
        stack["rope_scaling_factor"] = float(scaling["factor"])
        return
    if rope_type == "llama3":
        # _compute_llama3_parameters (transformers/modeling_rope_utils.py).
        stack["rope_scaling"] = "Llama3"
        stack["rope_scaling_factor"] = float(scaling["factor"])
        stack["rope_low_freq_factor"] = float(scaling["low_freq_factor"])
        stack["rope_high_freq_factor"] = float(scaling["high_freq_factor"])
        stack["rope_original_max_positions"] = _int(
            scaling["original_max_position_embeddings"], "rope_scaling.original_max_position_embeddings"
        )
        extra = set(scaling) - {"rope_type", "type", "factor", "low_freq_factor", "high_freq_factor",
                                "original_max_position_embeddings", "rope_theta"}
        if extra:
            raise UnsupportedError(f"config.json: rope scaling 'llama3' with option(s) {sorted(extra)} is not supported")
        return
    raise UnsupportedError(
        f"config.json: rope scaling type {rope_type!r} is not supported (supported: linear, llama3)"
    )


def _eos_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, list):
        return [_int(v, "eos_token_id") for v in value]
    return [_int(value, "eos_token_id")]


def _generation(c: _Cfg, gen: dict[str, Any] | None, vocab_size: int, warnings: list[str],
                metadata: dict[str, str]) -> GenerationConfig:
    """Token ids from config.json (HF's `GenerationConfig.from_model_config`),
    overridden by generation_config.json. Only values given explicitly are
    carried over; the rest keep the schema defaults (e.g. HF's implicit
    top_k=50 for sampling is not carried)."""
    merged: dict[str, Any] = {}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
                "forced_bos_token_id", "forced_eos_token_id"):
        v = c.get(key)
        if v is not None:
            merged[key] = v
    for key in ("max_length", "num_beams", "length_penalty", "early_stopping", "no_repeat_ngram_size",
                "bad_words_ids", "repetition_penalty", "do_sample", "temperature", "top_k", "top_p", "min_p",
                "suppress_tokens", "max_new_tokens", "begin_suppress_tokens"):
        if key in c.raw and c.raw[key] is not None:  # legacy: generation params in config.json
            merged[key] = c.raw[key]
    for key, v in (gen or {}).items():
        if key in ("transformers_version", "_from_model_config"):
            continue
        merged[key] = v  # generation_config.json wins, None included (unset)

    g = GenerationConfig()

    def token(key: str) -> int:
        v = merged.get(key)
        if v is None:
            return -1
        v = _int(v, key)
        if not 0 <= v < vocab_size:
            # HF leaves such ids in configs of resized models; refusing the
            # whole model for it would be unhelpful, but the file format
            # refuses out-of-vocabulary ids, so drop it loudly.
            warnings.append(f"{key}={v} is outside the vocabulary (size {vocab_size}); not carried over")
            metadata[f"generation.dropped.{key}"] = str(v)
            return -1
        return v

    g.bos_token_id = token("bos_token_id")
    g.pad_token_id = token("pad_token_id")
    g.decoder_start_token_id = token("decoder_start_token_id")
    g.forced_bos_token_id = token("forced_bos_token_id")
    g.forced_eos_token_id = token("forced_eos_token_id")
    eos = []
    for v in _eos_list(merged.get("eos_token_id")):
        if 0 <= v < vocab_size:
            if v not in eos:
                eos.append(v)
        else:
            warnings.append(f"eos_token_id {v} is outside the vocabulary; not carried over")
    g.eos_token_ids = eos
    if merged.get("max_length") is not None:
        g.max_length = _int(merged["max_length"], "max_length")
    if merged.get("max_new_tokens") is not None:
        metadata["generation.max_new_tokens"] = str(_int(merged["max_new_tokens"], "max_new_tokens"))
    if merged.get("num_beams") is not None:
        g.num_beams = _int(merged["num_beams"], "num_beams")
    # Sampling defaults outside what Parley (and transformers' own validation)
    # accepts are dropped loudly, as out-of-vocabulary ids are: the model still
    # converts, with the format's default for that setting.
    valid = {"length_penalty": lambda x: True, "repetition_penalty": lambda x: x > 0,
             "temperature": lambda x: x >= 0, "top_p": lambda x: 0 <= x <= 1, "min_p": lambda x: 0 <= x <= 1}
    for key, ok in valid.items():
        if merged.get(key) is not None:
            try:
                v = float(merged[key])
            except (TypeError, ValueError):
                raise ConversionError(f"generation {key}={merged[key]!r} is not a number") from None
            if not math.isfinite(v) or not ok(v):
                warnings.append(f"generation {key}={merged[key]!r} is out of range; not carried over")
                metadata[f"generation.dropped.{key}"] = str(merged[key])
                continue
            setattr(g, key, v)
    for key in ("no_repeat_ngram_size", "top_k"):
        if merged.get(key) is not None:
            setattr(g, key, _int(merged[key], key))
    if merged.get("do_sample") is not None:
        g.do_sample = bool(merged["do_sample"])
    es = merged.get("early_stopping")
    if es == "never":
        # HF's third mode (canonical beam-search stopping); the schema holds
        # a bool. Stored as False, the exact value kept in the metadata.
        g.early_stopping = False
        metadata["generation.early_stopping"] = "never"
        warnings.append("early_stopping='never' stored as false (exact value kept in metadata)")
    elif es is not None:
        g.early_stopping = bool(es)
    suppress = [_int(v, "suppress_tokens") for v in (merged.get("suppress_tokens") or [])]
    for seq in merged.get("bad_words_ids") or []:
        # Single-token bad words are exactly suppressed tokens (Marian bans its pad this way).
        if isinstance(seq, list) and len(seq) == 1:
            suppress.append(_int(seq[0], "bad_words_ids"))
        else:
            raise UnsupportedError(f"generation config: multi-token bad_words_ids {seq!r} are not supported")
    if merged.get("begin_suppress_tokens"):
        raise UnsupportedError("generation config: begin_suppress_tokens is not supported")
    g.suppress_tokens = sorted({v for v in suppress if 0 <= v < vocab_size})
    return g


def _layer_windows(arch: str, c: _Cfg, max_pos: int, warnings: list[str]) -> list[int]:
    """Per-layer sliding windows (0: full attention), as transformers 5 picks them.

    MistralForCausalLM: every layer uses `sliding_window` when it is not None
    (MistralModel builds one create_sliding_window_causal_mask for all layers;
    `layer_types` is not read). Qwen2/Qwen3: `Qwen2Config.__post_init__` drops
    the window unless `use_sliding_window`, and derives `layer_types` when absent
    ("sliding_attention" for layer i >= max_window_layers); a layer whose type
    is "sliding_attention" gets `config.sliding_window`. In both, key j is
    visible from query i iff i - sliding_window < j <= i (sliding_window_overlay
    in transformers/masking_utils.py). A window >= the converted maximum length
    never masks anything and is not stored."""
    n_layers = _int(c["num_hidden_layers"], "num_hidden_layers")
    if arch == "MistralForCausalLM":
        window = c.get("sliding_window")
        if c.raw.get("layer_types") is not None:
            warnings.append("MistralForCausalLM: layer_types is ignored, as transformers' Mistral does")
        types = ["sliding_attention" if window is not None else "full_attention"] * n_layers
    elif arch in ("Qwen2ForCausalLM", "Qwen3ForCausalLM"):
        use = bool(c.get("use_sliding_window"))
        # The HF class default (4096) applies when use_sliding_window is set without a size.
        window = (c.raw["sliding_window"] if "sliding_window" in c.raw else 4096) if use else None
        types = c.raw.get("layer_types")
        if types is None:
            first = _int(c.get("max_window_layers", 28), "max_window_layers")
            types = ["sliding_attention" if window is not None and i >= first else "full_attention"
                     for i in range(n_layers)]
        if not isinstance(types, list) or len(types) != n_layers:
            raise ConversionError(f"{arch}: layer_types {types!r} does not list one type per layer ({n_layers})")
        unknown = sorted({t for t in types if t not in ("full_attention", "sliding_attention")})
        if unknown:
            raise UnsupportedError(f"{arch}: layer_types {unknown} are not supported (full_attention, sliding_attention)")
        if "sliding_attention" in types and window is None:
            # transformers raises in create_sliding_window_causal_mask for this config.
            raise ConversionError(f"{arch}: layer_types has sliding_attention layers but no sliding_window is in use "
                                  "(use_sliding_window is false or sliding_window is null)")
    else:
        return []
    if window is None:
        return []
    window = _int(window, "sliding_window")
    if window < 1:
        raise ConversionError(f"{arch}: sliding_window={window} must be >= 1")
    if window >= max_pos:
        return []  # never bites within the converted maximum length
    return [window if t == "sliding_attention" else 0 for t in types]


def _decoder_only(arch: str, c: _Cfg, max_positions: int | None, warnings: list[str]) -> tuple[dict, dict]:
    if arch == "GPT2LMHeadModel":
        if c.get("add_cross_attention"):
            raise UnsupportedError("GPT2LMHeadModel: add_cross_attention=True is not supported")
        if not c.get("scale_attn_weights", True):
            raise UnsupportedError("GPT2LMHeadModel: scale_attn_weights=False is not supported")
        # scale_attn_by_inverse_layer_idx: GPT2Attention.scaling /= (layer_idx + 1);
        # folded into the query projection of layer i by the weight mapping
        # (Plan.query_scales), exact up to float32 rounding.
        # reorder_and_upcast_attn: _upcast_and_reordered_attn computes the
        # same scaled scores and softmax in float32; Parley always does, so
        # it changes nothing here.
        hidden = _int(c["n_embd"], "n_embd")
        n_pos = _int(c["n_positions"], "n_positions")
        stack = dict(
            num_layers=_int(c["n_layer"], "n_layer"), hidden_size=hidden, num_heads=_int(c["n_head"], "n_head"),
            ffn_size=_int(c.get("n_inner") or 4 * hidden, "n_inner"),
            activation=_activation(c["activation_function"], "activation_function"),
            gated_ffn=False, norm="LayerNorm", norm_placement="Pre",
            norm_epsilon=float(c["layer_norm_epsilon"]), qkv_bias=True, out_bias=True, ffn_bias=True,
            final_norm=True, position="Learned", max_positions=n_pos, position_offset=0,
        )
        if max_positions is not None:
            if max_positions > n_pos:
                raise ConversionError(f"--max-positions {max_positions} exceeds n_positions {n_pos}")
            # The learned table keeps its n_positions rows; only the limit shrinks.
            warnings.append("--max-positions does not shrink GPT-2's learned position table")
        return stack, {"tie_word_embeddings": bool(c["tie_word_embeddings"])}

    hidden = _int(c["hidden_size"], "hidden_size")
    heads = _int(c["num_attention_heads"], "num_attention_heads")
    kv = c.get("num_key_value_heads") or heads
    head_dim = c.get("head_dim") or hidden // heads
    if heads * head_dim != hidden and not c.get("head_dim"):
        raise ConversionError(f"{arch}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    hf_max = _int(c["max_position_embeddings"], "max_position_embeddings")
    max_pos = hf_max if max_positions is None else max_positions
    if c.get("pretraining_tp", 1) not in (1, None):
        warnings.append("pretraining_tp > 1 is a training-time split; ignored as transformers does at inference")
    attn_bias = bool(c.get("attention_bias", False))
    qkv_bias, out_bias, qk_norm = attn_bias, attn_bias, False
    if arch == "Qwen2ForCausalLM":
        qkv_bias, out_bias = True, False  # Qwen2Attention: q/k/v bias=True, o_proj bias=False
    elif arch == "Qwen3ForCausalLM":
        qk_norm = True  # Qwen3Attention: RMSNorm(head_dim) on each head of q and k, before RoPE
    elif arch == "MistralForCausalLM":
        qkv_bias = out_bias = False  # MistralAttention: no biases, attention_bias is ignored

    windows = _layer_windows(arch, c, max_pos, warnings)
    mlp_bias = bool(c.get("mlp_bias", False)) if arch == "LlamaForCausalLM" else False
    stack = dict(
        num_layers=_int(c["num_hidden_layers"], "num_hidden_layers"), hidden_size=hidden, num_heads=heads,
        num_kv_heads=_int(kv, "num_key_value_heads"), head_dim=_int(head_dim, "head_dim"),
        ffn_size=_int(c["intermediate_size"], "intermediate_size"),
        activation=_activation(c["hidden_act"], "hidden_act"), gated_ffn=True,
        norm="RMSNorm", norm_placement="Pre", norm_epsilon=float(c["rms_norm_eps"]),
        qkv_bias=qkv_bias, out_bias=out_bias, ffn_bias=mlp_bias, qk_norm=qk_norm, final_norm=True,
        position="Rotary", max_positions=max_pos, rope_interleaved=False,  # HF rotate_half: half-split
        layer_windows=windows,
    )
    _rope(c, stack, max_pos)
    return stack, {"tie_word_embeddings": bool(c["tie_word_embeddings"])}


def _encoder_decoder(arch: str, c: _Cfg, max_positions: int | None, plan: Plan) -> tuple[dict, dict, dict]:
    d = _int(c["d_model"], "d_model")
    hf_max = _int(c["max_position_embeddings"], "max_position_embeddings")
    if max_positions is not None and max_positions > hf_max:
        raise ConversionError(f"--max-positions {max_positions} exceeds max_position_embeddings {hf_max}")
    act = _activation(c["activation_function"], "activation_function")
    # BartScaledWordEmbedding & co: embed_tokens(ids) * sqrt(d_model) when scale_embedding.
    scale = math.sqrt(d) if c["scale_embedding"] else 1.0
    for key in ("normalize_before", "add_final_layer_norm", "normalize_embedding", "add_bias_logits"):
        if key in c.raw and arch != "MBartForConditionalGeneration":
            # Keys of long-gone BART variants; transformers 5 ignores them,
            # refuse rather than guess what the checkpoint expects.
            if c.raw[key]:
                raise UnsupportedError(f"{arch}: config option {key}={c.raw[key]!r} is not supported")
    pad = c.get("pad_token_id")
    common = dict(hidden_size=d, activation=act, gated_ffn=False, norm="LayerNorm",
                  norm_epsilon=_TORCH_LAYER_NORM_EPS, qkv_bias=True, out_bias=True, ffn_bias=True,
                  embedding_scale=scale)
    if arch == "MarianMTModel":
        # Post-norm layers (MarianEncoderLayer = BartEncoderLayer), no
        # embedding LayerNorm, no final LayerNorm; MarianSinusoidalPositionalEmbedding:
        # row p (no offset), sin in the first half, cos in the second.
        fam = dict(norm_placement="Post", embedding_norm=False, final_norm=False, position="Sinusoidal",
                   position_offset=0)
        plan.sinusoidal = "marian"
        share = bool(c["share_encoder_decoder_embeddings"])
        # MarianConfig: decoder_vocab_size defaults to vocab_size; MarianModel
        # builds a decoder table (and lm_head, final_logits_bias) of that size
        # only when the embeddings are not shared.
        dec_vocab = _int(c.get("decoder_vocab_size") or c["vocab_size"], "decoder_vocab_size")
        if share and dec_vocab != c["vocab_size"]:
            raise ConversionError(f"MarianMTModel: decoder_vocab_size={dec_vocab} differs from vocab_size="
                                  f"{c['vocab_size']} but share_encoder_decoder_embeddings is true")
        if not share and dec_vocab != c["vocab_size"]:
            plan.decoder_vocab_size = dec_vocab
        plan.share_embeddings = share
        rules = ("index", "index")
    elif arch == "M2M100ForConditionalGeneration":
        # Pre-norm layers, final LayerNorm per stack (encoder.layer_norm,
        # decoder.layer_norm), no embedding LayerNorm.
        # M2M100SinusoidalPositionalEmbedding: row = padding_idx + 1 + p, table
        # built by get_embedding() in float32 (sin | cos halves, row padding_idx zeroed).
        if pad is None:
            raise ConversionError("M2M100ForConditionalGeneration: pad_token_id is required (positions depend on it)")
        fam = dict(norm_placement="Pre", embedding_norm=False, final_norm=True, position="Sinusoidal",
                   position_offset=_int(pad, "pad_token_id") + 1)
        plan.sinusoidal = "m2m100"
        rules = ("non_pad_count", "index")
    elif arch == "BartForConditionalGeneration":
        # Post-norm layers, layernorm_embedding after (tokens*scale + positions),
        # no final LayerNorm; BartLearnedPositionalEmbedding: row = p + 2.
        fam = dict(norm_placement="Post", embedding_norm=True, final_norm=False, position="Learned",
                   position_offset=2)
        rules = ("index", "index")
    else:  # MBart
        # Pre-norm layers, layernorm_embedding, final layer_norm per stack,
        # MBartLearnedPositionalEmbedding: row = p + 2.
        fam = dict(norm_placement="Pre", embedding_norm=True, final_norm=True, position="Learned",
                   position_offset=2)
        rules = ("index", "index")
    max_pos = hf_max if max_positions is None else max_positions
    enc = dict(common, **fam, num_layers=_int(c["encoder_layers"], "encoder_layers"),
               num_heads=_int(c["encoder_attention_heads"], "encoder_attention_heads"),
               ffn_size=_int(c["encoder_ffn_dim"], "encoder_ffn_dim"), max_positions=max_pos)
    dec = dict(common, **fam, num_layers=_int(c["decoder_layers"], "decoder_layers"),
               num_heads=_int(c["decoder_attention_heads"], "decoder_attention_heads"),
               ffn_size=_int(c["decoder_ffn_dim"], "decoder_ffn_dim"), max_positions=max_pos)
    plan.pad_token_id = pad
    plan.metadata["parley.position_ids.encoder"] = rules[0]
    plan.metadata["parley.position_ids.decoder"] = rules[1]
    return enc, dec, {"tie_word_embeddings": bool(c["tie_word_embeddings"])}


def plan_from_hf(config: dict[str, Any], generation_config: dict[str, Any] | None = None, *,
                 max_positions: int | None = None) -> Plan:
    """Maps the parsed config.json (and generation_config.json) to a Plan.
    Raises UnsupportedError / ConversionError naming what cannot be converted."""
    arch = architecture_of(config)
    c = _Cfg(config, FAMILY_DEFAULTS[arch])
    if c.raw.get("quantization_config"):
        raise UnsupportedError(f"{arch}: pre-quantized checkpoints (quantization_config) are not supported")
    warnings: list[str] = []
    metadata: dict[str, str] = {
        "source.architecture": arch,
        "source.model_type": str(config.get("model_type", "")),
        "source.transformers_version": str(config.get("transformers_version", "unknown")),
    }
    if max_positions is not None:
        max_positions = _int(max_positions, "--max-positions")
        if max_positions < 1:
            raise ConversionError("--max-positions must be >= 1")
    plan = Plan(architecture=arch, config=None, generation=None, metadata=metadata, family=arch,  # type: ignore[arg-type]
                warnings=warnings)
    vocab = _int(c["vocab_size"], "vocab_size")
    if arch in ENCODER_DECODER:
        enc, dec, extra = _encoder_decoder(arch, c, max_positions, plan)
        final_logits_bias = arch in ("MarianMTModel", "BartForConditionalGeneration", "MBartForConditionalGeneration")
        plan.config = ModelConfig(architecture=arch, kind="EncoderDecoder", vocab_size=vocab,
                                  encoder=StackConfig(**enc), decoder=StackConfig(**dec),
                                  final_logits_bias=final_logits_bias, decoder_vocab_size=plan.decoder_vocab_size,
                                  **extra)
    else:
        dec, extra = _decoder_only(arch, c, max_positions, warnings)
        if arch == "GPT2LMHeadModel" and c.get("scale_attn_by_inverse_layer_idx"):
            plan.query_scales = [1.0 / (i + 1) for i in range(dec["num_layers"])]
            metadata["parley.query_scale"] = "1/(layer+1) folded into q_proj (scale_attn_by_inverse_layer_idx)"
        plan.config = ModelConfig(architecture=arch, kind="DecoderOnly", vocab_size=vocab,
                                  decoder=StackConfig(**dec), final_logits_bias=False, **extra)
        metadata["parley.position_ids.decoder"] = "non_pad_count"
    # Generation token ids are decoder (target) ids.
    plan.generation = _generation(c, generation_config, plan.decoder_vocab_size or vocab, warnings, metadata)
    g = plan.generation
    if arch in ENCODER_DECODER and g.decoder_start_token_id < 0:
        # GenerationMixin._prepare_special_tokens (transformers 5): an
        # encoder-decoder model without decoder_start_token_id starts from
        # bos_token_id; with neither, generate() raises.
        if g.bos_token_id < 0:
            raise ConversionError(
                f"{arch}: neither decoder_start_token_id nor bos_token_id is set (config.json / "
                "generation_config.json); transformers' generate() refuses such a model, there is no start token")
        g.decoder_start_token_id = g.bos_token_id
        warnings.append(f"decoder_start_token_id is not set: bos_token_id {g.bos_token_id} is used, "
                        "as transformers' generate() does")
    return plan
