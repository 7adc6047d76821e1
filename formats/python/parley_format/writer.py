"""The reference writer for Parley model files (formats/FORMAT.md)."""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import os
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import flatbuffers
import numpy as np
import xxhash

from ._fbs import (
    Blob as fb_Blob,
    ChatFormat as fb_ChatFormat,
    ChatTemplate as fb_ChatTemplate,
    GenerationConfig as fb_GenerationConfig,
    KeyValue as fb_KeyValue,
    Language as fb_Language,
    Model as fb_Model,
    ModelConfig as fb_ModelConfig,
    Quantization as fb_Quantization,
    SpecialToken as fb_SpecialToken,
    StackConfig as fb_StackConfig,
    Tensor as fb_Tensor,
    Tokenizer as fb_Tokenizer,
)
from .types import (
    Activation,
    ChatFormat,
    DecodeStyle,
    DType,
    GenerationConfig,
    Language,
    ModelConfig,
    ModelKind,
    NormKind,
    NormPlacement,
    Normalization,
    PositionKind,
    QuantScheme,
    Quantization,
    RopeScaling,
    SpecialToken,
    StackConfig,
    SystemPlacement,
    Tokenizer,
    TokenizerKind,
    TokenizerRole,
    coerce_dataclass,
    coerce_enum,
    dtype_nbytes,
)

# ---------------------------------------------------------------------------
# Constants of format 1.x (FORMAT.md section 1)

MAGIC = b"\x89PRLY\r\n\x1a"
FORMAT_MAJOR = 1
PREAMBLE_SIZE = 64
HEADER_OFFSET = 64
ALIGNMENT = 64
FILE_IDENTIFIER = b"PRLY"
MAX_HEADER_LENGTH = 256 * 1024 * 1024
MAX_RANK = 8
MAX_NAME_BYTES = 512
GROUP_SIZES = (32, 64, 128)  # SymmetricGroupwise group sizes a reader accepts
# u8[8] magic, u16 major, u16 minor, u32 preamble_size, u64 header_offset,
# u64 header_length, u64 header_checksum, u64 data_offset, u64 data_length
PREAMBLE_BODY = struct.Struct("<8sHHIQQQQQ")  # 56 bytes; + u64 preamble_checksum
assert PREAMBLE_BODY.size == 56

_U32_MAX = 2**32 - 1
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_ZERO_CHUNK = 16 * 1024 * 1024

_NUMPY_DTYPES = {
    np.dtype(np.float32): DType.F32,
    np.dtype(np.float16): DType.F16,
    np.dtype(np.int8): DType.I8,
    np.dtype(np.int32): DType.I32,
    np.dtype(np.uint8): DType.U8,
    np.dtype(np.int64): DType.I64,
}


def xxh3_64(data) -> int:
    """XXH3-64, seed 0, of a bytes-like object."""
    return xxhash.xxh3_64_intdigest(data)


@functools.lru_cache(maxsize=64)
def xxh3_64_of_zeros(length: int) -> int:
    """XXH3-64 (seed 0) of `length` zero bytes, streamed in 16 MiB chunks."""
    h = xxhash.xxh3_64()
    chunk = memoryview(bytes(min(length, _ZERO_CHUNK)))
    left = length
    while left:
        n = min(left, len(chunk))
        h.update(chunk[:n])
        left -= n
    return h.intdigest()


def align_up(n: int, alignment: int = ALIGNMENT) -> int:
    return (n + alignment - 1) // alignment * alignment


# ---------------------------------------------------------------------------
# Tensor inputs


@dataclass(frozen=True)
class BF16:
    """A bfloat16 tensor given as its raw bits (a uint16 array)."""

    bits: np.ndarray


@dataclass(frozen=True)
class I4:
    """A signed 4-bit tensor (format 1.2) of logical `shape` given as its packed
    bytes: a uint8 array of prod(shape) / 2 bytes, element 2i in the low
    nibble (see parley_format.i4.pack_i4). The last dimension must be even."""

    packed: np.ndarray
    shape: Sequence[int]


@dataclass(frozen=True)
class ZeroTensor:
    """An all-zero tensor written sparsely: no bytes are written and no
    array is allocated, so it may be larger than RAM.

    `dtype` is a DType (member, int or name such as "F32"/"bf16") or a numpy
    dtype of a supported kind."""

    shape: Sequence[int]
    dtype: Any = DType.F32


@dataclass(frozen=True)
class Quantized:
    """Attaches a Quantization to a tensor value (ndarray, BF16 or ZeroTensor)."""

    data: Any
    quantization: Quantization | dict


@dataclass
class _Region:
    offset: int = 0
    length: int = 0
    checksum: int = 0
    payload: np.ndarray | bytes | None = None  # None: all zeros, not written


@dataclass
class _TensorEntry:
    name: str
    name_bytes: bytes
    dtype: DType
    shape: tuple[int, ...]
    region: _Region
    quantization: Quantization | None = None


def _numpy_to_bytes_view(arr: np.ndarray) -> np.ndarray:
    le = arr.dtype.newbyteorder("<")
    if arr.dtype != le:
        arr = arr.astype(le)
    arr = np.ascontiguousarray(arr)
    return arr.reshape(-1).view(np.uint8)


