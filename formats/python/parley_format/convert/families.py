"""Hugging Face state-dict names -> canonical Parley tensor names
(formats/TENSORS.md), per family. Works on float32 numpy arrays; yields
(canonical name, loader) pairs so tensors are produced one at a time."""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np

from ..types import ModelConfig
from .checkpoint import Checkpoint
from .errors import ConversionError
from .hf_config import Plan

Loader = Callable[[], np.ndarray]


class _Source:
    """Looks names up in the checkpoint, tolerating the base-model prefix
    being absent (old GPT-2 checkpoints store `h.0...`, not `transformer.h.0...`)."""

    def __init__(self, ck: Checkpoint, prefix: str):
        self.ck = ck
        self.prefix = prefix
        self.used: set[str] = set()

    def resolve(self, name: str) -> str | None:
        for cand in (name, name[len(self.prefix):] if self.prefix and name.startswith(self.prefix) else None):
            if cand is not None and cand in self.ck:
                return cand
        return None

    def has(self, name: str) -> bool:
        return self.resolve(name) is not None

    def get(self, name: str) -> np.ndarray:
        real = self.resolve(name)
        if real is None:
            raise ConversionError(f"checkpoint: tensor {name!r} is missing")
        self.used.add(real)
        return self.ck.get(real)

    def loader(self, name: str, fn: Callable[[np.ndarray], np.ndarray] | None = None) -> Loader:
        if not self.has(name):
            raise ConversionError(f"checkpoint: tensor {name!r} is missing")
        self.used.add(self.resolve(name))  # type: ignore[arg-type]
        return lambda: (fn or (lambda a: a))(self.get(name))


# --- sinusoidal tables --------------------------------------------------------

def marian_sinusoidal(n_pos: int, dim: int) -> np.ndarray:
    """MarianSinusoidalPositionalEmbedding.create_weight (transformers 5):
    float64 numpy, cast to float32; sin of the even columns of
    pos / 10000^(2*(j//2)/dim) in the first ceil(dim/2) columns, cos of the
    odd ones after them."""
    position_enc = np.array(
        [[pos / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)] for pos in range(n_pos)],
        dtype=np.float64,
    ).reshape(n_pos, dim)
    out = np.empty((n_pos, dim), np.float32)
    sentinel = dim // 2 if dim % 2 == 0 else dim // 2 + 1
    out[:, :sentinel] = np.sin(position_enc[:, 0::2]).astype(np.float32)
    out[:, sentinel:] = np.cos(position_enc[:, 1::2]).astype(np.float32)
    return out


def m2m100_sinusoidal(n_pos: int, dim: int, padding_idx: int | None) -> np.ndarray:
    """M2M100SinusoidalPositionalEmbedding.get_embedding (transformers 5),
    computed in float32 with torch when it is installed (bit-exact with HF);
    otherwise the same float32 arithmetic in numpy (may differ in the last
    ulp of sin/cos)."""
    half_dim = dim // 2
    step = math.log(10000) / (half_dim - 1)
    try:
        import torch

        emb = torch.exp(torch.arange(half_dim, dtype=torch.int64).float() * -step)
        emb = torch.arange(n_pos, dtype=torch.int64).float().unsqueeze(1) * emb.unsqueeze(0)
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1).view(n_pos, -1)
        if dim % 2 == 1:
            emb = torch.cat([emb, torch.zeros(n_pos, 1)], dim=1)
        out = emb.to(torch.float32).numpy().copy()
    except ImportError:
        freq = np.exp(np.arange(half_dim, dtype=np.float32) * np.float32(-step))
        emb = np.arange(n_pos, dtype=np.float32)[:, None] * freq[None, :]
        out = np.concatenate([np.sin(emb), np.cos(emb)], axis=1).astype(np.float32)
        if dim % 2 == 1:
            out = np.concatenate([out, np.zeros((n_pos, 1), np.float32)], axis=1)
    if padding_idx is not None and 0 <= padding_idx < n_pos:
        out[padding_idx, :] = 0
    return out


# --- families ----------------------------------------------------------------

_NORM = ("weight", "bias")


