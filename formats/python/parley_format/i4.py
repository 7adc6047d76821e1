"""Packing of signed 4-bit integers (DType.I4, format 1.2).

Two's-complement values in [-8, 7], two per byte along the last dimension:
element 2i in the low nibble, element 2i+1 in the high nibble (the layout of
PARLEY_DTYPE_I4 in include/parley/plugin.h). A row of k elements (k even)
takes k / 2 bytes.
"""

from __future__ import annotations

import numpy as np

I4_MIN, I4_MAX = -8, 7


def pack_i4(q: np.ndarray) -> np.ndarray:
    """int values in [-8, 7], shape [..., k] with k even -> uint8 [..., k // 2]."""
    q = np.asarray(q)
    if q.ndim < 1 or q.shape[-1] % 2:
        raise ValueError(f"i4 packing needs rank >= 1 and an even last dimension, got shape {list(q.shape)}")
    if q.dtype.kind not in "iu":
        raise ValueError(f"i4 packing takes integers, got {q.dtype}")
    if q.size and (q.min() < I4_MIN or q.max() > I4_MAX):
        raise ValueError(f"i4 values must lie in [{I4_MIN}, {I4_MAX}], got [{q.min()}, {q.max()}]")
    nib = (q.astype(np.int16) & 0xF).astype(np.uint8)
    return np.ascontiguousarray(nib[..., 0::2] | (nib[..., 1::2] << 4))


def unpack_i4(packed: np.ndarray, shape=None) -> np.ndarray:
    """uint8 [..., k // 2] -> int8 [..., k] (reshaped to `shape` when given)."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise ValueError(f"packed i4 data must be uint8, got {packed.dtype}")
    lo = (packed & 0xF).astype(np.int8)
    hi = (packed >> 4).astype(np.int8)
    out = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,) if packed.ndim else (2,), dtype=np.int8)
    out[..., 0::2] = np.where(lo > 7, lo - 16, lo)
    out[..., 1::2] = np.where(hi > 7, hi - 16, hi)
    return out.reshape(shape) if shape is not None else out