def _dtype_of(value: Any, what: str) -> DType:
    if isinstance(value, (DType, int, str)) and not isinstance(value, bool):
        if isinstance(value, str):
            try:
                return coerce_enum(DType, value, what)
            except ValueError:
                pass  # maybe a numpy dtype name such as "float32"
        else:
            return coerce_enum(DType, value, what)
    try:
        npd = np.dtype(value)
    except TypeError:
        raise ValueError(f"{what}: unsupported dtype {value!r}") from None
    if npd.name == "bfloat16":
        return DType.BF16
    d = _NUMPY_DTYPES.get(npd.newbyteorder("<"))
    if d is None:
        raise ValueError(
            f"{what}: unsupported dtype {npd} (supported: float32, float16, bfloat16 via BF16(), "
            "int8, int32, uint8, int64)"
        )
    return d


def _check_shape(shape: Iterable[Any], what: str) -> tuple[int, ...]:
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise ValueError(f"{what}: shape {shape!r} must be a sequence of integers") from None
    if len(dims) > MAX_RANK:
        raise ValueError(f"{what}: rank {len(dims)} exceeds the maximum rank {MAX_RANK}")
    for d in dims:
        if d < 0 or d >= 2**63:
            raise ValueError(f"{what}: dimension {d} out of range (0 <= dim < 2^63)")
    return dims


def _tensor_entry(name: Any, value: Any) -> _TensorEntry:
    if not isinstance(name, str):
        raise ValueError(f"tensor name {name!r} must be a str")
    name_bytes = name.encode("utf-8")
    what = f"tensor {name!r}"
    if not name_bytes:
        raise ValueError("tensor name must not be empty")
    if len(name_bytes) > MAX_NAME_BYTES:
        raise ValueError(f"{what}: name is {len(name_bytes)} bytes, more than {MAX_NAME_BYTES}")
    if b"\0" in name_bytes:
        raise ValueError(f"{what}: name contains a NUL character")

    quant = None
    if isinstance(value, Quantized):
        quant = coerce_dataclass(Quantization, value.quantization, f"{what} quantization")
        value = value.data
        if isinstance(value, Quantized):
            raise ValueError(f"{what}: nested Quantized")

    if isinstance(value, np.ndarray) and value.dtype.name == "bfloat16":  # e.g. ml_dtypes.bfloat16
        value = BF16(value.view(np.uint16))

    if isinstance(value, ZeroTensor):
        dtype = _dtype_of(value.dtype, what)
        shape = _check_shape(value.shape, what)
        region = _Region(payload=None)
    elif isinstance(value, I4):
        packed = value.packed
        if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8:
            raise ValueError(f"{what}: I4() takes a numpy uint8 array of packed nibbles, "
                             f"got {getattr(packed, 'dtype', type(packed).__name__)}")
        dtype = DType.I4
        shape = _check_shape(value.shape, what)
        if packed.size * 2 != math.prod(shape):
            raise ValueError(f"{what}: I4() holds {packed.size} bytes, shape {list(shape)} needs "
                             f"{math.prod(shape) / 2:g} (two elements per byte)")
        region = _Region(payload=_numpy_to_bytes_view(packed))
    elif isinstance(value, BF16):
        bits = value.bits
        if not isinstance(bits, np.ndarray):
            raise ValueError(f"{what}: BF16() takes a numpy uint16 array, got {type(bits).__name__}")
        if bits.dtype.name == "bfloat16":
            bits = bits.view(np.uint16)
        if bits.dtype.kind != "u" or bits.dtype.itemsize != 2:
            raise ValueError(f"{what}: BF16() takes a uint16 array of bfloat16 bits, got {bits.dtype}")
        dtype = DType.BF16
        shape = _check_shape(bits.shape, what)
        region = _Region(payload=_numpy_to_bytes_view(bits))
    elif isinstance(value, np.ndarray):
        if value.dtype.kind == "u" and value.dtype.itemsize == 2:
            raise ValueError(f"{what}: uint16 is not a Parley dtype; wrap bfloat16 bits as BF16(array)")
        dtype = _dtype_of(value.dtype, what)
        shape = _check_shape(value.shape, what)
        region = _Region(payload=_numpy_to_bytes_view(value))
    else:
        raise ValueError(
            f"{what}: unsupported value of type {type(value).__name__} "
            "(expected numpy.ndarray, BF16, I4, ZeroTensor or Quantized)"
        )

    if dtype == DType.I4 and (not shape or shape[-1] % 2):
        raise ValueError(f"{what}: dtype I4 needs rank >= 1 and an even last dimension "
                         f"(two elements per byte), got shape {list(shape)}")
    count = math.prod(shape)
    length = dtype_nbytes(dtype, count)
    if length >= 2**63:
        raise ValueError(f"{what}: {length} bytes is too large")
    region.length = length
    if region.payload is not None:
        assert region.payload.nbytes == length
    return _TensorEntry(name, name_bytes, dtype, shape, region, quant)


