"""Conversions between Python values and the C types of libparley (no Parley logic)."""

from __future__ import annotations

import array
import ctypes
import json
import math
import os
from ctypes import POINTER, c_char_p, c_int32, c_size_t
from typing import Any, Iterable, Mapping, Sequence

from . import _lib
from .errors import InvalidArgumentError

_I32P = POINTER(c_int32)
_U64_MAX = (1 << 64) - 1


def encode_text(text: str | bytes, what: str) -> bytes:
    """UTF-8 bytes for a C string.

    ``bytes`` pass through unchanged and ``str`` is encoded with
    ``surrogatepass``, so that input Python cannot encode as valid UTF-8
    (lone surrogates, e.g. from ``surrogateescape``) still reaches libparley,
    which validates UTF-8 and names the byte offset. NUL cannot travel in a C
    string, so text holding one is refused here.
    """
    if isinstance(text, str):
        data = text.encode("utf-8", "surrogatepass")
    elif isinstance(text, (bytes, bytearray, memoryview)):
        data = bytes(text)
    else:
        raise TypeError(f"{what} must be str or bytes, not {type(text).__name__}")
    nul = data.find(b"\0")
    if nul >= 0:
        raise InvalidArgumentError(f"{what} contains a NUL character (byte offset {nul})")
    return data


def decode_text(data: bytes) -> str:
    # libparley returns valid UTF-8 (invalid sequences become U+FFFD); "replace" is only a safety net.
    return data.decode("utf-8", "replace")


def opt_text(text: str | bytes | None, what: str) -> bytes | None:
    return None if text is None else encode_text(text, what)


def path_bytes(path: str | bytes | os.PathLike) -> bytes:
    data = os.fsencode(path)
    if b"\0" in data:
        raise InvalidArgumentError("a path contains a NUL character")
    return data


def ids_array(ids: Iterable[int], what: str) -> ctypes.Array:
    """A C int32_t array of the ids (refusing values that do not fit)."""
    try:
        arr = array.array("i", ids)  # C int: 32 bits on every platform libparley supports
    except OverflowError:
        raise InvalidArgumentError(f"{what}: a token id does not fit in int32") from None
    except TypeError as e:
        raise TypeError(f"{what} must be a sequence of int token ids ({e})") from None
    assert arr.itemsize == 4
    out = (c_int32 * len(arr))()
    if arr:
        ctypes.memmove(out, arr.buffer_info()[0], len(arr) * 4)
    return out


class IdBatch:
    """`const int32_t *const *seqs` + `const size_t *lengths` for a batch of id lists."""

    def __init__(self, seqs: Sequence[Sequence[int]] | None, what: str):
        if isinstance(seqs, (str, bytes)) or not isinstance(seqs, Sequence):
            raise TypeError(f"{what} must be a list of token-id lists")
        if seqs and not isinstance(seqs[0], (str, bytes)) and isinstance(seqs[0], int):
            raise TypeError(f"{what} must be a list of token-id lists (got a flat list of ids: wrap it in [...])")
        self._arrays = [ids_array(s, f"{what}[{i}]") for i, s in enumerate(seqs)]
        n = len(self._arrays)
        self.count = n
        self.pointers = (_I32P * max(n, 1))(*[ctypes.cast(a, _I32P) for a in self._arrays])
        self.lengths = (c_size_t * max(n, 1))(*[len(a) for a in self._arrays])


def ids_list(ptr, count: int) -> list[int]:
    return ptr[:count] if count else []


def cstring_array(items: Sequence[bytes]) -> ctypes.Array:
    return (c_char_p * max(len(items), 1))(*items)


# --------------------------------------------------------- generation options

_SIZE = "size"
_FLOAT = "float"
_BOOL = "bool"
_U64 = "u64"
_EARLY = "early"

#: Python keyword -> kind, for every field of parley_generation_options a caller may set.
GENERATION_FIELDS: dict[str, str] = {
    "max_new_tokens": _SIZE,
    "min_new_tokens": _SIZE,
    "num_beams": _SIZE,
    "num_return_sequences": _SIZE,
    "length_penalty": _FLOAT,
    "early_stopping": _EARLY,
    "no_repeat_ngram_size": _SIZE,
    "repetition_penalty": _FLOAT,
    "do_sample": _BOOL,
    "temperature": _FLOAT,
    "top_k": _SIZE,
    "top_p": _FLOAT,
    "min_p": _FLOAT,
    "seed": _U64,
    "eos_token_ids": "ids",
    "grammar": "text",
    "json_schema": "schema",
    "logit_bias": "bias",
}

_EARLY_NAMES = {False: 0, True: 1, "never": 2}


