"""Hugging Face checkpoint folder -> one verified .parley file."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

from ..writer import write_model
from .checkpoint import load_checkpoint
from .errors import ConversionError
from .families import map_tensors
from .hf_config import Plan, plan_from_hf
from .required import required_tensors
from .storage import STORAGE_DTYPES, store
from .text import export_text
from .verify import verify_converted

CONVERTER_VERSION = "0.1.0"


@dataclass
class ConversionResult:
    path: str
    plan: Plan
    dtype: str
    file_size: int
    num_tensors: int
    warnings: list[str] = field(default_factory=list)


def _read_json(path: str, required: bool) -> dict | None:
    if not os.path.exists(path):
        if required:
            raise ConversionError(f"{path} not found")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path}: cannot read JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    return data


def plan_for_dir(model_dir: str, *, max_positions: int | None = None) -> Plan:
    config = _read_json(os.path.join(model_dir, "config.json"), True)
    gen = _read_json(os.path.join(model_dir, "generation_config.json"), False)
    return plan_from_hf(config, gen, max_positions=max_positions)  # type: ignore[arg-type]


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.bar = None
        self.total = total
        self.n = 0
        self.enabled = enabled
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="tensor", desc="converting", file=sys.stderr)
            except ImportError:
                pass

    def step(self, name: str) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled and (self.n == self.total or self.n % 10 == 0):
            print(f"\rconverting: {self.n}/{self.total} tensors", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print(file=sys.stderr)


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("transformers", "torch"):
        try:
            out[f"converter.{mod}_version"] = __import__(mod).__version__
        except ImportError:
            out[f"converter.{mod}_version"] = "not installed"
    return out


def convert(model_dir: str, out_path: str, *, dtype: str = "float32", force: bool = False,
            max_positions: int | None = None, progress: bool = True, tokenizer: bool = True,
            log: Callable[[str], None] | None = None) -> ConversionResult:
    """Converts the Hugging Face model in `model_dir` to `out_path`.

    The file is written under a temporary name, re-opened and verified
    (checksums, config, every required tensor with its shape), and only then
    renamed to `out_path`. Raises ConversionError (UnsupportedError for
    things Parley cannot represent) without leaving a file behind."""
    if dtype not in STORAGE_DTYPES:
        raise ConversionError(f"--dtype {dtype!r} is not one of {', '.join(STORAGE_DTYPES)}")
    if os.path.exists(out_path) and not force:
        raise ConversionError(f"{out_path} exists (use --force to overwrite)")
    plan = plan_for_dir(model_dir, max_positions=max_positions)
    from ..types import ModelKind
    from ..types import coerce_enum
    kind = coerce_enum(ModelKind, plan.config.kind, "kind")
    text = export_text(model_dir, plan.config.vocab_size,
                       encoder_decoder=kind == ModelKind.EncoderDecoder) if tokenizer else None
    if text is not None:
        plan.warnings.extend(text.warnings)
    ck = load_checkpoint(model_dir)
    pairs, unused = map_tensors(plan, ck)
    unused = [n for n in unused if n]
    if unused:
        more = f" and {len(unused) - 5} more" if len(unused) > 5 else ""
        raise ConversionError(
            f"{plan.architecture}: checkpoint tensor(s) {', '.join(unused[:5])}{more} are not understood by "
            "the converter (a config option it does not know?); refusing to drop them"
        )
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise ConversionError("internal: duplicate canonical tensor names")
    required = required_tensors(plan.config, separate_encoder_embeddings="encoder.embed_tokens.weight" in names)
    extra = set(names) - set(required)
    missing = set(required) - set(names)
    if extra or missing:
        raise ConversionError(f"internal: mapped tensors disagree with the contract (missing {sorted(missing)}, "
                              f"extra {sorted(extra)})")
    tensors: dict[str, object] = {}
    bar = _Progress(len(pairs), progress)
    try:
        for name, load in pairs:
            value = load()
            if tuple(value.shape) != tuple(required[name]):
                raise ConversionError(
                    f"{plan.architecture}: tensor {name!r} has shape {tuple(value.shape)} in the checkpoint, "
                    f"the config needs {tuple(required[name])}"
                )
            tensors.update(store(name, value, dtype))
            bar.step(name)
    finally:
        bar.close()
    metadata = dict(plan.metadata)
    metadata.update(_versions())
    metadata["converter"] = "parley-convert"
    metadata["converter.version"] = CONVERTER_VERSION
    metadata["converter.storage_dtype"] = dtype
    if max_positions is not None:
        metadata["converter.max_positions"] = str(max_positions)
    tmp = f"{out_path}.converting"
    try:
        write_model(tmp, plan.config, tensors, generation=plan.generation, metadata=metadata,
                    tokenizers=text.tokenizers if text else (), chat_template=text.chat_template if text else None,
                    chat_format=text.chat_format if text else None)
        verify_converted(tmp, plan.config)
        os.replace(tmp, out_path)
    except ValueError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, ConversionError):
            raise
        raise ConversionError(f"writing {out_path}: {e}") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    for w in plan.warnings:
        (log or (lambda s: print(f"warning: {s}", file=sys.stderr)))(w)
    return ConversionResult(path=out_path, plan=plan, dtype=dtype, file_size=os.path.getsize(out_path),
                            num_tensors=len(tensors), warnings=list(plan.warnings))