def _bart_like(plan: Plan, src: _Source) -> Iterator[tuple[str, Loader]]:
    cfg: ModelConfig = plan.config
    m = "model."
    # Token embeddings: `model.shared` (tied into both stacks) unless the
    # checkpoint has distinct encoder/decoder tables (Marian with
    # share_encoder_decoder_embeddings=False).
    dec_embed = next((n for n in (f"{m}decoder.embed_tokens.weight", f"{m}shared.weight") if src.has(n)), None)
    enc_embed = next((n for n in (f"{m}encoder.embed_tokens.weight", f"{m}shared.weight") if src.has(n)), None)
    if dec_embed is None or enc_embed is None:
        raise ConversionError(f"{plan.architecture}: token embeddings (model.shared.weight) missing from the checkpoint")
    yield "decoder.embed_tokens.weight", src.loader(dec_embed)
    # (transformers 5 unties encoder/decoder embeddings from `shared` too when
    # tie_word_embeddings=False; then each stack uses its own table.)
    if enc_embed != dec_embed and not np.array_equal(src.get(enc_embed), src.get(dec_embed)):
        yield "encoder.embed_tokens.weight", src.loader(enc_embed)
    src.used.update(n for n in (src.resolve(enc_embed), src.resolve(dec_embed)) if n)
    if src.has(f"{m}shared.weight"):
        src.used.add(src.resolve(f"{m}shared.weight"))  # type: ignore[arg-type]

    for p, stack in (("encoder", cfg.encoder), ("decoder", cfg.decoder)):
        rows = stack.max_positions + stack.position_offset
        if plan.sinusoidal == "marian":
            yield f"{p}.embed_positions.weight", (lambda rows=rows, d=stack.hidden_size: marian_sinusoidal(rows, d))
            src.used.add(src.resolve(f"{m}{p}.embed_positions.weight") or "")
        elif plan.sinusoidal == "m2m100":
            yield f"{p}.embed_positions.weight", (
                lambda rows=rows, d=stack.hidden_size: m2m100_sinusoidal(rows, d, plan.pad_token_id))
        else:
            name = f"{m}{p}.embed_positions.weight"
            have = src.ck.shape(src.resolve(name)) if src.has(name) else None
            if have is None or have[0] < rows or have[1] != stack.hidden_size:
                raise ConversionError(f"{plan.architecture}: {name} has shape {have}, need at least ({rows}, {stack.hidden_size})")
            yield f"{p}.embed_positions.weight", src.loader(name, lambda a, rows=rows: a[:rows])
        if stack.embedding_norm:
            for s in _NORM:
                yield f"{p}.embedding_norm.{s}", src.loader(f"{m}{p}.layernorm_embedding.{s}")
        if stack.final_norm:
            for s in _NORM:
                yield f"{p}.final_norm.{s}", src.loader(f"{m}{p}.layer_norm.{s}")
        for i in range(stack.num_layers):
            h, o = f"{m}{p}.layers.{i}", f"{p}.layers.{i}"
            attns = [("self_attn", "self_attn", "self_attn_layer_norm", "self_attn_norm")]
            if p == "decoder":
                attns.append(("encoder_attn", "cross_attn", "encoder_attn_layer_norm", "cross_attn_norm"))
            for hf_attn, pa, hf_norm, pn in attns:
                for proj, cproj in (("q_proj", "q_proj"), ("k_proj", "k_proj"), ("v_proj", "v_proj"), ("out_proj", "o_proj")):
                    for s in _NORM:
                        yield f"{o}.{pa}.{cproj}.{s}", src.loader(f"{h}.{hf_attn}.{proj}.{s}")
                for s in _NORM:
                    yield f"{o}.{pn}.{s}", src.loader(f"{h}.{hf_norm}.{s}")
            for s in _NORM:
                yield f"{o}.ffn_norm.{s}", src.loader(f"{h}.final_layer_norm.{s}")
                yield f"{o}.ffn.up_proj.{s}", src.loader(f"{h}.fc1.{s}")
                yield f"{o}.ffn.down_proj.{s}", src.loader(f"{h}.fc2.{s}")
    if not cfg.tie_word_embeddings:
        yield "lm_head.weight", src.loader("lm_head.weight")
    elif src.has("lm_head.weight"):
        src.used.add(src.resolve("lm_head.weight"))  # type: ignore[arg-type]
    if cfg.final_logits_bias:
        if src.has("final_logits_bias"):
            yield "final_logits_bias", src.loader("final_logits_bias", lambda a: a.reshape(-1))
        else:  # HF initialises a missing buffer to zeros (_keys_to_ignore_on_load_missing)
            yield "final_logits_bias", (lambda: np.zeros(cfg.decoder_vocab_size or cfg.vocab_size, np.float32))


def _scaled(a: np.ndarray, f: np.float32 | None) -> np.ndarray:
    return a if f is None else (a * f).astype(a.dtype)


