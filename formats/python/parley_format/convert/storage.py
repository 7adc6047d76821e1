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
    Everything else (embeddings, position tables, norms, biases) stays F32.
"""

from __future__ import annotations

import numpy as np

from ..types import Quantization
from ..writer import BF16, Quantized
from .required import is_linear_weight

STORAGE_DTYPES = ("float32", "float16", "bfloat16", "int8")


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
    w = np.asarray(w, dtype=np.float32)
    amax = np.max(np.abs(w), axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    scale = (amax / np.float32(127.0)).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def store(name: str, value: np.ndarray, dtype: str) -> dict[str, object]:
    """Returns the writer entries for one canonical tensor."""
    value = np.ascontiguousarray(value, dtype=np.float32)
    if not np.all(np.isfinite(value)):
        from .errors import ConversionError

        raise ConversionError(f"tensor {name!r} holds NaN or infinite values")
    if dtype == "float32" or value.ndim < 2:
        return {name: value}
    if dtype == "float16":
        if np.max(np.abs(value), initial=0.0) > 65504.0:
            from .errors import ConversionError

            raise ConversionError(f"tensor {name!r} has values beyond the float16 range; use bfloat16 or float32")
        return {name: value.astype(np.float16)}
    if dtype == "bfloat16":
        return {name: BF16(f32_to_bf16_bits(value))}
    if dtype == "int8":
        if not is_linear_weight(name):
            return {name: value}
        q, scale = quantize_int8(value)
        sname = f"{name}.scale"
        return {
            name: Quantized(q, Quantization(scheme="SymmetricPerChannel", axis=0, scale_tensor=sname)),
            sname: scale,
        }
    raise ValueError(f"unknown storage dtype {dtype!r} (one of {', '.join(STORAGE_DTYPES)})")
