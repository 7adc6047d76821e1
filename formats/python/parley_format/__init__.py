"""Reference writer for Parley model files (.parley), see formats/FORMAT.md."""

from .reader import (
    FormatError,
    Preamble,
    TensorInfo,
    parse_preamble,
    read_header,
    read_header_bytes,
    read_dequantized,
    read_preamble,
    read_tensor,
    tensor_infos,
    verify_file,
)
from .i4 import pack_i4, unpack_i4
from .types import (
    Activation,
    ChatFormat,
    DecodeStyle,
    DType,
    GenerationConfig,
    Language,
    ModelConfig,
    ModelKind,
    NormKind,
    NormPlacement,
    Normalization,
    PositionKind,
    QuantScheme,
    Quantization,
    RopeScaling,
    SpecialToken,
    StackConfig,
    SystemPlacement,
    Tokenizer,
    TokenizerKind,
    TokenizerRole,
)
from .writer import (
    ALIGNMENT,
    FORMAT_MAJOR,
    MAGIC,
    BF16,
    GROUP_SIZES,
    I4,
    Quantized,
    ZeroTensor,
    normalize_config,
    write_model,
    xxh3_64,
    xxh3_64_of_zeros,
)

__version__ = "1.0.0"
