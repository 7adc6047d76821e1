"""`parley-convert HF_DIR OUT.parley [--dtype ...] [--force]`"""

from __future__ import annotations

import argparse
import sys

from .convert import CONVERTER_VERSION, convert
from .errors import ConversionError
from .hf_config import SUPPORTED_ARCHITECTURES
from .storage import STORAGE_DTYPES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="parley-convert",
        description="Convert a Hugging Face checkpoint folder (config.json, optional generation_config.json, "
                    "safetensors or pytorch_model.bin weights) into one verified .parley file. "
                    f"Architectures: {', '.join(SUPPORTED_ARCHITECTURES)}.",
    )
    ap.add_argument("model_dir", metavar="HF_DIR")
    ap.add_argument("output", metavar="OUT.parley")
    ap.add_argument("--dtype", choices=STORAGE_DTYPES, default="float32",
                    help="storage type of the weights (int8: Linear weights, per-output-channel symmetric)")
    ap.add_argument("--force", action="store_true", help="overwrite OUT.parley if it exists")
    ap.add_argument("--max-positions", type=int, default=None,
                    help="cap the maximum sequence length (e.g. to a Mistral sliding_window)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--no-tokenizer", action="store_true",
                    help="do not store the tokenizer and chat template (token-level API only)")
    ap.add_argument("--version", action="version", version=f"parley-convert {CONVERTER_VERSION}")
    args = ap.parse_args(argv)
    try:
        r = convert(args.model_dir, args.output, dtype=args.dtype, force=args.force,
                    max_positions=args.max_positions, progress=not args.quiet,
                    tokenizer=not args.no_tokenizer)
    except ConversionError as e:
        print(f"parley-convert: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {r.path}: {r.plan.architecture}, {r.num_tensors} tensors, {r.dtype}, "
          f"{r.file_size} bytes (verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
