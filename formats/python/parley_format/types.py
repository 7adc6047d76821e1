"""Python mirrors of the parley.fbs tables the writer takes as input.

Field names and defaults follow formats/parley.fbs exactly. Enum-valued fields
accept the IntEnum members below, their integer values, or their names as
strings (case-insensitive; ``"None"`` for the ``None_`` members).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Sequence


class DType(enum.IntEnum):
    F32 = 0
    F16 = 1
    BF16 = 2
    I8 = 3
    I32 = 4
    U8 = 5
    I64 = 6
    I4 = 7  # format 1.2: signed 4-bit, two per byte (element 2i in the low nibble)


# Bytes per element of the whole-byte dtypes. I4 is absent on purpose (half a
# byte per element): size tensors with dtype_nbytes().
DTYPE_SIZE = {
    DType.F32: 4,
    DType.F16: 2,
    DType.BF16: 2,
    DType.I8: 1,
    DType.I32: 4,
    DType.U8: 1,
    DType.I64: 8,
}


def dtype_nbytes(dtype: DType, count: int) -> int:
    """Bytes of `count` elements of `dtype` (I4: count / 2; an odd I4 count raises ValueError)."""
    if dtype == DType.I4:
        if count % 2:
            raise ValueError(f"an i4 tensor of {count} elements does not fill whole bytes")
        return count // 2
    return count * DTYPE_SIZE[dtype]


class ModelKind(enum.IntEnum):
    DecoderOnly = 0
    EncoderDecoder = 1


class NormKind(enum.IntEnum):
    LayerNorm = 0
    RMSNorm = 1


class NormPlacement(enum.IntEnum):
    Pre = 0
    Post = 1


class PositionKind(enum.IntEnum):
    None_ = 0
    Learned = 1
    Sinusoidal = 2
    Rotary = 3


class Activation(enum.IntEnum):
    ReLU = 1
    GeluErf = 2
    GeluTanh = 3
    SiLU = 4


class RopeScaling(enum.IntEnum):
    None_ = 0
    Linear = 1
    Llama3 = 2


class QuantScheme(enum.IntEnum):
    None_ = 0
    SymmetricPerChannel = 1
    SymmetricGroupwise = 2  # format 1.2


class TokenizerKind(enum.IntEnum):
    SentencePiece = 0
    ByteLevelBPE = 1


class TokenizerRole(enum.IntEnum):
    Shared = 0
    Source = 1
    Target = 2


def coerce_enum(enum_cls: type[enum.IntEnum], value: Any, what: str) -> enum.IntEnum:
    """Accepts a member, its int value or its (case-insensitive) name."""
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected {enum_cls.__name__}, got bool {value!r}")
    if isinstance(value, int):
        try:
            return enum_cls(value)
        except ValueError:
            pass
    elif isinstance(value, str):
        wanted = value.strip().lower().rstrip("_")
        for member in enum_cls:
            if member.name.lower().rstrip("_") == wanted:
                return member
    names = ", ".join(m.name.rstrip("_") for m in enum_cls)
    raise ValueError(f"{what}: {value!r} is not a {enum_cls.__name__} (one of {names})")


@dataclass(kw_only=True)
class StackConfig:
    num_layers: int = 0
    hidden_size: int = 0
    num_heads: int = 0
    num_kv_heads: int = 0  # 0 means num_heads
    head_dim: int = 0  # 0 means hidden_size / num_heads
    ffn_size: int = 0
    activation: Activation | int | str = Activation.ReLU
    gated_ffn: bool = False
    norm: NormKind | int | str = NormKind.LayerNorm
    norm_placement: NormPlacement | int | str = NormPlacement.Pre
    norm_epsilon: float = 1e-5
    qkv_bias: bool = True
    out_bias: bool = True
    ffn_bias: bool = True
    qk_norm: bool = False
    embedding_norm: bool = False
    final_norm: bool = True
    position: PositionKind | int | str = PositionKind.None_
    max_positions: int = 0
    position_offset: int = 0
    embedding_scale: float = 1.0
    rope_theta: float = 10000.0
    rope_dim: int = 0  # 0 means head_dim
    rope_interleaved: bool = False
    rope_scaling: RopeScaling | int | str = RopeScaling.None_
    rope_scaling_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_positions: int = 0
    # format 1.3: per-layer sliding window (0: full attention); empty: none
    layer_windows: list[int] = field(default_factory=list)


@dataclass(kw_only=True)
class ModelConfig:
    architecture: str  # Hugging Face class, e.g. "LlamaForCausalLM"
    decoder: StackConfig | dict
    kind: ModelKind | int | str = ModelKind.DecoderOnly
    vocab_size: int = 0
    encoder: StackConfig | dict | None = None  # required when kind == EncoderDecoder
    tie_word_embeddings: bool = True
    final_logits_bias: bool = False
    # format 1.3: the decoder's (target) vocabulary when it differs from
    # vocab_size (encoder-decoder only); 0 means vocab_size
    decoder_vocab_size: int = 0


@dataclass(kw_only=True)
class Quantization:
    scheme: QuantScheme | int | str = QuantScheme.None_
    axis: int = 0
    scale_tensor: str | None = None  # name of an F32 tensor in the table
    # SymmetricGroupwise (format 1.2): 32, 64 or 128, dividing shape[1]; the
    # scale tensor is [shape[0], shape[1] // group_size]. 0 for other schemes.
    group_size: int = 0


class Normalization(enum.IntEnum):
    None_ = 0
    NFC = 1


class DecodeStyle(enum.IntEnum):
    Stream = 0
    Runs = 1
    RunsSpaced = 2


class SystemPlacement(enum.IntEnum):
    OwnTurn = 0
    FirstUserTurn = 1
    LastUserTurn = 2


@dataclass(kw_only=True)
class SpecialToken:
    id: int
    content: str
    special: bool = True  # dropped by decode(skip_special_tokens)
    lstrip: bool = False
    rstrip: bool = False


@dataclass(kw_only=True)
class Language:
    code: str
    token_id: int


@dataclass(kw_only=True)
class Tokenizer:
    # SentencePiece: the ModelProto; ByteLevelBPE: merges "left right\n" per line.
    model: bytes
    kind: TokenizerKind | int | str = TokenizerKind.SentencePiece
    role: TokenizerRole | int | str = TokenizerRole.Shared
    pre_tokenizer_regex: str | None = None
    special_tokens: Sequence[SpecialToken | tuple[int, str] | dict] = ()
    # Format 1.1 (see parley.fbs for their meaning).
    vocab: Sequence[str] = ()
    unk_id: int = -1
    normalization: Normalization | int | str = Normalization.None_
    add_prefix_space: bool = False
    ignore_merges: bool = False
    prefix: Sequence[str] = ()
    suffix: Sequence[str] = ()
    languages: Sequence[Language | dict] = ()
    clean_up_spaces: bool = False
    prefix_first_only: bool = False
    decode_style: DecodeStyle | int | str = DecodeStyle.Stream

    def uses_format_1_1(self) -> bool:
        return bool(self.vocab or self.unk_id != -1 or int(self.normalization) or self.add_prefix_space
                    or self.ignore_merges or self.clean_up_spaces or self.prefix_first_only or int(self.decode_style) or self.prefix or self.suffix or self.languages
                    or any(not s.special or s.lstrip or s.rstrip for s in self.special_tokens
                           if isinstance(s, SpecialToken)))


@dataclass(kw_only=True)
class ChatFormat:
    """A chat template reduced to prefixes and suffixes (parley.fbs ChatFormat)."""
    begin: str = ""
    system_prefix: str = ""
    system_suffix: str = ""
    user_prefix: str = ""
    user_suffix: str = ""
    assistant_prefix: str = ""
    assistant_suffix: str = ""
    generation_prompt: str = ""
    default_system: str = ""
    system_placement: SystemPlacement | int | str = SystemPlacement.OwnTurn
    system_separator: str = ""
    trim_system: bool = False
    trim_user: bool = False
    trim_assistant: bool = False
    alternate: bool = False
    assistant_strip_through: str = ""


@dataclass(kw_only=True)
class GenerationConfig:
    bos_token_id: int = -1  # -1: not set
    eos_token_ids: Sequence[int] = ()
    pad_token_id: int = -1
    decoder_start_token_id: int = -1
    forced_bos_token_id: int = -1
    forced_eos_token_id: int = -1
    max_length: int = 0  # 0: not set
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = False
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    suppress_tokens: Sequence[int] = ()


def coerce_dataclass(cls: type, value: Any, what: str):
    """Returns `value` as an instance of the dataclass `cls` (from a dict, too)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"{what}: unknown field(s) {', '.join(map(repr, unknown))} for {cls.__name__}")
        try:
            return cls(**value)
        except TypeError as e:  # missing required field
            raise ValueError(f"{what}: {e}") from None
    raise ValueError(f"{what}: expected {cls.__name__} or dict, got {type(value).__name__}")