def _unsigned(name: str, value: Any, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = value.__index__()
        except AttributeError:
            raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if value < 0 or value > limit:
        raise InvalidArgumentError(f"{name} must be between 0 and {limit}, got {value}")
    return value


def check_generation_keys(options: Mapping[str, Any], where: str) -> None:
    unknown = sorted(k for k in options if k not in GENERATION_FIELDS)
    if unknown:
        raise TypeError(
            f"{where} got unknown option(s) {', '.join(unknown)}; known: {', '.join(GENERATION_FIELDS)}"
        )


def generation_defaults(model_handle: int | None) -> _lib.GenerationOptions:
    opts = _lib.new(_lib.GenerationOptions)
    _lib.check(_lib.lib.parley_generation_options_defaults(model_handle, ctypes.byref(opts)))
    return opts


def _logit_bias_arrays(value: Any) -> tuple[Any, Any]:
    """{token id: bias} -> (int32 ids, float biases); the library checks the ids
    against the vocabulary and the biases' range, naming the entry."""
    if not isinstance(value, Mapping):
        raise TypeError(f"logit_bias must be a mapping of token ids to biases, not {type(value).__name__}")
    ids, biases = [], []
    for k, v in value.items():
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"logit_bias keys must be token ids (int), not {type(k).__name__}")
        if not -(1 << 31) <= k < (1 << 31):
            raise InvalidArgumentError(f"logit_bias: token id {k} is out of range")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"logit_bias[{k}] must be a number, not {type(v).__name__}")
        ids.append(k)
        biases.append(float(v))
    return (ctypes.c_int32 * len(ids))(*ids), (ctypes.c_float * len(biases))(*biases)


def generation_options(model_handle: int, options: Mapping[str, Any], where: str) -> _lib.GenerationOptions:
    """parley_generation_options from the model's defaults with `options` (None values: keep) applied.

    The returned struct keeps what its pointers point to alive (attribute _keep).
    """
    check_generation_keys(options, where)
    opts = generation_defaults(model_handle)
    keep = []
    size_max = (1 << (8 * ctypes.sizeof(c_size_t))) - 1
    for name, value in options.items():
        if value is None:
            continue
        kind = GENERATION_FIELDS[name]
        if kind == _SIZE:
            setattr(opts, name, _unsigned(name, value, size_max))
        elif kind == _U64:
            setattr(opts, name, _unsigned(name, value, _U64_MAX))
        elif kind == _FLOAT:
            try:
                f = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"{name} must be a number, not {type(value).__name__}") from None
            if math.isfinite(f) and abs(f) > 3.4028234663852886e38:
                raise InvalidArgumentError(f"{name} does not fit in a float: {value}")
            setattr(opts, name, f)
        elif kind == _BOOL:
            setattr(opts, name, 1 if value else 0)
        elif kind == _EARLY:
            if value not in _EARLY_NAMES or (not isinstance(value, (bool, str))):
                raise InvalidArgumentError(f"early_stopping must be True, False or 'never', got {value!r}")
            opts.early_stopping = _EARLY_NAMES[value]
        elif kind in ("text", "schema"):
            if kind == "schema" and isinstance(value, (dict, list, bool)):
                value = json.dumps(value)
            data = encode_text(value, name)
            keep.append(data)
            setattr(opts, name, data)
        elif kind == "bias":
            ids, values = _logit_bias_arrays(value)
            keep += [ids, values]
            opts.logit_bias_ids = ctypes.cast(ids, _I32P) if len(ids) else None
            opts.logit_bias_values = ctypes.cast(values, ctypes.POINTER(ctypes.c_float)) if len(values) else None
            opts.num_logit_bias = len(ids)
        else:  # eos_token_ids
            arr = ids_array(value, name)
            keep.append(arr)
            opts.eos_token_ids = ctypes.cast(arr, _I32P) if len(arr) else None
            opts.num_eos_token_ids = len(arr)
    opts._keep = keep
    return opts


def generation_dict(opts: _lib.GenerationOptions) -> dict[str, Any]:
    """The settable fields of a parley_generation_options as a dict."""
    out: dict[str, Any] = {}
    for name, kind in GENERATION_FIELDS.items():
        if kind == "ids":
            out[name] = ids_list(opts.eos_token_ids, opts.num_eos_token_ids)
        elif kind == "bias":
            n = opts.num_logit_bias
            out[name] = {opts.logit_bias_ids[i]: opts.logit_bias_values[i] for i in range(n)} if n else None
        elif kind in ("text", "schema"):
            raw = getattr(opts, name)
            out[name] = None if raw is None else decode_text(raw)
        elif kind == _BOOL:
            out[name] = bool(opts.do_sample)
        elif kind == _EARLY:
            out[name] = {0: False, 1: True, 2: "never"}.get(opts.early_stopping, opts.early_stopping)
        else:
            out[name] = getattr(opts, name)
    return out
