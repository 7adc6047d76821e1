"""The tensors a Parley config requires: the single source of truth for the
converter and its verification, following formats/TENSORS.md exactly."""

from __future__ import annotations

from ..types import ModelConfig, ModelKind, NormKind, PositionKind, StackConfig
from ..writer import normalize_config

def _head_dim(s: StackConfig) -> int:
    return s.head_dim or s.hidden_size // s.num_heads


def _norm(out: dict, name: str, s: StackConfig) -> None:
    out[f"{name}.weight"] = (s.hidden_size,)
    if s.norm == NormKind.LayerNorm:
        out[f"{name}.bias"] = (s.hidden_size,)


def _attn(out: dict, prefix: str, s: StackConfig, kv_in: int, *, self_attn: bool) -> None:
    hd = _head_dim(s)
    q_out = s.num_heads * hd
    kv_out = (s.num_kv_heads or s.num_heads) * hd
    out[f"{prefix}.q_proj.weight"] = (q_out, s.hidden_size)
    out[f"{prefix}.k_proj.weight"] = (kv_out, kv_in)
    out[f"{prefix}.v_proj.weight"] = (kv_out, kv_in)
    out[f"{prefix}.o_proj.weight"] = (s.hidden_size, q_out)
    if s.qkv_bias:
        out[f"{prefix}.q_proj.bias"] = (q_out,)
        out[f"{prefix}.k_proj.bias"] = (kv_out,)
        out[f"{prefix}.v_proj.bias"] = (kv_out,)
    if s.out_bias:
        out[f"{prefix}.o_proj.bias"] = (s.hidden_size,)
    if self_attn and s.qk_norm:
        out[f"{prefix}.q_norm.weight"] = (hd,)
        out[f"{prefix}.k_norm.weight"] = (hd,)


def _stack(out: dict, p: str, s: StackConfig, vocab: int, *, cross_from: StackConfig | None,
           embed_tokens: bool) -> None:
    if embed_tokens:
        out[f"{p}.embed_tokens.weight"] = (vocab, s.hidden_size)
    if s.position in (PositionKind.Learned, PositionKind.Sinusoidal):
        out[f"{p}.embed_positions.weight"] = (s.max_positions + s.position_offset, s.hidden_size)
    if s.embedding_norm:
        _norm(out, f"{p}.embedding_norm", s)
    for i in range(s.num_layers):
        L = f"{p}.layers.{i}"
        _norm(out, f"{L}.self_attn_norm", s)
        _attn(out, f"{L}.self_attn", s, s.hidden_size, self_attn=True)
        if cross_from is not None:
            _norm(out, f"{L}.cross_attn_norm", s)
            _attn(out, f"{L}.cross_attn", s, cross_from.hidden_size, self_attn=False)
        _norm(out, f"{L}.ffn_norm", s)
        out[f"{L}.ffn.up_proj.weight"] = (s.ffn_size, s.hidden_size)
        if s.gated_ffn:
            out[f"{L}.ffn.gate_proj.weight"] = (s.ffn_size, s.hidden_size)
        out[f"{L}.ffn.down_proj.weight"] = (s.hidden_size, s.ffn_size)
        if s.ffn_bias:
            out[f"{L}.ffn.up_proj.bias"] = (s.ffn_size,)
            if s.gated_ffn:
                out[f"{L}.ffn.gate_proj.bias"] = (s.ffn_size,)
            out[f"{L}.ffn.down_proj.bias"] = (s.hidden_size,)
    if s.final_norm:
        _norm(out, f"{p}.final_norm", s)


def required_tensors(config: ModelConfig | dict, *, separate_encoder_embeddings: bool = False) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor `config` requires (TENSORS.md).

    `separate_encoder_embeddings`: the file carries `encoder.embed_tokens.weight`
    (optional by the contract: absent means the encoder uses the decoder's)."""
    c = normalize_config(config)
    out: dict[str, tuple[int, ...]] = {}
    target = c.decoder_vocab_size or c.vocab_size  # format 1.3: separate target vocabulary
    if c.kind == ModelKind.EncoderDecoder:
        # Separate vocabularies need the encoder's own table.
        _stack(out, "encoder", c.encoder, c.vocab_size, cross_from=None,
               embed_tokens=separate_encoder_embeddings or target != c.vocab_size)
        _stack(out, "decoder", c.decoder, target, cross_from=c.encoder, embed_tokens=True)
    else:
        _stack(out, "decoder", c.decoder, c.vocab_size, cross_from=None, embed_tokens=True)
    if not c.tie_word_embeddings:
        out["lm_head.weight"] = (target, c.decoder.hidden_size)
    if c.final_logits_bias:
        out["final_logits_bias"] = (target,)
    return out


def optional_tensors(config: ModelConfig | dict) -> dict[str, tuple[int, ...]]:
    """Tensors the contract allows but does not require."""
    c = normalize_config(config)
    if c.kind == ModelKind.EncoderDecoder:
        return {"encoder.embed_tokens.weight": (c.vocab_size, c.encoder.hidden_size)}
    return {}


def is_linear_weight(name: str) -> bool:
    """Weights of Linear layers ([out, in]); what int8 storage quantizes."""
    return name == "lm_head.weight" or (name.endswith("_proj.weight") and ".layers." in name)
