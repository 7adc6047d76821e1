"""Reading Parley model files back (for tests and tools; the runtime's loader
is runtime/format/model_file.cpp)."""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass

import numpy as np
import xxhash

from ._fbs.Model import Model as FbModel
from .i4 import unpack_i4
from .types import DType, QuantScheme, dtype_nbytes
from .writer import (
    ALIGNMENT,
    FILE_IDENTIFIER,
    FORMAT_MAJOR,
    GROUP_SIZES,
    HEADER_OFFSET,
    MAGIC,
    MAX_HEADER_LENGTH,
    MAX_NAME_BYTES,
    MAX_RANK,
    PREAMBLE_BODY,
    PREAMBLE_SIZE,
    xxh3_64,
)


class FormatError(ValueError):
    """The file is not a valid Parley model file."""


@dataclass(frozen=True)
class Preamble:
    magic: bytes
    format_major: int
    format_minor: int
    preamble_size: int
    header_offset: int
    header_length: int
    header_checksum: int
    data_offset: int
    data_length: int
    preamble_checksum: int


def parse_preamble(raw: bytes, file_size: int | None = None) -> Preamble:
    """Parses and checks the 64-byte preamble (FORMAT.md section 4, steps 1-2)."""
    if len(raw) < PREAMBLE_SIZE:
        raise FormatError(f"file is {len(raw)} bytes, smaller than the {PREAMBLE_SIZE}-byte preamble")
    fields = PREAMBLE_BODY.unpack_from(raw, 0)
    (checksum,) = struct.unpack_from("<Q", raw, 56)
    p = Preamble(*fields, checksum)
    if p.magic != MAGIC:
        raise FormatError(f"bad magic {p.magic!r}")
    if xxh3_64(raw[:56]) != p.preamble_checksum:
        raise FormatError("preamble_checksum mismatch")
    if p.format_major != FORMAT_MAJOR:
        raise FormatError(
            f"model file format {p.format_major}.{p.format_minor} is not supported (reads {FORMAT_MAJOR}.x)"
        )
    if p.preamble_size != PREAMBLE_SIZE:
        raise FormatError(f"preamble_size {p.preamble_size} != {PREAMBLE_SIZE}")
    if p.header_offset != HEADER_OFFSET:
        raise FormatError(f"header_offset {p.header_offset} != {HEADER_OFFSET}")
    if not 8 <= p.header_length <= MAX_HEADER_LENGTH:
        raise FormatError(f"header_length {p.header_length} out of range")
    if p.data_offset % ALIGNMENT or p.data_offset < p.header_offset + p.header_length:
        raise FormatError(f"data_offset {p.data_offset} not aligned or overlaps the header")
    if file_size is not None and p.data_offset + p.data_length != file_size:
        raise FormatError(
            f"data_offset + data_length = {p.data_offset + p.data_length} != file size {file_size}"
        )
    return p


def read_preamble(path: str | os.PathLike) -> Preamble:
    with open(path, "rb") as f:
        raw = f.read(PREAMBLE_SIZE)
        size = os.fstat(f.fileno()).st_size
    return parse_preamble(raw, size)


def read_header_bytes(path: str | os.PathLike) -> tuple[Preamble, bytes]:
    p = read_preamble(path)
    with open(path, "rb") as f:
        f.seek(p.header_offset)
        header = f.read(p.header_length)
        if p.data_offset > p.header_offset + p.header_length:
            pad = f.read(p.data_offset - p.header_offset - p.header_length)
            if pad.strip(b"\0"):
                raise FormatError("non-zero bytes between the header and data_offset")
    if len(header) != p.header_length:
        raise FormatError("file truncated inside the header")
    if xxh3_64(header) != p.header_checksum:
        raise FormatError("header_checksum mismatch")
    if not FbModel.ModelBufferHasIdentifier(header, 0):
        raise FormatError(f"header file identifier is {header[4:8]!r}, expected {FILE_IDENTIFIER!r}")
    return p, header


