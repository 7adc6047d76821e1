"""Storage types for converted weights.

Decision (documented in the package README):
  * float32: everything F32.
  * float16 / bfloat16: every tensor of rank >= 2 (Linear weights, token and
    position embeddings, lm_head) in the chosen type; rank-1 tensors (norm
    weights and biases, linear biases, q/k norms, final_logits_bias) stay F32:
    they are tiny and the runtime adds/multiplies them in F32 anyway.
  * int8: Linear weights (`*_proj.weight` in layers, untied `lm_head.weight`)
    are I8, symmetric per output channel (axis 0):
        scale[o] = max_i |w[o, i]| / 127   (1.0 for an all-zero row)
        q[o, i]  = clamp(round_half_even(w[o, i] / scale[o]), -127, 127)
    with `<name>.scale` ([out], F32) named by the tensor's Quantization.
    With a group size (`--group-size`), the layers' Linear weights are I8
    group-wise instead: the same rule per group of `group_size` inputs.
  * int4: the layers' Linear weights are I4 group-wise (format 1.2), per group of
    `group_size` consecutive elements of a row (default 64):
        e        = the element of largest magnitude in the group (sign kept)
        scale    = e / -8                     (1.0 for an all-zero group)
        q        = clamp(round_half_even(w / scale), -8, 7)
    so the extreme element is exactly -8 * scale and the other side reaches
    7 * |scale| (llama.cpp's Q4_0 rule; scales may be negative). Measured
    relative Frobenius error on 1024x1024 Gaussian weights, group 32/64/128:
    this rule 0.086/0.095/0.103, `max|w| / 8` with clamping 0.094/0.099/0.106,
    `max|w| / 7` 0.097/0.108/0.117. Scales: `<name>.scale`, F32
    [out, in / group_size]. A Linear weight whose input size the group does
    not divide takes the largest of 128/64/32 below it that does; if none
    does it is stored I8 per output channel (a warning says so).
  * int8 and int4: token embeddings (`*.embed_tokens.weight`) are I8 per
    row (the int8 rule above, axis 0 = vocabulary): the same tensor serves
    the tied lm_head, where its rows are the output features. An untied
    `lm_head.weight` is I8 per output channel too: measured on tiny random
    Llama models (hidden 128, vocab 512, three seeds; only the lm_head
    quantized, numpy float64 reference forward), int4 g64 moved the logits by
    9-11 % of their range and changed the top-1 token at 14-17 % of
    positions (g32: 8-9 %, 13-16 %), int8 per row by 0.7 % and 0-1 %
    (llama.cpp likewise keeps its output matrix at 6 bits in Q4_0 files).
    Everything else (position tables, norms, biases) stays F32.
  * `keep_f32` (fnmatch patterns on canonical names) keeps matching tensors
    F32 in every storage type.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np

from ..i4 import pack_i4
from ..types import Quantization
from ..writer import BF16, GROUP_SIZES, I4, Quantized
from .required import is_linear_weight

STORAGE_DTYPES = ("float32", "float16", "bfloat16", "int8", "int4")
DEFAULT_INT4_GROUP_SIZE = 64


def f32_to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bits (NaN kept quiet)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    u = a.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        rounded[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: (q [n, k] int8, scale [n] f32)."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.max(np.abs(w), axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    scale = (amax / np.float32(127.0)).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def quantize_int8_groupwise(w: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per group: (q [n, k] int8, scale [n, k / group_size] f32)."""
    w = np.asarray(w, dtype=np.float32)
    n, k = w.shape
    g = w.reshape(n, k // group_size, group_size)
    scale = (np.max(np.abs(g), axis=2) / np.float32(127.0)).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(g / scale[:, :, None]), -127, 127).astype(np.int8)
    return q.reshape(n, k), scale


