"""Reference writer for Parley model files (.parley), see formats/FORMAT.md."""

from .reader import (
    FormatError,
    Preamble,
    TensorInfo,
    parse_preamble,
    read_header,
    read_header_bytes,
    read_preamble,
    read_tensor,
    tensor_infos,
    verify_file,
)
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
    Quantized,
    ZeroTensor,
    normalize_config,
    write_model,
    xxh3_64,
    xxh3_64_of_zeros,
)

__version__ = "1.0.0"