def read_header(path: str | os.PathLike) -> FbModel:
    """Checks preamble and header checksum and returns the root
    `parley.format.Model` table (generated FlatBuffers accessor object)."""
    _, header = read_header_bytes(path)
    return FbModel.GetRootAs(header, 0)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: DType
    shape: tuple[int, ...]
    offset: int
    length: int
    checksum: int
    # Quantization (scheme None_: not quantized).
    scheme: QuantScheme = QuantScheme.None_
    axis: int = 0
    scale_tensor: str | None = None
    group_size: int = 0


def tensor_infos(model: FbModel) -> list[TensorInfo]:
    out = []
    for i in range(model.TensorsLength()):
        t = model.Tensors(i)
        shape = tuple(int(t.Shape(j)) for j in range(t.ShapeLength()))
        q = t.Quantization()
        quant = {}
        if q is not None:
            scale = q.ScaleTensor()
            try:
                scheme = QuantScheme(q.Scheme())
            except ValueError:
                raise FormatError(f"tensor {t.Name()!r}: unknown quantization scheme {q.Scheme()}") from None
            quant = dict(scheme=scheme, axis=q.Axis(), group_size=q.GroupSize(),
                         scale_tensor=scale.decode("utf-8") if scale is not None else None)
        out.append(TensorInfo(t.Name().decode("utf-8"), DType(t.Dtype()), shape, t.Offset(), t.Length(), t.Checksum(),
                              **quant))
    return out


def _region_checksum(f, start: int, length: int) -> int:
    h = xxhash.xxh3_64()
    f.seek(start)
    left = length
    while left:
        chunk = f.read(min(left, 16 * 1024 * 1024))
        if not chunk:
            raise FormatError("file truncated inside a region")
        h.update(chunk)
        left -= len(chunk)
    return h.intdigest()