def quantize_int4(w: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int4 per group (Q4_0 rule, see the module doc): (q [n, k]
    int8 values in [-8, 7], scale [n, k / group_size] f32)."""
    w = np.asarray(w, dtype=np.float32)
    n, k = w.shape
    g = w.reshape(n, k // group_size, group_size)
    at = np.argmax(np.abs(g), axis=2)[:, :, None]
    extreme = np.take_along_axis(g, at, axis=2)[:, :, 0]
    scale = (extreme / np.float32(-8.0)).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(g / scale[:, :, None]), -8, 7).astype(np.int8)
    return q.reshape(n, k), scale


def dequantize(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """q * scale for per-row ([n]) or group-wise ([n, k / group]) scales, float32."""
    q = np.asarray(q, dtype=np.float32)
    if scale.ndim == 1:
        return q * scale[:, None]
    return q * np.repeat(scale, q.shape[1] // scale.shape[1], axis=1)


def is_token_embedding(name: str) -> bool:
    """Token embedding tables ([vocab, hidden]); also the tied lm_head."""
    return name.endswith(".embed_tokens.weight")


def group_for(k: int, group_size: int) -> int | None:
    """The largest group size <= `group_size` that divides `k`, or None."""
    for g in sorted(GROUP_SIZES, reverse=True):
        if g <= group_size and k % g == 0:
            return g
    return None


def keep_f32(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass
class TensorError:
    """The error storage introduced into one tensor (real values vs stored)."""

    name: str
    stored: str  # e.g. "i4 g64", "i8 per-row", "f16"
    shape: tuple[int, ...]
    rel_error: float  # ||W - stored(W)||_F / ||W||_F (0 for an all-zero tensor)
    max_abs_error: float  # max |W - stored(W)|


def _error(name: str, stored: str, w: np.ndarray, approx: np.ndarray) -> TensorError:
    w64 = w.astype(np.float64)
    diff = w64 - approx.astype(np.float64)
    norm = float(np.linalg.norm(w64))
    rel = float(np.linalg.norm(diff)) / norm if norm > 0 else 0.0
    return TensorError(name, stored, tuple(w.shape), rel, float(np.max(np.abs(diff), initial=0.0)))


def _quantized_entries(name: str, q, scale: np.ndarray, scheme: str, group_size: int = 0) -> dict[str, object]:
    sname = f"{name}.scale"
    quant = Quantization(scheme=scheme, axis=0, scale_tensor=sname, group_size=group_size)
    return {name: Quantized(q, quant), sname: scale}


def store(name: str, value: np.ndarray, dtype: str, *, group_size: int | None = None,
          keep_f32_patterns=(), warnings: list[str] | None = None,
          errors: list[TensorError] | None = None) -> dict[str, object]:
    """Returns the writer entries for one canonical tensor. Appends the
    storage error of every tensor not stored exactly (F16, BF16, I8, I4) to
    `errors`, and a line per fallback to `warnings`."""
    value = np.ascontiguousarray(value, dtype=np.float32)
    if not np.all(np.isfinite(value)):
        from .errors import ConversionError

        raise ConversionError(f"tensor {name!r} holds NaN or infinite values")
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"unknown storage dtype {dtype!r} (one of {', '.join(STORAGE_DTYPES)})")
    errs = errors if errors is not None else []
    if dtype == "float32" or value.ndim < 2 or keep_f32(name, keep_f32_patterns):
        return {name: value}
    if dtype == "float16":
        if np.max(np.abs(value), initial=0.0) > 65504.0:
            from .errors import ConversionError

            raise ConversionError(f"tensor {name!r} has values beyond the float16 range; use bfloat16 or float32")
        half = value.astype(np.float16)
        errs.append(_error(name, "f16", value, half.astype(np.float32)))
        return {name: half}
    if dtype == "bfloat16":
        bits = f32_to_bf16_bits(value)
        errs.append(_error(name, "bf16", value, bf16_bits_to_f32(bits)))
        return {name: BF16(bits)}
    # int8 / int4
    per_row = is_token_embedding(name) or name == "lm_head.weight"
    if not per_row and not is_linear_weight(name):
        return {name: value}
    if value.ndim != 2:
        return {name: value}
    if not per_row and (dtype == "int4" or group_size):
        wanted = group_size or DEFAULT_INT4_GROUP_SIZE
        g = group_for(value.shape[1], wanted)
        if g is None:
            if warnings is not None:
                warnings.append(f"{name}: no group size of {', '.join(map(str, GROUP_SIZES))} divides its "
                                f"{value.shape[1]} inputs; stored int8 per output channel")
            per_row = True
        else:
            if g != wanted and warnings is not None:
                warnings.append(f"{name}: group size {wanted} does not divide its {value.shape[1]} inputs; "
                                f"used {g}")
            if dtype == "int4":
                q, scale = quantize_int4(value, g)
                errs.append(_error(name, f"i4 g{g}", value, dequantize(q, scale)))
                return _quantized_entries(name, I4(pack_i4(q), q.shape), scale, "SymmetricGroupwise", g)
            q, scale = quantize_int8_groupwise(value, g)
            errs.append(_error(name, f"i8 g{g}", value, dequantize(q, scale)))
            return _quantized_entries(name, q, scale, "SymmetricGroupwise", g)
    q, scale = quantize_int8(value)
    errs.append(_error(name, "i8 per-row", value, dequantize(q, scale)))
    return _quantized_entries(name, q, scale, "SymmetricPerChannel")


def store_gguf_native(name: str, value: np.ndarray, source, *, keep_f32_patterns=(),
                      warnings: list[str] | None = None, errors: list[TensorError] | None = None) -> dict[str, object]:
    """`--dtype native` for a GGUF tensor: the closest precision Parley stores.

    `value` is gguf's dequantization of the tensor, `source` the
    (GGUFTensor, ExactBlocks | None) pair it came from (None: unknown, stored
    as float32). The storage error is measured against `value`.
      * F32 / F16 / BF16 stay F32 / F16 / BF16 (exact).
      * Linear weights in Q8_0 become I8 group-wise, Q4_0 I4 group-wise,
        group 32: the GGUF blocks themselves (q and the f16 scale, widened to
        f32), exact.
      * Linear weights in any other quantized type (Q4_1, Q5_*, K-quants...)
        are dequantized and stored I8 group-wise (group 32, the int8 rule of
        this module): Parley's I4 is symmetric and cannot hold Q4_1's offset,
        and re-quantizing to I4 would add a second 4-bit rounding on top of
        the file's own (measured on SmolLM2-135M-Instruct Q4_1: see
        formats/python/README.md), while I8 g32 keeps the dequantized values
        to within 0.4 % (rel. Frobenius).
      * Token embeddings and an untied lm_head in a quantized type are F16
        (the runtime reads F16 or per-row I8 tables natively; group-wise I8
        would be widened to F32 in memory). Measured on SmolLM2-135M-Instruct
        Q4_1 (token_embd Q8_0, tied): F16 keeps the dequantized table to
        2e-4 (rel. Frobenius), I8 per row to 1.2e-2, a 50x larger error on
        the tensor that also makes the logits.
    """
    value = np.ascontiguousarray(value, dtype=np.float32)
    if source is None or value.ndim < 2 or keep_f32(name, keep_f32_patterns):
        return store(name, value, "float32", errors=errors)
    tensor, blocks = source
    kind = tensor.type_name
    if kind in ("F32", "F64"):
        return store(name, value, "float32", errors=errors)
    if kind == "F16":
        return store(name, value, "float16", errors=errors)
    if kind == "BF16":
        return store(name, value, "bfloat16", errors=errors)
    per_row = is_token_embedding(name) or name == "lm_head.weight"
    if not per_row and not is_linear_weight(name):
        return store(name, value, "float32", errors=errors)
    if per_row:
        if np.max(np.abs(value), initial=0.0) <= 65504.0:
            return store(name, value, "float16", errors=errors)
        return store(name, value, "int8", warnings=warnings, errors=errors)
    if blocks is not None and value.ndim == 2 and (blocks.dtype == "i4" or int(blocks.q.min(initial=0)) >= -127):
        # Exact only if q * scale reproduces gguf's dequantization bit for bit.
        if np.array_equal(dequantize(blocks.q, blocks.scale), value):
            sch = "SymmetricGroupwise"
            if blocks.dtype == "i4":
                return _quantized_entries(name, I4(pack_i4(blocks.q), blocks.q.shape), blocks.scale, sch,
                                          blocks.group_size)
            return _quantized_entries(name, blocks.q, blocks.scale, sch, blocks.group_size)
    return store(name, value, "int8", group_size=32, warnings=warnings, errors=errors)
