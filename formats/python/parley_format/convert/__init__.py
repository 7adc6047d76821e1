"""Hugging Face checkpoint -> Parley model file converter (`parley-convert`).

The config mapping (`hf_config`), the tensor contract (`required`), the
safetensors reader and the storage types need only numpy; torch is needed
only for `pytorch_model.bin` weights (and makes M2M100's sinusoidal table
bit-exact with transformers)."""

from .convert import CONVERTER_VERSION, ConversionResult, convert, format_error_table, plan_for_dir
from .errors import ConversionError, UnsupportedError
from .hf_config import POSITION_RULES, SUPPORTED_ARCHITECTURES, Plan, plan_from_hf
from .required import is_linear_weight, optional_tensors, required_tensors
from .storage import STORAGE_DTYPES, TensorError, dequantize, quantize_int4, quantize_int8, quantize_int8_groupwise
from .verify import config_from_header, verify_converted

__all__ = [
    "CONVERTER_VERSION", "ConversionError", "ConversionResult", "Plan", "POSITION_RULES",
    "STORAGE_DTYPES", "SUPPORTED_ARCHITECTURES", "TensorError", "UnsupportedError", "config_from_header", "convert",
    "dequantize", "format_error_table", "is_linear_weight", "optional_tensors", "plan_for_dir", "plan_from_hf",
    "quantize_int4", "quantize_int8", "quantize_int8_groupwise",
    "required_tensors", "verify_converted",
]
