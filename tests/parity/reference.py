"""A plain numpy forward pass over a .parley file (float64, no KV cache).

It is the executable statement of what the canonical layout and config mean
(formats/TENSORS.md, parley.fbs): the parity tests run it against the
transformers goldens, so a converter mapping that only "looks right" fails
here before the C++ runtime exists. Logits only; decoding is the runtime's.
"""

from __future__ import annotations

import math

import numpy as np

from parley_format import read_header, read_tensor, tensor_infos
from parley_format.convert.verify import config_from_header
from parley_format.types import Activation, ModelKind, NormKind, NormPlacement, PositionKind, RopeScaling

_erf = np.vectorize(math.erf)


class ParleyModel:
    def __init__(self, path: str):
        header = read_header(path)
        self.cfg = config_from_header(header)
        self.meta = {header.Metadata(i).Key().decode(): header.Metadata(i).Value().decode()
                     for i in range(header.MetadataLength())}
        infos = tensor_infos(header)
        self.w: dict[str, np.ndarray] = {}
        for info in infos:
            a = read_tensor(path, info.name)  # I4: unpacked to int8 values
            if info.dtype.name == "BF16":
                a = (a.astype(np.uint32) << 16).view(np.float32)
            self.w[info.name] = a.astype(np.float64)
        for info in infos:  # value = q * scale (per row, or per group of a row)
            if info.scheme == 0:
                continue
            scale = self.w[info.scale_tensor]
            if info.group_size:
                scale = np.repeat(scale, info.group_size, axis=1)
            else:
                scale = scale[:, None]
            self.w[info.name] = self.w[info.name] * scale

    # -- building blocks ---------------------------------------------------
    def norm(self, x, name, s):
        w = self.w[f"{name}.weight"]
        if s.norm == NormKind.RMSNorm:
            return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + s.norm_epsilon) * w
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + s.norm_epsilon) * w + self.w[f"{name}.bias"]

    def linear(self, x, name):
        y = x @ self.w[f"{name}.weight"].T
        b = self.w.get(f"{name}.bias")
        return y if b is None else y + b

    @staticmethod
    def act(x, a):
        if a == Activation.ReLU:
            return np.maximum(x, 0)
        if a == Activation.GeluErf:
            return 0.5 * x * (1 + _erf(x / math.sqrt(2)))
        if a == Activation.GeluTanh:
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        return x / (1 + np.exp(-x))

    @staticmethod
    def inv_freq(s, hd):
        dim = s.rope_dim or hd
        inv = 1.0 / (float(np.float32(s.rope_theta)) ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
        if s.rope_scaling == RopeScaling.Linear:
            inv = inv / s.rope_scaling_factor
        elif s.rope_scaling == RopeScaling.Llama3:
            # transformers modeling_rope_utils._compute_llama3_parameters
            f, lo, hi = s.rope_scaling_factor, s.rope_low_freq_factor, s.rope_high_freq_factor
            old = s.rope_original_max_positions
            low_wl, high_wl = old / lo, old / hi
            wl = 2 * math.pi / inv
            scaled = np.where(wl > low_wl, inv / f, inv)
            smooth = (old / wl - lo) / (hi - lo)
            smoothed = (1 - smooth) * scaled / f + smooth * scaled
            medium = ~(wl < high_wl) & ~(wl > low_wl)
            inv = np.where(medium, smoothed, scaled)
        return inv

    def rope(self, x, pos, s, hd):
        # x: [B, H, T, hd]; pos: [B, T]; half-split (HF rotate_half) unless interleaved.
        inv = self.inv_freq(s, hd)
        ang = pos[:, None, :, None].astype(np.float64) * inv[None, None, None, :]
        cos, sin = np.cos(ang), np.sin(ang)
        d = 2 * inv.shape[0]
        xr, rest = x[..., :d], x[..., d:]
        if s.rope_interleaved:
            x1, x2 = xr[..., 0::2], xr[..., 1::2]
            out = np.empty_like(xr)
            out[..., 0::2] = x1 * cos - x2 * sin
            out[..., 1::2] = x2 * cos + x1 * sin
        else:
            x1, x2 = xr[..., : d // 2], xr[..., d // 2:]
            out = np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
        return np.concatenate([out, rest], axis=-1)

    def attention(self, x, kv, name, s, mask, pos_q=None, pos_k=None, self_attn=True):
        B, Tq, _ = x.shape
        Tk = kv.shape[1]
        hd = s.head_dim or s.hidden_size // s.num_heads
        H, KV = s.num_heads, s.num_kv_heads or s.num_heads
        q = self.linear(x, f"{name}.q_proj").reshape(B, Tq, H, hd).transpose(0, 2, 1, 3)
        k = self.linear(kv, f"{name}.k_proj").reshape(B, Tk, KV, hd).transpose(0, 2, 1, 3)
        v = self.linear(kv, f"{name}.v_proj").reshape(B, Tk, KV, hd).transpose(0, 2, 1, 3)
        if self_attn and s.qk_norm:  # per-head RMSNorm before RoPE (Qwen3Attention)
            eps = s.norm_epsilon
            q = q / np.sqrt(np.mean(q * q, -1, keepdims=True) + eps) * self.w[f"{name}.q_norm.weight"]
            k = k / np.sqrt(np.mean(k * k, -1, keepdims=True) + eps) * self.w[f"{name}.k_norm.weight"]
        if self_attn and s.position == PositionKind.Rotary:
            q, k = self.rope(q, pos_q, s, hd), self.rope(k, pos_k, s, hd)
        k = np.repeat(k, H // KV, axis=1)
        v = np.repeat(v, H // KV, axis=1)
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
        scores = np.where(mask[:, None, :, :], scores, -1e30)
        scores = scores - scores.max(-1, keepdims=True)
        p = np.exp(scores)
        p = p / p.sum(-1, keepdims=True)
        o = (p @ v).transpose(0, 2, 1, 3).reshape(B, Tq, H * hd)
        return self.linear(o, f"{name}.o_proj")

    def positions(self, ids, mask, rule):
        B, T = ids.shape
        if rule == "non_pad_count":
            return np.maximum(np.cumsum(mask, -1) - 1, 0)
        return np.broadcast_to(np.arange(T), (B, T))

    def stack(self, p, s, ids, key_mask, pos, causal, enc=None, enc_mask=None):
        embed = self.w.get(f"{p}.embed_tokens.weight", self.w["decoder.embed_tokens.weight"])
        x = embed[ids] * s.embedding_scale
        if s.position in (PositionKind.Learned, PositionKind.Sinusoidal):
            x = x + self.w[f"{p}.embed_positions.weight"][pos + s.position_offset]
        if s.embedding_norm:
            x = self.norm(x, f"{p}.embedding_norm", s)
        B, T = ids.shape
        mask = np.broadcast_to(key_mask[:, None, :].astype(bool), (B, T, T))
        if causal:
            mask = mask & np.tril(np.ones((T, T), bool))[None]
        pre = s.norm_placement == NormPlacement.Pre
        for i in range(s.num_layers):
            L = f"{p}.layers.{i}"
            lmask = mask
            w = s.layer_windows[i] if s.layer_windows else 0
            if w:  # sliding window: key j visible from query t iff j > t - w (transformers' sliding_window_overlay)
                t, j = np.arange(T)[:, None], np.arange(T)[None, :]
                lmask = mask & (j > t - w)[None]
            blocks = [("self_attn_norm", lambda h, m=lmask: self.attention(h, h, f"{L}.self_attn", s, m, pos, pos))]
            if enc is not None:
                xmask = np.broadcast_to(enc_mask[:, None, :].astype(bool), (B, T, enc.shape[1]))
                blocks.append(("cross_attn_norm",
                               lambda h: self.attention(h, enc, f"{L}.cross_attn", s, xmask, self_attn=False)))
            blocks.append(("ffn_norm", lambda h: self.ffn(h, f"{L}.ffn", s)))
            for norm_name, fn in blocks:
                if pre:
                    x = x + fn(self.norm(x, f"{L}.{norm_name}", s))
                else:
                    x = self.norm(x + fn(x), f"{L}.{norm_name}", s)
        if s.final_norm:
            x = self.norm(x, f"{p}.final_norm", s)
        return x

    def ffn(self, x, name, s):
        up = self.linear(x, f"{name}.up_proj")
        h = self.act(self.linear(x, f"{name}.gate_proj"), s.activation) * up if s.gated_ffn else self.act(up, s.activation)
        return self.linear(h, f"{name}.down_proj")

    def logits(self, x):
        lm = self.w["decoder.embed_tokens.weight"] if self.cfg.tie_word_embeddings else self.w["lm_head.weight"]
        y = x @ lm.T
        if self.cfg.final_logits_bias:
            y = y + self.w["final_logits_bias"]
        return y

    def forward(self, input_ids, attention_mask, decoder_input_ids=None, position_ids=None):
        ids = np.asarray(input_ids)
        mask = np.asarray(attention_mask)
        c = self.cfg
        if c.kind == ModelKind.EncoderDecoder:
            epos = self.positions(ids, mask, self.meta.get("parley.position_ids.encoder", "index"))
            enc = self.stack("encoder", c.encoder, ids, mask, epos, causal=False)
            dids = np.asarray(decoder_input_ids)
            dmask = np.ones_like(dids)
            dpos = self.positions(dids, dmask, self.meta.get("parley.position_ids.decoder", "index"))
            x = self.stack("decoder", c.decoder, dids, dmask, dpos, causal=True, enc=enc, enc_mask=mask)
        else:
            pos = (np.asarray(position_ids) if position_ids is not None
                   else self.positions(ids, mask, self.meta.get("parley.position_ids.decoder", "index")))
            x = self.stack("decoder", c.decoder, ids, mask, pos, causal=True)
        return self.logits(x)
