"""Re-store a .parley file in another storage type, without torch.

`restore(src, dst, dtype, group_size)` reads every tensor of `src` as its
real values (float32: exact for F32/F16/BF16 files) and writes `dst` through
the converter's own storage step (`parley_format.convert.storage.store`, the
function `parley-convert --dtype` calls), carrying over the config,
tokenizers, generation config, chat template/format and metadata. Because a
float32 file holds its checkpoint's values exactly, re-storing it gives the
tensors `parley-convert --dtype DTYPE` writes from the same checkpoint (checked
by tests/parity/make_quantized.py --check: float16/bfloat16 re-stored from the
committed float32 files have the committed files' checksums).

Used by tests/parity/make_quantized.py (parity models) and
tests/bench/bleu_precision.py (demo translation models).
"""

from __future__ import annotations

import dataclasses
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
try:
    import parley_format  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "formats", "python"))

from parley_format import read_dequantized, read_header, read_preamble, tensor_infos, write_model  # noqa: E402
from parley_format.convert.storage import store  # noqa: E402
from parley_format.convert.verify import config_from_header  # noqa: E402
from parley_format.types import ChatFormat, GenerationConfig, Language, SpecialToken, Tokenizer  # noqa: E402


def _camel(field: str) -> str:
    return "".join(w.capitalize() for w in field.split("_"))


def _decode(v):
    return v.decode() if isinstance(v, bytes) else v


def _fields(fb, cls, skip=()):
    """Reads the flatbuffer table `fb` into the writer's dataclass `cls` (the
    writer's field names are the schema's, snake_case)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        acc = getattr(fb, _camel(f.name), None)
        if acc is None:
            continue
        length = getattr(fb, _camel(f.name) + "Length", None)
        if length is not None:
            out[f.name] = [_decode(acc(i)) for i in range(length())]
        else:
            v = _decode(acc())
            if v is not None:
                out[f.name] = v
    return out


def _tokenizers(path: str, header) -> list[Tokenizer]:
    p = read_preamble(path)
    toks = []
    with open(path, "rb") as f:
        for i in range(header.TokenizersLength()):
            t = header.Tokenizers(i)
            blob = t.Model()
            f.seek(p.data_offset + blob.Offset())
            kw = _fields(t, Tokenizer, skip=("model", "special_tokens", "languages"))
            kw["special_tokens"] = [
                SpecialToken(id=s.Id(), content=s.Content().decode(), special=s.Special(), lstrip=s.Lstrip(),
                             rstrip=s.Rstrip()) for s in (t.SpecialTokens(j) for j in range(t.SpecialTokensLength()))]
            kw["languages"] = [Language(code=lang.Code().decode(), token_id=lang.TokenId())
                               for lang in (t.Languages(j) for j in range(t.LanguagesLength()))]
            toks.append(Tokenizer(model=f.read(blob.Length()), **kw))
    return toks


def real_values(path: str, info):
    """A tensor's real values (dequantized; F16/BF16 widened) as float32."""
    return read_dequantized(path, info.name)


def restore(src: str, dst: str, dtype: str, group_size: int | None = None, errors: list | None = None,
            warnings: list | None = None) -> dict:
    """Writes `src` re-stored as `dtype` to `dst`; returns write_model's summary."""
    header = read_header(src)
    infos = tensor_infos(header)
    scales = {i.scale_tensor for i in infos if i.scheme}
    tensors = {}
    for info in infos:
        if info.name in scales:
            continue  # re-derived by store()
        tensors.update(store(info.name, real_values(src, info), dtype, group_size=group_size, errors=errors,
                             warnings=warnings))
    gen = header.Generation()
    chat = header.ChatFormat()
    tmpl = header.ChatTemplate()
    meta = {header.Metadata(i).Key().decode(): header.Metadata(i).Value().decode()
            for i in range(header.MetadataLength())}
    if "converter.storage_dtype" in meta:
        meta["converter.storage_dtype"] = dtype
    return write_model(
        dst, config_from_header(header), tensors, tokenizers=_tokenizers(src, header),
        generation=GenerationConfig(**_fields(gen, GenerationConfig)) if gen is not None else None,
        chat_template=tmpl.Source().decode() if tmpl is not None and tmpl.Source() is not None else None,
        chat_format=ChatFormat(**_fields(chat, ChatFormat)) if chat is not None else None,
        metadata=meta)