def _gpt2(plan: Plan, src: _Source) -> Iterator[tuple[str, Loader]]:
    cfg = plan.config
    t = "transformer."
    d = cfg.decoder.hidden_size
    yield "decoder.embed_tokens.weight", src.loader(f"{t}wte.weight")
    yield "decoder.embed_positions.weight", src.loader(f"{t}wpe.weight")
    for s in _NORM:
        yield f"decoder.final_norm.{s}", src.loader(f"{t}ln_f.{s}")
    for i in range(cfg.decoder.num_layers):
        h, o = f"{t}h.{i}", f"decoder.layers.{i}"
        for s in _NORM:
            yield f"{o}.self_attn_norm.{s}", src.loader(f"{h}.ln_1.{s}")
            yield f"{o}.ffn_norm.{s}", src.loader(f"{h}.ln_2.{s}")
        # Conv1D stores weight as [in, out]: transpose to [out, in]; c_attn
        # packs q | k | v along the output dimension.
        # q_proj carries plan.query_scales[i] when set (see hf_config).
        for k, part in enumerate(("q_proj", "k_proj", "v_proj")):
            f = np.float32(plan.query_scales[i]) if k == 0 and plan.query_scales else None
            yield f"{o}.self_attn.{part}.weight", src.loader(
                f"{h}.attn.c_attn.weight",
                lambda a, k=k, f=f: np.ascontiguousarray(_scaled(a[:, k * d:(k + 1) * d], f).T))
            yield f"{o}.self_attn.{part}.bias", src.loader(
                f"{h}.attn.c_attn.bias", lambda a, k=k, f=f: _scaled(a[k * d:(k + 1) * d], f).copy())
        T = lambda a: np.ascontiguousarray(a.T)  # noqa: E731
        yield f"{o}.self_attn.o_proj.weight", src.loader(f"{h}.attn.c_proj.weight", T)
        yield f"{o}.self_attn.o_proj.bias", src.loader(f"{h}.attn.c_proj.bias")
        yield f"{o}.ffn.up_proj.weight", src.loader(f"{h}.mlp.c_fc.weight", T)
        yield f"{o}.ffn.up_proj.bias", src.loader(f"{h}.mlp.c_fc.bias")
        yield f"{o}.ffn.down_proj.weight", src.loader(f"{h}.mlp.c_proj.weight", T)
        yield f"{o}.ffn.down_proj.bias", src.loader(f"{h}.mlp.c_proj.bias")
        for buf in (f"{h}.attn.bias", f"{h}.attn.masked_bias"):  # causal-mask buffers of old checkpoints
            if src.has(buf):
                src.used.add(src.resolve(buf))  # type: ignore[arg-type]
    if not cfg.tie_word_embeddings:
        yield "lm_head.weight", src.loader("lm_head.weight")
    elif src.has("lm_head.weight"):
        src.used.add(src.resolve("lm_head.weight"))  # type: ignore[arg-type]


def _llama_like(plan: Plan, src: _Source) -> Iterator[tuple[str, Loader]]:
    cfg = plan.config
    s = cfg.decoder
    m = "model."
    yield "decoder.embed_tokens.weight", src.loader(f"{m}embed_tokens.weight")
    yield "decoder.final_norm.weight", src.loader(f"{m}norm.weight")
    for i in range(s.num_layers):
        h, o = f"{m}layers.{i}", f"decoder.layers.{i}"
        yield f"{o}.self_attn_norm.weight", src.loader(f"{h}.input_layernorm.weight")
        yield f"{o}.ffn_norm.weight", src.loader(f"{h}.post_attention_layernorm.weight")
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            yield f"{o}.self_attn.{proj}.weight", src.loader(f"{h}.self_attn.{proj}.weight")
        if s.qkv_bias:
            for proj in ("q_proj", "k_proj", "v_proj"):
                yield f"{o}.self_attn.{proj}.bias", src.loader(f"{h}.self_attn.{proj}.bias")
        if s.out_bias:
            yield f"{o}.self_attn.o_proj.bias", src.loader(f"{h}.self_attn.o_proj.bias")
        if s.qk_norm:
            yield f"{o}.self_attn.q_norm.weight", src.loader(f"{h}.self_attn.q_norm.weight")
            yield f"{o}.self_attn.k_norm.weight", src.loader(f"{h}.self_attn.k_norm.weight")
        for proj in ("gate_proj", "up_proj", "down_proj"):
            yield f"{o}.ffn.{proj}.weight", src.loader(f"{h}.mlp.{proj}.weight")
            if s.ffn_bias:
                yield f"{o}.ffn.{proj}.bias", src.loader(f"{h}.mlp.{proj}.bias")
        rot = f"{h}.self_attn.rotary_emb.inv_freq"  # buffer in old checkpoints, recomputed
        if src.has(rot):
            src.used.add(src.resolve(rot))  # type: ignore[arg-type]
    if not cfg.tie_word_embeddings:
        yield "lm_head.weight", src.loader("lm_head.weight")
    elif src.has("lm_head.weight"):
        src.used.add(src.resolve("lm_head.weight"))  # type: ignore[arg-type]


def map_tensors(plan: Plan, ck: Checkpoint) -> tuple[list[tuple[str, Loader]], list[str]]:
    """Returns the canonical (name, loader) list and the checkpoint tensors
    that were not used (the caller refuses the model if any are left: an
    unknown weight means a feature this converter does not understand)."""
    arch = plan.architecture
    if arch == "GPT2LMHeadModel":
        src, gen = _Source(ck, "transformer."), _gpt2
    elif arch in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"):
        src, gen = _Source(ck, "model."), _llama_like
    else:
        src, gen = _Source(ck, "model."), _bart_like
    out = list(gen(plan, src))
    unused = sorted(n for n in ck.names() if n not in src.used)
    return out, unused