def _collect_tensors(tensors: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[_TensorEntry]:
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    entries: list[_TensorEntry] = []
    seen: set[bytes] = set()
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise ValueError("tensors must be a mapping name -> array or an iterable of (name, array) pairs") from None
        e = _tensor_entry(name, value)
        if e.name_bytes in seen:
            raise ValueError(f"duplicate tensor name {name!r}")
        seen.add(e.name_bytes)
        entries.append(e)
    entries.sort(key=lambda e: e.name_bytes)
    by_name = {e.name: e for e in entries}
    for e in entries:
        q = e.quantization
        if q is None:
            continue
        what = f"tensor {e.name!r} quantization"
        q = dataclasses.replace(q, scheme=coerce_enum(QuantScheme, q.scheme, f"{what} scheme"))
        q.axis = _int(q.axis, _I32_MIN, _I32_MAX, f"{what} axis")
        q.group_size = _int(q.group_size, 0, _U32_MAX, f"{what} group_size")
        e.quantization = q
        if q.scheme != QuantScheme.SymmetricGroupwise and q.group_size:
            raise ValueError(f"{what}: group_size {q.group_size} is only valid with scheme SymmetricGroupwise")
        if q.scheme == QuantScheme.None_:
            if q.scale_tensor is not None:
                raise ValueError(f"{what}: scheme None takes no scale_tensor")
            continue
        if q.scheme == QuantScheme.SymmetricPerChannel:
            # value = q * scale[channel]
            if e.dtype != DType.I8:
                raise ValueError(f"{what}: SymmetricPerChannel needs an I8 tensor, got {e.dtype.name}")
            if not (0 <= q.axis < len(e.shape)):
                raise ValueError(f"{what}: axis {q.axis} out of range for rank {len(e.shape)}")
            want: tuple[int, ...] = (e.shape[q.axis],)
            want_text = f"[{e.shape[q.axis]}] (dimension {q.axis} of {list(e.shape)})"
        else:
            # SymmetricGroupwise: value[r, c] = q[r, c] * scale[r, c // group_size]
            if e.dtype not in (DType.I8, DType.I4):
                raise ValueError(f"{what}: SymmetricGroupwise needs an I8 or I4 tensor, got {e.dtype.name}")
            if len(e.shape) != 2:
                raise ValueError(f"{what}: SymmetricGroupwise needs a 2-D tensor, got shape {list(e.shape)}")
            if q.axis != 0:
                raise ValueError(f"{what}: SymmetricGroupwise takes axis 0 (groups run along rows), got {q.axis}")
            if q.group_size not in GROUP_SIZES:
                raise ValueError(f"{what}: group_size {q.group_size} is not one of {', '.join(map(str, GROUP_SIZES))}")
            if e.shape[1] % q.group_size:
                raise ValueError(f"{what}: group_size {q.group_size} does not divide the row length {e.shape[1]}")
            want = (e.shape[0], e.shape[1] // q.group_size)
            want_text = f"{list(want)} (rows x row length / group_size)"
        if not q.scale_tensor:
            raise ValueError(f"{what}: scale_tensor is missing")
        scale = by_name.get(q.scale_tensor)
        if scale is None:
            raise ValueError(f"{what}: scale tensor {q.scale_tensor!r} is not in the tensor table")
        if scale.dtype != DType.F32:
            raise ValueError(f"{what}: scale tensor {q.scale_tensor!r} must be F32, got {scale.dtype.name}")
        if scale.shape != want:
            raise ValueError(f"{what}: scale tensor {q.scale_tensor!r} has shape {list(scale.shape)}, expected {want_text}")
        if scale.region.payload is not None:  # None: all zeros
            values = np.asarray(scale.region.payload).view("<f4")
            if not np.all(np.isfinite(values)):
                bad = int(np.flatnonzero(~np.isfinite(values))[0])
                raise ValueError(f"{what}: scale tensor {q.scale_tensor!r} element {bad} is not finite ({values[bad]})")
    return entries


# ---------------------------------------------------------------------------
# Config validation (FORMAT.md section 4, "Config ranges in format 1.0")


def _int(value: Any, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected an integer, got bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{what}: expected an integer, got {value!r}") from None
    if not lo <= v <= hi:
        raise ValueError(f"{what}: {v} out of range [{lo}, {hi}]")
    return v


def _f32(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{what}: expected a number, got {value!r}")
    with np.errstate(over="ignore"):
        v = np.float32(value)
    return float(v)


def _bool(value: Any, what: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{what}: expected a bool, got {value!r}")


_STACK_UINT_FIELDS = (
    "num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "ffn_size",
    "max_positions", "position_offset", "rope_dim", "rope_original_max_positions",
)
_STACK_FLOAT_FIELDS = (
    "norm_epsilon", "embedding_scale", "rope_theta", "rope_scaling_factor",
    "rope_low_freq_factor", "rope_high_freq_factor",
)
_STACK_BOOL_FIELDS = (
    "gated_ffn", "qkv_bias", "out_bias", "ffn_bias", "qk_norm", "embedding_norm",
    "final_norm", "rope_interleaved",
)
_STACK_ENUMS = {
    "activation": Activation,
    "norm": NormKind,
    "norm_placement": NormPlacement,
    "position": PositionKind,
    "rope_scaling": RopeScaling,
}


def _normalize_stack(value: Any, what: str, *, is_decoder: bool) -> StackConfig:
    s = dataclasses.replace(coerce_dataclass(StackConfig, value, what))
    for f in _STACK_UINT_FIELDS:
        setattr(s, f, _int(getattr(s, f), 0, _U32_MAX, f"{what}.{f}"))
    for f in _STACK_FLOAT_FIELDS:
        setattr(s, f, _f32(getattr(s, f), f"{what}.{f}"))
    for f in _STACK_BOOL_FIELDS:
        setattr(s, f, _bool(getattr(s, f), f"{what}.{f}"))
    for f, cls in _STACK_ENUMS.items():
        setattr(s, f, coerce_enum(cls, getattr(s, f), f"{what}.{f}"))

    def rng(f: str, lo: int, hi: int) -> None:
        v = getattr(s, f)
        if not lo <= v <= hi:
            raise ValueError(f"{what}.{f}: {v} out of range [{lo}, {hi}]")

    rng("num_layers", 1, 1024)  # the reader refuses an empty stack, encoder included
    rng("hidden_size", 1, 65536)
    rng("num_heads", 1, 1024)
    kv = s.num_kv_heads or s.num_heads
    if s.num_heads % kv:
        raise ValueError(f"{what}.num_kv_heads: {kv} does not divide num_heads {s.num_heads}")
    rng("head_dim", 0, 1024)
    head_dim = s.head_dim
    if head_dim == 0:
        if s.hidden_size % s.num_heads:
            raise ValueError(
                f"{what}.head_dim: 0 (= hidden_size / num_heads) but hidden_size {s.hidden_size} "
                f"is not divisible by num_heads {s.num_heads}"
            )
        head_dim = s.hidden_size // s.num_heads
        if head_dim > 1024:
            raise ValueError(f"{what}.head_dim: hidden_size / num_heads = {head_dim} exceeds 1024")
    rng("ffn_size", 1, 1048576)
    rng("max_positions", 1 if s.position in (PositionKind.Learned, PositionKind.Sinusoidal) else 0, 16777216)
    rng("position_offset", 0, 1 << 20)
    rng("rope_original_max_positions", 0, 16777216)
    if s.rope_dim % 2 or s.rope_dim > head_dim:
        raise ValueError(f"{what}.rope_dim: {s.rope_dim} must be even and <= head_dim {head_dim}")
    if not (math.isfinite(s.norm_epsilon) and 0.0 < s.norm_epsilon < 1.0):
        raise ValueError(f"{what}.norm_epsilon: {s.norm_epsilon} must be finite and in (0, 1) as a float32")
    if not (math.isfinite(s.rope_theta) and s.rope_theta > 0.0):
        raise ValueError(f"{what}.rope_theta: {s.rope_theta} must be finite and > 0 as a float32")
    for f in ("embedding_scale", "rope_scaling_factor", "rope_low_freq_factor", "rope_high_freq_factor"):
        if not math.isfinite(getattr(s, f)):
            raise ValueError(f"{what}.{f}: {getattr(s, f)} must be finite as a float32")
    if not isinstance(s.layer_windows, (list, tuple)):
        raise ValueError(f"{what}.layer_windows: expected a list of ints, got {s.layer_windows!r}")
    s.layer_windows = [_int(w, 0, _U32_MAX, f"{what}.layer_windows[{i}]") for i, w in enumerate(s.layer_windows)]
    if s.layer_windows and len(s.layer_windows) != s.num_layers:
        raise ValueError(f"{what}.layer_windows: {len(s.layer_windows)} entries for {s.num_layers} layers")
    if any(s.layer_windows) and not is_decoder:
        raise ValueError(f"{what}.layer_windows: sliding windows are only supported in a causal (decoder) stack")
    if s.rope_scaling == RopeScaling.Llama3:
        if s.rope_original_max_positions < 1:
            raise ValueError(f"{what}.rope_original_max_positions: must be >= 1 for llama3 rope scaling")
        if not s.rope_high_freq_factor > s.rope_low_freq_factor:
            raise ValueError(f"{what}.rope_high_freq_factor: must be greater than rope_low_freq_factor for llama3")
    return s


def normalize_config(config: ModelConfig | dict) -> ModelConfig:
    """Validates `config` against the format 1.0 ranges; returns a copy with
    enums coerced, floats rounded to float32 and nested dicts converted."""
    c = dataclasses.replace(coerce_dataclass(ModelConfig, config, "config"))
    if not isinstance(c.architecture, str) or not c.architecture:
        raise ValueError("config.architecture: a non-empty str is required")
    c.kind = coerce_enum(ModelKind, c.kind, "config.kind")
    c.vocab_size = _int(c.vocab_size, 0, _U32_MAX, "config.vocab_size")
    if not 1 <= c.vocab_size <= 16777216:
        raise ValueError(f"config.vocab_size: {c.vocab_size} out of range [1, 16777216]")
    if c.decoder is None:
        raise ValueError("config.decoder is required")
    c.decoder = _normalize_stack(c.decoder, "config.decoder", is_decoder=True)
    if c.kind == ModelKind.EncoderDecoder:
        if c.encoder is None:
            raise ValueError("config.encoder is required for an EncoderDecoder model")
        c.encoder = _normalize_stack(c.encoder, "config.encoder", is_decoder=False)
    elif c.encoder is not None:
        raise ValueError("config.encoder given for a DecoderOnly model")
    c.tie_word_embeddings = _bool(c.tie_word_embeddings, "config.tie_word_embeddings")
    c.final_logits_bias = _bool(c.final_logits_bias, "config.final_logits_bias")
    c.decoder_vocab_size = _int(c.decoder_vocab_size, 0, 16777216, "config.decoder_vocab_size")
    if c.decoder_vocab_size and c.kind != ModelKind.EncoderDecoder:
        raise ValueError("config.decoder_vocab_size: only an EncoderDecoder model has a separate target vocabulary")
    return c


def _normalize_generation(value: Any) -> GenerationConfig:
    g = dataclasses.replace(coerce_dataclass(GenerationConfig, value, "generation"))
    for f in ("bos_token_id", "pad_token_id", "decoder_start_token_id", "forced_bos_token_id", "forced_eos_token_id"):
        setattr(g, f, _int(getattr(g, f), _I32_MIN, _I32_MAX, f"generation.{f}"))
    for f in ("max_length", "num_beams", "no_repeat_ngram_size", "top_k"):
        setattr(g, f, _int(getattr(g, f), 1 if f == "num_beams" else 0, 1024 if f == "num_beams" else 16777216,
                           f"generation.{f}"))
    for f in ("length_penalty", "repetition_penalty", "temperature", "top_p", "min_p"):
        setattr(g, f, _f32(getattr(g, f), f"generation.{f}"))
    for f in ("early_stopping", "do_sample"):
        setattr(g, f, _bool(getattr(g, f), f"generation.{f}"))
    # The loader's ranges (FORMAT.md): a file it would refuse is not written.
    for f in ("top_p", "min_p"):
        if not 0.0 <= getattr(g, f) <= 1.0:
            raise ValueError(f"generation.{f} = {getattr(g, f)} must be in [0, 1]")
    if g.temperature < 0.0:
        raise ValueError(f"generation.temperature = {g.temperature} must be >= 0")
    if g.repetition_penalty <= 0.0:
        raise ValueError(f"generation.repetition_penalty = {g.repetition_penalty} must be > 0")
    for f in ("eos_token_ids", "suppress_tokens"):
        v = getattr(g, f)
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            v = (v,)  # generation_config.json allows a bare int for eos_token_id
        setattr(g, f, tuple(_int(x, _I32_MIN, _I32_MAX, f"generation.{f}") for x in v))
    return g


def _normalize_tokenizer(value: Any, i: int) -> Tokenizer:
    what = f"tokenizers[{i}]"
    t = dataclasses.replace(coerce_dataclass(Tokenizer, value, what))
    t.kind = coerce_enum(TokenizerKind, t.kind, f"{what}.kind")
    t.role = coerce_enum(TokenizerRole, t.role, f"{what}.role")
    if not isinstance(t.model, (bytes, bytearray, memoryview)):
        raise ValueError(f"{what}.model: expected bytes, got {type(t.model).__name__}")
    t.model = bytes(t.model)
    if t.pre_tokenizer_regex is not None and not isinstance(t.pre_tokenizer_regex, str):
        raise ValueError(f"{what}.pre_tokenizer_regex: expected str or None")
    specials = []
    for j, st in enumerate(t.special_tokens):
        w = f"{what}.special_tokens[{j}]"
        if isinstance(st, tuple):
            if len(st) != 2:
                raise ValueError(f"{w}: expected (id, content)")
            st = SpecialToken(id=st[0], content=st[1])
        else:
            st = coerce_dataclass(SpecialToken, st, w)
        if not isinstance(st.content, str):
            raise ValueError(f"{w}.content: expected str")
        specials.append(SpecialToken(id=_int(st.id, _I32_MIN, _I32_MAX, f"{w}.id"), content=st.content,
                                     special=bool(st.special), lstrip=bool(st.lstrip), rstrip=bool(st.rstrip)))
    t.special_tokens = tuple(specials)
    t.normalization = coerce_enum(Normalization, t.normalization, f"{what}.normalization")
    t.decode_style = coerce_enum(DecodeStyle, t.decode_style, f"{what}.decode_style")
    t.unk_id = _int(t.unk_id, -1, _I32_MAX, f"{what}.unk_id")
    for field in ("vocab", "prefix", "suffix"):
        v = tuple(getattr(t, field))
        if not all(isinstance(x, str) for x in v):
            raise ValueError(f"{what}.{field}: expected a sequence of str")
        setattr(t, field, v)
    langs = []
    for j, lang in enumerate(t.languages):
        lang = coerce_dataclass(Language, lang, f"{what}.languages[{j}]")
        if not isinstance(lang.code, str) or not lang.code:
            raise ValueError(f"{what}.languages[{j}].code: expected a non-empty str")
        langs.append(Language(code=lang.code, token_id=_int(lang.token_id, 0, _I32_MAX, f"{what}.languages[{j}].token_id")))
    t.languages = tuple(langs)
    return t


def _normalize_chat_format(value: Any) -> ChatFormat:
    c = dataclasses.replace(coerce_dataclass(ChatFormat, value, "chat_format"))
    for f in dataclasses.fields(ChatFormat):
        v = getattr(c, f.name)
        if f.type == "str" and not isinstance(v, str):
            raise ValueError(f"chat_format.{f.name}: expected str")
    c.system_placement = coerce_enum(SystemPlacement, c.system_placement, "chat_format.system_placement")
    return c


def _normalize_metadata(metadata: Any) -> list[tuple[bytes, str, str]]:
    if metadata is None:
        return []
    items = metadata.items() if isinstance(metadata, Mapping) else metadata
    out = []
    seen = set()
    for item in items:
        try:
            k, v = item
        except (TypeError, ValueError):
            raise ValueError("metadata must be a mapping str -> str or an iterable of (key, value) pairs") from None
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"metadata {k!r}: keys and values must be str")
        kb = k.encode("utf-8")
        if kb in seen:
            raise ValueError(f"duplicate metadata key {k!r}")
        seen.add(kb)
        out.append((kb, k, v))
    out.sort(key=lambda kv: kv[0])
    return out


# ---------------------------------------------------------------------------
# Header (FlatBuffers)


def _vector_of_offsets(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _build_stack(b: flatbuffers.Builder, s: StackConfig) -> int:
    S = fb_StackConfig
    windows = b.CreateNumpyVector(np.asarray(s.layer_windows, dtype=np.uint32)) if s.layer_windows else None
    S.Start(b)
    S.AddNumLayers(b, s.num_layers)
    S.AddHiddenSize(b, s.hidden_size)
    S.AddNumHeads(b, s.num_heads)
    S.AddNumKvHeads(b, s.num_kv_heads)
    S.AddHeadDim(b, s.head_dim)
    S.AddFfnSize(b, s.ffn_size)
    S.AddActivation(b, int(s.activation))
    S.AddGatedFfn(b, s.gated_ffn)
    S.AddNorm(b, int(s.norm))
    S.AddNormPlacement(b, int(s.norm_placement))
    S.AddNormEpsilon(b, s.norm_epsilon)
    S.AddQkvBias(b, s.qkv_bias)
    S.AddOutBias(b, s.out_bias)
    S.AddFfnBias(b, s.ffn_bias)
    S.AddQkNorm(b, s.qk_norm)
    S.AddEmbeddingNorm(b, s.embedding_norm)
    S.AddFinalNorm(b, s.final_norm)
    S.AddPosition(b, int(s.position))
    S.AddMaxPositions(b, s.max_positions)
    S.AddPositionOffset(b, s.position_offset)
    S.AddEmbeddingScale(b, s.embedding_scale)
    S.AddRopeTheta(b, s.rope_theta)
    S.AddRopeDim(b, s.rope_dim)
    S.AddRopeInterleaved(b, s.rope_interleaved)
    S.AddRopeScaling(b, int(s.rope_scaling))
    S.AddRopeScalingFactor(b, s.rope_scaling_factor)
    S.AddRopeLowFreqFactor(b, s.rope_low_freq_factor)
    S.AddRopeHighFreqFactor(b, s.rope_high_freq_factor)
    S.AddRopeOriginalMaxPositions(b, s.rope_original_max_positions)
    if windows is not None:
        S.AddLayerWindows(b, windows)
    return S.End(b)


def _build_config(b: flatbuffers.Builder, c: ModelConfig) -> int:
    arch = b.CreateString(c.architecture)
    enc = _build_stack(b, c.encoder) if c.encoder is not None else None
    dec = _build_stack(b, c.decoder)
    M = fb_ModelConfig
    M.Start(b)
    M.AddArchitecture(b, arch)
    M.AddKind(b, int(c.kind))
    M.AddVocabSize(b, c.vocab_size)
    if enc is not None:
        M.AddEncoder(b, enc)
    M.AddDecoder(b, dec)
    M.AddTieWordEmbeddings(b, c.tie_word_embeddings)
    M.AddFinalLogitsBias(b, c.final_logits_bias)
    if c.decoder_vocab_size:
        M.AddDecoderVocabSize(b, c.decoder_vocab_size)
    return M.End(b)


def _build_tensor(b: flatbuffers.Builder, e: _TensorEntry) -> int:
    name = b.CreateString(e.name)
    shape = b.CreateNumpyVector(np.asarray(e.shape, dtype=np.int64).reshape(-1))
    quant = None
    if e.quantization is not None:
        q = e.quantization
        scale = b.CreateString(q.scale_tensor) if q.scale_tensor is not None else None
        fb_Quantization.Start(b)
        fb_Quantization.AddScheme(b, int(q.scheme))
        fb_Quantization.AddAxis(b, q.axis)
        if q.group_size:
            fb_Quantization.AddGroupSize(b, q.group_size)
        if scale is not None:
            fb_Quantization.AddScaleTensor(b, scale)
        quant = fb_Quantization.End(b)
    T = fb_Tensor
    T.Start(b)
    T.AddName(b, name)
    T.AddDtype(b, int(e.dtype))
    T.AddShape(b, shape)
    T.AddOffset(b, e.region.offset)
    T.AddLength(b, e.region.length)
    T.AddChecksum(b, e.region.checksum)
    if quant is not None:
        T.AddQuantization(b, quant)
    return T.End(b)


def _build_blob(b: flatbuffers.Builder, r: _Region) -> int:
    fb_Blob.Start(b)
    fb_Blob.AddOffset(b, r.offset)
    fb_Blob.AddLength(b, r.length)
    fb_Blob.AddChecksum(b, r.checksum)
    return fb_Blob.End(b)


def _string_vector(b: flatbuffers.Builder, items: Sequence[str]) -> int | None:
    if not items:
        return None
    return _vector_of_offsets(b, [b.CreateString(x) for x in items])


def _build_tokenizer(b: flatbuffers.Builder, t: Tokenizer, r: _Region) -> int:
    regex = b.CreateString(t.pre_tokenizer_regex) if t.pre_tokenizer_regex is not None else None
    specials = None
    if t.special_tokens:
        offs = []
        for st in t.special_tokens:
            content = b.CreateString(st.content)
            fb_SpecialToken.Start(b)
            fb_SpecialToken.AddId(b, st.id)
            fb_SpecialToken.AddContent(b, content)
            fb_SpecialToken.AddSpecial(b, st.special)
            fb_SpecialToken.AddLstrip(b, st.lstrip)
            fb_SpecialToken.AddRstrip(b, st.rstrip)
            offs.append(fb_SpecialToken.End(b))
        specials = _vector_of_offsets(b, offs)
    vocab, prefix, suffix = (_string_vector(b, x) for x in (t.vocab, t.prefix, t.suffix))
    langs = None
    if t.languages:
        offs = []
        for lang in t.languages:
            code = b.CreateString(lang.code)
            fb_Language.Start(b)
            fb_Language.AddCode(b, code)
            fb_Language.AddTokenId(b, lang.token_id)
            offs.append(fb_Language.End(b))
        langs = _vector_of_offsets(b, offs)
    blob = _build_blob(b, r)
    T = fb_Tokenizer
    T.Start(b)
    T.AddKind(b, int(t.kind))
    T.AddRole(b, int(t.role))
    T.AddModel(b, blob)
    if regex is not None:
        T.AddPreTokenizerRegex(b, regex)
    if specials is not None:
        T.AddSpecialTokens(b, specials)
    if vocab is not None:
        T.AddVocab(b, vocab)
    T.AddUnkId(b, t.unk_id)
    T.AddNormalization(b, int(t.normalization))
    T.AddAddPrefixSpace(b, t.add_prefix_space)
    T.AddIgnoreMerges(b, t.ignore_merges)
    if prefix is not None:
        T.AddPrefix(b, prefix)
    if suffix is not None:
        T.AddSuffix(b, suffix)
    if langs is not None:
        T.AddLanguages(b, langs)
    T.AddCleanUpSpaces(b, bool(t.clean_up_spaces))
    T.AddPrefixFirstOnly(b, bool(t.prefix_first_only))
    T.AddDecodeStyle(b, int(t.decode_style))
    return T.End(b)


_CHAT_STRINGS = ("begin", "system_prefix", "system_suffix", "user_prefix", "user_suffix", "assistant_prefix",
                 "assistant_suffix", "generation_prompt", "default_system", "system_separator",
                 "assistant_strip_through")


def _build_chat_format(b: flatbuffers.Builder, c: ChatFormat) -> int:
    strings = {k: b.CreateString(getattr(c, k)) for k in _CHAT_STRINGS}
    F = fb_ChatFormat
    F.Start(b)
    for k, off in strings.items():
        getattr(F, "Add" + "".join(w.capitalize() for w in k.split("_")))(b, off)
    F.AddSystemPlacement(b, int(c.system_placement))
    F.AddTrimSystem(b, bool(c.trim_system))
    F.AddTrimUser(b, bool(c.trim_user))
    F.AddTrimAssistant(b, bool(c.trim_assistant))
    F.AddAlternate(b, bool(c.alternate))
    return F.End(b)


def _build_generation(b: flatbuffers.Builder, g: GenerationConfig) -> int:
    eos = b.CreateNumpyVector(np.asarray(g.eos_token_ids, dtype=np.int32)) if g.eos_token_ids else None
    sup = b.CreateNumpyVector(np.asarray(g.suppress_tokens, dtype=np.int32)) if g.suppress_tokens else None
    G = fb_GenerationConfig
    G.Start(b)
    G.AddBosTokenId(b, g.bos_token_id)
    if eos is not None:
        G.AddEosTokenIds(b, eos)
    G.AddPadTokenId(b, g.pad_token_id)
    G.AddDecoderStartTokenId(b, g.decoder_start_token_id)
    G.AddForcedBosTokenId(b, g.forced_bos_token_id)
    G.AddForcedEosTokenId(b, g.forced_eos_token_id)
    G.AddMaxLength(b, g.max_length)
    G.AddNumBeams(b, g.num_beams)
    G.AddLengthPenalty(b, g.length_penalty)
    G.AddEarlyStopping(b, g.early_stopping)
    G.AddNoRepeatNgramSize(b, g.no_repeat_ngram_size)
    G.AddRepetitionPenalty(b, g.repetition_penalty)
    G.AddDoSample(b, g.do_sample)
    G.AddTemperature(b, g.temperature)
    G.AddTopK(b, g.top_k)
    G.AddTopP(b, g.top_p)
    G.AddMinP(b, g.min_p)
    if sup is not None:
        G.AddSuppressTokens(b, sup)
    return G.End(b)


def _build_header(config, entries, tokenizers, tok_regions, generation, chat_template, metadata,
                  chat_format=None) -> bytes:
    b = flatbuffers.Builder(4096)
    cfg = _build_config(b, config)
    tensors = _vector_of_offsets(b, [_build_tensor(b, e) for e in entries])
    toks = None
    if tokenizers:
        toks = _vector_of_offsets(b, [_build_tokenizer(b, t, r) for t, r in zip(tokenizers, tok_regions)])
    gen = _build_generation(b, generation) if generation is not None else None
    chat = None
    if chat_template is not None:
        src = b.CreateString(chat_template)
        fb_ChatTemplate.Start(b)
        fb_ChatTemplate.AddSource(b, src)
        chat = fb_ChatTemplate.End(b)
    meta = None
    if metadata:
        offs = []
        for _, k, v in metadata:
            ko, vo = b.CreateString(k), b.CreateString(v)
            fb_KeyValue.Start(b)
            fb_KeyValue.AddKey(b, ko)
            fb_KeyValue.AddValue(b, vo)
            offs.append(fb_KeyValue.End(b))
        meta = _vector_of_offsets(b, offs)
    chat_fmt = _build_chat_format(b, chat_format) if chat_format is not None else None
    M = fb_Model
    M.Start(b)
    M.AddConfig(b, cfg)
    M.AddTensors(b, tensors)
    if toks is not None:
        M.AddTokenizers(b, toks)
    if gen is not None:
        M.AddGeneration(b, gen)
    if chat is not None:
        M.AddChatTemplate(b, chat)
    if meta is not None:
        M.AddMetadata(b, meta)
    if chat_fmt is not None:
        M.AddChatFormat(b, chat_fmt)
    root = M.End(b)
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def pack_preamble(*, format_minor: int, header_length: int, header_checksum: int,
                  data_offset: int, data_length: int, format_major: int = FORMAT_MAJOR) -> bytes:
    body = PREAMBLE_BODY.pack(
        MAGIC, format_major, format_minor, PREAMBLE_SIZE, HEADER_OFFSET,
        header_length, header_checksum, data_offset, data_length,
    )
    return body + struct.pack("<Q", xxh3_64(body))


# ---------------------------------------------------------------------------
# write_model


def write_model(
    path: str | os.PathLike,
    config: ModelConfig | dict,
    tensors: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    tokenizers: Sequence[Tokenizer | dict] = (),
    generation: GenerationConfig | dict | None = None,
    chat_template: str | None = None,
    metadata: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    format_minor: int = 0,
    chat_format: ChatFormat | dict | None = None,
) -> dict:
    """Writes a Parley model file (format 1.`format_minor`) to `path`.

    `tensors` maps names to numpy arrays (float32, float16, int8, int32,
    uint8, int64), `BF16(uint16_bits)`, `I4(packed_uint8, shape)`, `ZeroTensor(shape, dtype)` (written
    sparsely) or `Quantized(value, Quantization(...))`. The file is written
    to `path + ".partial"` and renamed into place when complete.

    Returns a summary: {"file_size", "header_length", "data_offset",
    "data_length", "tensors": {name: (offset, length, checksum)},
    "blobs": [(offset, length, checksum)]}.
    Raises ValueError for invalid input (nothing is written then).
    """
    format_minor = _int(format_minor, 0, 0xFFFF, "format_minor")
    cfg = normalize_config(config)
    entries = _collect_tensors(tensors)
    if isinstance(tokenizers, (Tokenizer, dict)):
        tokenizers = [tokenizers]
    toks = [_normalize_tokenizer(t, i) for i, t in enumerate(tokenizers)]
    gen = _normalize_generation(generation) if generation is not None else None
    if chat_template is not None and not isinstance(chat_template, str):
        raise ValueError("chat_template: expected str or None")
    if chat_template is not None and "\0" in chat_template:
        raise ValueError(f"chat_template contains a NUL character at offset {chat_template.index(chr(0))}")
    for i, t in enumerate(toks):  # the ids the loader accepts for the tokenizer's role
        vocab = (cfg.decoder_vocab_size or cfg.vocab_size if t.role == TokenizerRole.Target
                 else cfg.vocab_size if t.role == TokenizerRole.Source
                 else min(cfg.vocab_size, cfg.decoder_vocab_size or cfg.vocab_size))
        for st in t.special_tokens:
            if not 0 <= st.id < vocab:
                raise ValueError(f"tokenizers[{i}]: special token {st.content!r} has id {st.id}, outside the "
                                 f"vocabulary (0..{vocab - 1})")
    meta = _normalize_metadata(metadata)
    chat_fmt = _normalize_chat_format(chat_format) if chat_format is not None else None
    if chat_fmt is not None or any(t.uses_format_1_1() for t in toks):
        format_minor = max(format_minor, 1)  # the lowest minor that holds the fields used
    if cfg.decoder_vocab_size or any(st is not None and st.layer_windows for st in (cfg.encoder, cfg.decoder)):
        format_minor = max(format_minor, 3)  # per-layer sliding windows came with format 1.3
    if any(e.dtype == DType.I4 or (e.quantization is not None and e.quantization.scheme == QuantScheme.SymmetricGroupwise)
           for e in entries):
        format_minor = max(format_minor, 2)  # I4 and group-wise scales came with format 1.2

    # Layout: tokenizer blobs (in the given order), then tensors sorted by
    # name; each region at the next multiple of 64, zero gaps in between.
    tok_regions = [_Region(payload=t.model, length=len(t.model)) for t in toks]
    cursor = 0
    for r in tok_regions + [e.region for e in entries]:
        r.offset = align_up(cursor)
        cursor = r.offset + r.length
    data_length = cursor

    for r in tok_regions + [e.region for e in entries]:
        r.checksum = xxh3_64(r.payload) if r.payload is not None else xxh3_64_of_zeros(r.length)

    header = _build_header(cfg, entries, toks, tok_regions, gen, chat_template, meta, chat_fmt)
    if not 8 <= len(header) <= MAX_HEADER_LENGTH:
        raise ValueError(f"header is {len(header)} bytes, more than {MAX_HEADER_LENGTH}")
    data_offset = align_up(HEADER_OFFSET + len(header))
    preamble = pack_preamble(
        format_minor=format_minor, header_length=len(header), header_checksum=xxh3_64(header),
        data_offset=data_offset, data_length=data_length,
    )
    file_size = data_offset + data_length

    path = os.fspath(path)
    partial = path + ".partial"
    try:
        with open(partial, "wb") as f:
            f.write(preamble)
            f.write(header)
            f.write(bytes(data_offset - HEADER_OFFSET - len(header)))
            for r in tok_regions + [e.region for e in entries]:
                if r.payload is None or r.length == 0:
                    continue  # zeros: leave a hole
                f.seek(data_offset + r.offset)
                f.write(memoryview(r.payload))
            f.truncate(file_size)
        if os.path.getsize(partial) != file_size:
            raise OSError(f"{partial}: size {os.path.getsize(partial)} != expected {file_size}")
        os.replace(partial, path)
    except BaseException:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise
    return {
        "file_size": file_size,
        "header_length": len(header),
        "data_offset": data_offset,
        "data_length": data_length,
        "tensors": {e.name: (e.region.offset, e.region.length, e.region.checksum) for e in entries},
        "blobs": [(r.offset, r.length, r.checksum) for r in tok_regions],
    }
