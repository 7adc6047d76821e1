"""Reading Hugging Face checkpoint weights.

safetensors files (single or sharded with `model.safetensors.index.json`)
are parsed directly (8-byte header length, JSON header, raw little-endian
data) and memory-mapped, so converting them needs neither torch nor the
safetensors package. `pytorch_model.bin` (single or sharded) needs torch.
Every tensor is returned as float32 numpy (bfloat16 widened exactly).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Callable, Iterator

import numpy as np

from .errors import ConversionError

_ST_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


class Checkpoint:
    """Name -> float32 array, loaded on demand."""

    def __init__(self) -> None:
        self._loaders: dict[str, Callable[[], np.ndarray]] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self.source_dtypes: set[str] = set()
        self.files: list[str] = []

    def __contains__(self, name: str) -> bool:
        return name in self._loaders

    def names(self) -> list[str]:
        return list(self._loaders)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def get(self, name: str) -> np.ndarray:
        if name not in self._loaders:
            raise ConversionError(f"checkpoint: tensor {name!r} is missing")
        return self._loaders[name]()

    def transform(self, name: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        """Tensor `name` becomes fn(tensor) when loaded (a LoRA merge)."""
        old = self._loaders[name]
        self._loaders[name] = lambda: fn(old())

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        for n in self._loaders:
            yield n, self.get(n)

    # -- safetensors ------------------------------------------------------
    def add_safetensors(self, path: str) -> None:
        self.files.append(path)
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ConversionError(f"{path}: not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, 100 << 20):
                raise ConversionError(f"{path}: safetensors header length {n} is out of range")
            header = json.loads(f.read(n))
        base = 8 + n
        mm = np.memmap(path, dtype=np.uint8, mode="r") if size > base else np.zeros(0, np.uint8)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dt = info["dtype"]
            if dt not in _ST_DTYPES:
                raise ConversionError(f"{path}: tensor {name!r} has unsupported dtype {dt}")
            shape = tuple(int(d) for d in info["shape"])
            start, end = (int(x) for x in info["data_offsets"])
            np_dt = _ST_DTYPES[dt]
            if end < start or base + end > size or (end - start) != int(np.prod(shape, dtype=np.int64)) * np_dt.itemsize:
                raise ConversionError(f"{path}: tensor {name!r}: bad data_offsets")
            self.source_dtypes.add(dt)

            def load(start=start, end=end, np_dt=np_dt, shape=shape, dt=dt, name=name) -> np.ndarray:
                a = mm[base + start: base + end].view(np_dt).reshape(shape)
                if dt == "BF16":
                    return bf16_bits_to_f32(a)
                if a.dtype.kind == "f":
                    return a.astype(np.float32)
                return np.array(a)

            self._add(name, shape, load)

    def _add(self, name: str, shape: tuple[int, ...], load: Callable[[], np.ndarray]) -> None:
        if name in self._loaders:
            raise ConversionError(f"checkpoint: tensor {name!r} appears in more than one file")
        self._loaders[name] = load
        self._shapes[name] = shape

    # -- pytorch_model.bin ------------------------------------------------
    def add_torch_bin(self, path: str) -> None:
        try:
            import torch
        except ImportError:
            raise ConversionError(
                f"{path}: reading PyTorch .bin weights needs torch (pip install torch), "
                "or convert the checkpoint to safetensors"
            ) from None
        self.files.append(path)
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        for name, t in sd.items():
            if not hasattr(t, "dtype"):
                continue
            self.source_dtypes.add(str(t.dtype).replace("torch.", ""))

            def load(t=t) -> np.ndarray:
                if t.is_floating_point():
                    return t.detach().to(torch.float32).contiguous().numpy()
                return t.detach().contiguous().numpy()

            self._add(name, tuple(t.shape), load)


def load_checkpoint(model_dir: str) -> Checkpoint:
    """Finds the weights in a Hugging Face model folder."""
    ck = Checkpoint()
    j = lambda n: os.path.join(model_dir, n)  # noqa: E731
    for index_name, adder in (("model.safetensors.index.json", ck.add_safetensors),
                              ("pytorch_model.bin.index.json", ck.add_torch_bin)):
        if os.path.exists(j(index_name)):
            with open(j(index_name)) as f:
                weight_map = json.load(f).get("weight_map") or {}
            shards = sorted(set(weight_map.values()))
            if not shards:
                raise ConversionError(f"{index_name}: empty weight_map")
            for shard in shards:
                if os.sep in shard or shard.startswith(".."):
                    raise ConversionError(f"{index_name}: shard name {shard!r} is not a plain file name")
                if not os.path.exists(j(shard)):
                    raise ConversionError(f"{index_name}: shard {shard} is missing")
                adder(j(shard))
            return ck
    if os.path.exists(j("model.safetensors")):
        ck.add_safetensors(j("model.safetensors"))
        return ck
    if os.path.exists(j("pytorch_model.bin")):
        ck.add_torch_bin(j("pytorch_model.bin"))
        return ck
    raise ConversionError(
        f"{model_dir}: no weights found (expected model.safetensors, model.safetensors.index.json, "
        "pytorch_model.bin or pytorch_model.bin.index.json)"
    )
