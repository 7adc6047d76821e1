"""Re-opening a converted file and checking it against the tensor contract."""

from __future__ import annotations

import dataclasses
import os

from ..reader import FormatError, tensor_infos, verify_file
from ..types import DType, ModelConfig, ModelKind, StackConfig
from ..writer import normalize_config
from .errors import ConversionError
from .required import optional_tensors, required_tensors


def _camel(field: str) -> str:
    return "".join(p.capitalize() for p in field.split("_"))


def _stack_from_fb(fb) -> StackConfig | None:
    if fb is None:
        return None
    values = {}
    for f in dataclasses.fields(StackConfig):
        if f.name == "layer_windows":  # a vector (format 1.3)
            values[f.name] = [int(fb.LayerWindows(i)) for i in range(fb.LayerWindowsLength())]
            continue
        values[f.name] = getattr(fb, _camel(f.name))()
    return StackConfig(**values)


def config_from_header(model) -> ModelConfig:
    """ModelConfig from a file's header (the generated FlatBuffers accessor)."""
    c = model.Config()
    return normalize_config(ModelConfig(
        architecture=c.Architecture().decode("utf-8"),
        kind=c.Kind(),
        vocab_size=c.VocabSize(),
        encoder=_stack_from_fb(c.Encoder()) if c.Kind() == ModelKind.EncoderDecoder else None,
        decoder=_stack_from_fb(c.Decoder()),
        tie_word_embeddings=c.TieWordEmbeddings(),
        final_logits_bias=c.FinalLogitsBias(),
        decoder_vocab_size=c.DecoderVocabSize(),
    ))


def verify_converted(path: str | os.PathLike, expected: ModelConfig | None = None) -> ModelConfig:
    """Checksums and structure (parley_format.verify_file), then: the config
    in the file equals `expected` (when given), every required tensor is
    present with its shape, int8/int4 tensors carry their scales, and nothing
    else is in the table. Raises ConversionError naming the first problem."""
    try:
        model = verify_file(path)
    except FormatError as e:
        raise ConversionError(f"{path}: re-opened file is invalid: {e}") from None
    cfg = config_from_header(model)
    if expected is not None and cfg != normalize_config(expected):
        raise ConversionError(f"{path}: the config in the file differs from the converted one")
    infos = {t.name: t for t in tensor_infos(model)}
    sep = "encoder.embed_tokens.weight" in infos
    required = required_tensors(cfg, separate_encoder_embeddings=sep)
    optional = optional_tensors(cfg)
    scales: set[str] = set()
    for i in range(model.TensorsLength()):
        t = model.Tensors(i)
        q = t.Quantization()
        if q is not None and q.Scheme() != 0:
            scales.add(q.ScaleTensor().decode("utf-8"))
    for name, shape in required.items():
        info = infos.get(name)
        if info is None:
            raise ConversionError(f"{path}: required tensor {name!r} is missing")
        if info.shape != tuple(shape):
            raise ConversionError(f"{path}: tensor {name!r} has shape {info.shape}, the config needs {tuple(shape)}")
        if info.dtype not in (DType.F32, DType.F16, DType.BF16, DType.I8, DType.I4):
            raise ConversionError(f"{path}: tensor {name!r} has dtype {info.dtype.name}")
        if info.dtype in (DType.I8, DType.I4) and f"{name}.scale" not in scales:
            raise ConversionError(f"{path}: {info.dtype.name.lower()} tensor {name!r} has no scale tensor")
    for name, info in infos.items():
        if name in required or name in scales:
            continue
        if name in optional and info.shape == optional[name]:
            continue
        raise ConversionError(f"{path}: unexpected tensor {name!r} for this config")
    return cfg