def verify_file(path: str | os.PathLike, *, checksums: bool = True, check_gaps: bool = True) -> FbModel:
    """Python version of the loader's checks in FORMAT.md section 4 (less
    the FlatBuffers verifier and config ranges). Raises FormatError."""
    p, header = read_header_bytes(path)
    m = FbModel.GetRootAs(header, 0)
    regions: list[tuple[int, int, int, str]] = []
    names: list[bytes] = []
    by_name = {}
    for i in range(m.TensorsLength()):
        t = m.Tensors(i)
        raw = t.Name()
        if raw is None or not raw or len(raw) > MAX_NAME_BYTES:
            raise FormatError(f"tensor #{i}: bad name")
        name = raw.decode("utf-8")
        if names and raw <= names[-1]:
            raise FormatError(f"tensor {name!r}: names not sorted/unique")
        names.append(raw)
        try:
            dtype = DType(t.Dtype())
        except ValueError:
            raise FormatError(f"tensor {name!r}: unknown dtype {t.Dtype()}") from None
        if t.ShapeIsNone():
            raise FormatError(f"tensor {name!r}: shape missing")
        shape = [t.Shape(j) for j in range(t.ShapeLength())]
        if len(shape) > MAX_RANK or any(d < 0 for d in shape):
            raise FormatError(f"tensor {name!r}: bad shape {shape}")
        if dtype == DType.I4 and (not shape or shape[-1] % 2):
            raise FormatError(f"tensor {name!r}: dtype I4 needs rank >= 1 and an even last dimension, shape {shape}")
        if dtype_nbytes(dtype, math.prod(shape)) != t.Length():
            raise FormatError(f"tensor {name!r}: length {t.Length()} does not match shape and dtype")
        by_name[name] = (dtype, shape)
        regions.append((t.Offset(), t.Length(), t.Checksum(), f"tensor {name!r}"))
    for i in range(m.TensorsLength()):
        t = m.Tensors(i)
        q = t.Quantization()
        if q is None or q.Scheme() == 0:
            continue
        name = t.Name().decode()
        scale = q.ScaleTensor()
        ref = by_name.get(scale.decode()) if scale else None
        dtype, shape = by_name[name]
        if q.Scheme() == QuantScheme.SymmetricPerChannel:
            ok = (dtype == DType.I8 and 0 <= q.Axis() < len(shape) and q.GroupSize() == 0 and ref is not None
                  and ref[1] == [shape[q.Axis()]])
        elif q.Scheme() == QuantScheme.SymmetricGroupwise:
            g = q.GroupSize()
            ok = (dtype in (DType.I8, DType.I4) and len(shape) == 2 and q.Axis() == 0 and g in GROUP_SIZES
                  and shape[1] % g == 0 and ref is not None and ref[1] == [shape[0], shape[1] // g])
        else:
            raise FormatError(f"tensor {name!r}: unknown quantization scheme {q.Scheme()}")
        if not ok or ref[0] != DType.F32:
            raise FormatError(f"tensor {name!r}: bad quantization")
    for i in range(m.TokenizersLength()):
        b = m.Tokenizers(i).Model()
        if b is None:
            raise FormatError(f"tokenizer #{i}: model blob missing")
        regions.append((b.Offset(), b.Length(), b.Checksum(), f"tokenizer #{i}"))
    keys = [m.Metadata(i).Key() for i in range(m.MetadataLength())]
    if any(a >= b for a, b in zip(keys, keys[1:])):
        raise FormatError("metadata keys not sorted/unique")

    ordered = sorted(regions)
    end = 0
    for off, length, _, what in ordered:
        if off % ALIGNMENT:
            raise FormatError(f"{what}: offset {off} is not a multiple of {ALIGNMENT}")
        if off + length > p.data_length:
            raise FormatError(f"{what}: region past the end of the data section")
        if off < end:
            raise FormatError(f"{what}: overlaps the previous region")
        end = off + length
    if checksums or check_gaps:
        with open(path, "rb") as f:
            if checksums:
                for off, length, checksum, what in regions:
                    if _region_checksum(f, p.data_offset + off, length) != checksum:
                        raise FormatError(f"{what}: checksum mismatch")
            if check_gaps:
                pos = 0
                for off, length, _, what in ordered + [(p.data_length, 0, 0, "end")]:
                    if off > pos:
                        f.seek(p.data_offset + pos)
                        if f.read(off - pos).strip(b"\0"):
                            raise FormatError(f"non-zero gap before {what}")
                    pos = max(pos, off + length)
    return m


def read_tensor(path: str | os.PathLike, name: str) -> np.ndarray:
    """Returns a tensor's data as a numpy array (BF16 as uint16 bits, I4
    unpacked to int8 values of the tensor's shape)."""
    p = read_preamble(path)
    m = read_header(path)
    for info in tensor_infos(m):
        if info.name == name:
            np_dtype = {
                DType.F32: "<f4", DType.F16: "<f2", DType.BF16: "<u2", DType.I8: "i1",
                DType.I32: "<i4", DType.U8: "u1", DType.I64: "<i8", DType.I4: "u1",
            }[info.dtype]
            with open(path, "rb") as f:
                f.seek(p.data_offset + info.offset)
                raw = f.read(info.length)
            if info.dtype == DType.I4:
                return unpack_i4(np.frombuffer(raw, dtype=np.uint8), info.shape)
            return np.frombuffer(raw, dtype=np_dtype).reshape(info.shape)
    raise KeyError(name)


def read_dequantized(path: str | os.PathLike, name: str) -> np.ndarray:
    """A quantized tensor's real values as float32 (value = q * scale, per
    its Quantization); float tensors are returned as float32 (BF16 widened)."""
    infos = {i.name: i for i in tensor_infos(read_header(path))}
    info = infos[name]
    data = read_tensor(path, name)
    if info.dtype == DType.BF16:
        return (data.astype(np.uint32) << 16).view(np.float32)
    if info.scheme == QuantScheme.None_:
        return data.astype(np.float32)
    scale = read_tensor(path, info.scale_tensor).astype(np.float32)
    if info.scheme == QuantScheme.SymmetricGroupwise:
        return (data.astype(np.float32) * np.repeat(scale, info.group_size, axis=1)).astype(np.float32)
    shape = [1] * data.ndim
    shape[info.axis] = -1
    return (data.astype(np.float32) * scale.reshape(shape)).astype(np.float32)
