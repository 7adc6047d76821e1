"""`parley-convert HF_DIR OUT.parley [--dtype ...] [--force]`"""

from __future__ import annotations

import argparse
import sys

from ..writer import GROUP_SIZES
from .convert import CONVERTER_VERSION, convert, format_error_table
from .errors import ConversionError
from .gguf_source import ARCHITECTURES as GGUF_ARCHITECTURES
from .hf_config import SUPPORTED_ARCHITECTURES
from .storage import DEFAULT_INT4_GROUP_SIZE, STORAGE_DTYPES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="parley-convert",
        description="Convert a Hugging Face checkpoint folder (config.json, optional generation_config.json, "
                    "safetensors or pytorch_model.bin weights) or a llama.cpp GGUF file into one verified .parley "
                    f"file. Architectures: {', '.join(SUPPORTED_ARCHITECTURES)}; GGUF: {', '.join(GGUF_ARCHITECTURES)}.",
    )
    ap.add_argument("model_dir", metavar="HF_DIR|MODEL.gguf")
    ap.add_argument("output", metavar="OUT.parley")
    ap.add_argument("--dtype", choices=STORAGE_DTYPES + ("native",), default=None,
                    help="storage type of the weights (default: float32 for a Hugging Face folder, native for GGUF). "
                         "native (GGUF only): F32/F16/BF16 kept, Q8_0 and Q4_0 Linear weights kept as I8 / I4 "
                         "blocks of 32, other quantized Linear weights dequantized to I8 groups of 32, quantized "
                         "embeddings I8 per row; other choices dequantize the GGUF first. int8: Linear weights I8 per output channel (symmetric); "
                         "int4: the layers' Linear weights I4 group-wise (symmetric, one f32 scale per group); "
                         "in both, token embeddings (also the tied lm_head) and an untied lm_head are I8 per row "
                         "and position tables, norms and biases stay f32")
    ap.add_argument("--group-size", type=int, choices=GROUP_SIZES, default=None,
                    help=f"int4: elements per scale along each row (default {DEFAULT_INT4_GROUP_SIZE}: the same "
                         "4.5 bits per weight as llama.cpp Q4_0; 32 lowers the error, 128 the size); "
                         "int8: store Linear weights group-wise instead of per output channel")
    ap.add_argument("--keep-f32", action="append", default=[], metavar="PATTERN",
                    help="keep tensors whose canonical name matches this fnmatch pattern in f32 (repeatable), "
                         "e.g. '*embed_tokens*' or lm_head.weight (names: formats/TENSORS.md)")
    ap.add_argument("--report", action="store_true",
                    help="print the storage error of every tensor not stored exactly "
                         "(relative Frobenius error ||W - stored(W)|| / ||W|| and max abs error)")
    ap.add_argument("--force", action="store_true", help="overwrite OUT.parley if it exists")
    ap.add_argument("--max-positions", type=int, default=None,
                    help="cap the maximum sequence length")
    ap.add_argument("--quiet", action="store_true", help="no progress bar and no summary of the worst errors")
    ap.add_argument("--no-tokenizer", action="store_true",
                    help="do not store the tokenizer and chat template (token-level API only)")
    ap.add_argument("--lora", metavar="ADAPTER_DIR", default=None,
                    help="merge a PEFT LoRA adapter (the folder save_pretrained writes: adapter_config.json, "
                         "adapter_model.safetensors) into the weights before storing them")
    ap.add_argument("--version", action="version", version=f"parley-convert {CONVERTER_VERSION}")
    args = ap.parse_args(argv)
    try:
        r = convert(args.model_dir, args.output, dtype=args.dtype, force=args.force,
                    max_positions=args.max_positions, progress=not args.quiet,
                    tokenizer=not args.no_tokenizer, group_size=args.group_size,
                    keep_f32_patterns=args.keep_f32, lora=args.lora)
    except ConversionError as e:
        print(f"parley-convert: error: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError, EOFError) as e:
        # What the readers raise on a damaged checkpoint (a truncated or
        # garbled safetensors header, pickle or index file): one line naming
        # the input, not a traceback.
        print(f"parley-convert: error: {args.model_dir}: cannot read the model: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1
    print(f"wrote {r.path}: {r.plan.architecture}, {r.num_tensors} tensors, {r.dtype}, "
          f"{r.file_size} bytes (verified)")
    if args.report:
        print("storage error per tensor:")
        print(format_error_table(r.errors))
    elif r.errors and not args.quiet:
        print(f"largest storage errors (of {len(r.errors)} tensors; --report lists all):")
        print(format_error_table(r.worst(5)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
