"""Hugging Face checkpoint folder -> one verified .parley file."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable

from ..writer import GROUP_SIZES, write_model
from .checkpoint import load_checkpoint
from .errors import ConversionError
from .families import map_tensors
from .gguf_source import is_gguf, read_gguf
from .hf_config import Plan, plan_from_hf
from .jsonfile import read_json_object
from .lora import apply_adapter
from .required import required_tensors
from .storage import DEFAULT_INT4_GROUP_SIZE, STORAGE_DTYPES, TensorError, keep_f32, store, store_gguf_native
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
    # The storage error of every tensor not stored exactly (F16, BF16, I8,
    # I4), in the order converted; see storage.TensorError.
    errors: list[TensorError] = field(default_factory=list)
    group_size: int | None = None  # int4 (and group-wise int8): the group size asked for

    def worst(self, n: int = 5) -> list[TensorError]:
        return sorted(self.errors, key=lambda e: e.rel_error, reverse=True)[:n]


def format_error_table(errors: list[TensorError]) -> str:
    """A text table of per-tensor storage errors."""
    if not errors:
        return "(no tensor is stored inexactly)"
    width = max(len("tensor"), *(len(e.name) for e in errors))
    lines = [f"{'tensor':<{width}}  {'stored':<10}  {'rel. error':>10}  {'max abs error':>13}"]
    for e in errors:
        lines.append(f"{e.name:<{width}}  {e.stored:<10}  {e.rel_error:>10.3e}  {e.max_abs_error:>13.3e}")
    return "\n".join(lines)


def plan_for_dir(model_dir: str, *, max_positions: int | None = None) -> Plan:
    config = read_json_object(os.path.join(model_dir, "config.json"), True)
    gen = read_json_object(os.path.join(model_dir, "generation_config.json"), False)
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


def check_paths(model_dir: str, out_path: str, force: bool) -> None:
    """Refuses what would fail late or destroy something: a missing input, a
    file that is no GGUF, an output that is the input, a folder, or in a
    folder that does not exist."""
    if not os.path.exists(model_dir):
        raise ConversionError(f"{model_dir} does not exist")
    if not os.path.isdir(model_dir) and not is_gguf(model_dir):
        raise ConversionError(f"{model_dir} is neither a Hugging Face checkpoint folder nor a GGUF file "
                              "(a GGUF file starts with the bytes 'GGUF')")
    if os.path.isdir(out_path):
        raise ConversionError(f"{out_path} is a folder; give the path of the .parley file to write")
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        raise ConversionError(f"the folder of {out_path} ({folder}) does not exist")
    if os.path.exists(out_path):
        if os.path.samefile(model_dir, out_path):
            raise ConversionError(f"{out_path} is the input; writing it would destroy the model being converted")
        if not force:
            raise ConversionError(f"{out_path} exists (use --force to overwrite)")


def convert(model_dir: str, out_path: str, *, dtype: str | None = None, force: bool = False,
            max_positions: int | None = None, progress: bool = True, tokenizer: bool = True,
            log: Callable[[str], None] | None = None, group_size: int | None = None,
            keep_f32_patterns: tuple[str, ...] | list[str] = (), lora: str | None = None) -> ConversionResult:
    """Converts the Hugging Face model in `model_dir` to `out_path`.

    `dtype` int4 stores Linear weights I4 group-wise (`group_size`, default
    64); int8 stores them I8 per output channel, or group-wise when
    `group_size` is given. Token embeddings are I8 per row in both. Tensors
    whose canonical name matches one of `keep_f32_patterns` (fnmatch) stay
    F32. The result lists the storage error of every inexactly stored tensor.

    The file is written under a temporary name, re-opened and verified
    (checksums, config, every required tensor with its shape), and only then
    renamed to `out_path`. Raises ConversionError (UnsupportedError for
    things Parley cannot represent) without leaving a file behind.

    `model_dir` may also be a GGUF file (llama.cpp; gguf_source.py). Its
    default `dtype` is "native": each tensor keeps the closest precision
    Parley stores (see storage.store_gguf_native); any other dtype
    dequantizes every tensor and stores it as for a Hugging Face folder.
    The storage error is measured against the GGUF's dequantized values.

    `lora`: a PEFT LoRA adapter folder merged into the weights before they
    are stored (lora.py); the storage error is then that of the merged
    weights, and a merged GGUF tensor is stored as a dequantized one."""
    gguf_model = None
    if is_gguf(model_dir):
        dtype = dtype or "native"
    else:
        dtype = dtype or "float32"
        if dtype == "native":
            raise ConversionError("--dtype native applies to GGUF files only")
    if dtype == "native":
        if group_size is not None:
            raise ConversionError("--group-size applies to --dtype int8 or int4, not native")
    elif dtype not in STORAGE_DTYPES:
        raise ConversionError(f"--dtype {dtype!r} is not one of {', '.join(STORAGE_DTYPES)}")
    if group_size is not None:
        if dtype not in ("int8", "int4"):
            raise ConversionError(f"--group-size applies to --dtype int8 or int4, not {dtype}")
        if group_size not in GROUP_SIZES:
            raise ConversionError(f"--group-size {group_size} is not one of {', '.join(map(str, GROUP_SIZES))}")
    if dtype == "int4" and group_size is None:
        group_size = DEFAULT_INT4_GROUP_SIZE
    patterns = tuple(keep_f32_patterns)
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise ConversionError(f"--keep-f32 pattern {p!r} must be a non-empty string")
    check_paths(model_dir, out_path, force)
    if is_gguf(model_dir):
        gguf_model = read_gguf(model_dir, tokenizer=tokenizer)
        plan = plan_from_hf(gguf_model.config, gguf_model.generation, max_positions=max_positions)
        plan.metadata.update(gguf_model.metadata)
        text = gguf_model.text
        ck = gguf_model.checkpoint
    else:
        plan = plan_for_dir(model_dir, max_positions=max_positions)
        from ..types import ModelKind
        from ..types import coerce_enum
        kind = coerce_enum(ModelKind, plan.config.kind, "kind")
        # Marian with separate vocabularies: the target tokenizer makes decoder ids.
        text = export_text(model_dir, plan.config.vocab_size, encoder_decoder=kind == ModelKind.EncoderDecoder,
                           decoder_vocab_size=plan.config.decoder_vocab_size or None) if tokenizer else None
        ck = load_checkpoint(model_dir)
    if text is not None:
        plan.warnings.extend(text.warnings)
    merged = apply_adapter(ck, lora) if lora is not None else []
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
    try:
        required = required_tensors(plan.config, separate_encoder_embeddings="encoder.embed_tokens.weight" in names)
    except ValueError as e:  # the writer's config range checks (FORMAT.md section 4)
        if isinstance(e, ConversionError):
            raise
        raise ConversionError(f"{plan.architecture}: the model's configuration cannot be stored: {e}") from None
    extra = set(names) - set(required)
    missing = set(required) - set(names)
    if extra or missing:
        raise ConversionError(f"internal: mapped tensors disagree with the contract (missing {sorted(missing)}, "
                              f"extra {sorted(extra)})")
    for p in patterns:
        if not any(keep_f32(n, (p,)) for n in names):
            plan.warnings.append(f"--keep-f32 {p!r} matches no tensor (names are canonical: formats/TENSORS.md)")
    tensors: dict[str, object] = {}
    errors: list[TensorError] = []
    bar = _Progress(len(pairs), progress)
    try:
        for name, load in pairs:
            value = load()
            if tuple(value.shape) != tuple(required[name]):
                raise ConversionError(
                    f"{plan.architecture}: tensor {name!r} has shape {tuple(value.shape)} in the checkpoint, "
                    f"the config needs {tuple(required[name])}"
                )
            if dtype == "native":
                assert gguf_model is not None
                tensors.update(store_gguf_native(name, value, gguf_model.checkpoint.source_of(value),
                                                 keep_f32_patterns=patterns, warnings=plan.warnings,
                                                 errors=errors))
            else:
                tensors.update(store(name, value, dtype, group_size=group_size, keep_f32_patterns=patterns,
                                     warnings=plan.warnings, errors=errors))
            bar.step(name)
    finally:
        bar.close()
    metadata = dict(plan.metadata)
    metadata.update(_versions())
    metadata["converter"] = "parley-convert"
    metadata["converter.version"] = CONVERTER_VERSION
    metadata["converter.storage_dtype"] = dtype
    if group_size is not None:
        metadata["converter.group_size"] = str(group_size)
    if patterns:
        metadata["converter.keep_f32"] = " ".join(patterns)
    if errors:
        worst = max(errors, key=lambda e: e.rel_error)
        metadata["converter.quant_error.max_rel"] = f"{worst.rel_error:.6g}"
        metadata["converter.quant_error.worst_tensor"] = worst.name
        metadata["converter.quant_error.mean_rel"] = f"{sum(e.rel_error for e in errors) / len(errors):.6g}"
        metadata["converter.quant_error.max_abs"] = f"{max(e.max_abs_error for e in errors):.6g}"
    if lora is not None:
        metadata["converter.lora"] = os.path.basename(os.path.normpath(lora))
        metadata["converter.lora_tensors"] = str(len(merged))
    if max_positions is not None:
        metadata["converter.max_positions"] = str(max_positions)
    if text:
        for k, v in text.chat_template_variables.items():
            metadata[f"chat_template.{k}"] = v
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
                            num_tensors=len(tensors), warnings=list(plan.warnings), errors=errors,
                            group_size=group_size)
