"""A GGUF file (llama.cpp) -> the converter's inputs: a Hugging Face style
config, a checkpoint under Hugging Face tensor names, the tokenizer and the
chat template.

Read with the `gguf` package (numpy only). The mapping is the inverse of
llama.cpp's `convert_hf_to_gguf.py` (LlamaModel, Qwen2Model) and of
`gguf-py/gguf/tensor_mapping.py`:

* architecture `llama` -> LlamaForCausalLM, `qwen2` -> Qwen2ForCausalLM;
  every other architecture is refused by name.
* hyper-parameters from `<arch>.*` keys (block_count, embedding_length,
  feed_forward_length, attention.head_count[_kv], attention.key_length,
  attention.layer_norm_rms_epsilon, rope.freq_base, rope.dimension_count,
  rope.scaling.*, context_length, vocab_size).
* Q/K rows: LlamaModel.permute reorders the rows of q_proj / k_proj (weights
  and biases) of `llama` files from Hugging Face's half-split RoPE layout to
  the interleaved pairs ggml's normal RoPE rotates:
      w.reshape(n_head, 2, head_dim // 2, ...).swapaxes(1, 2).reshape(w.shape)
  so they are un-permuted here (reshape(n_head, head_dim // 2, 2, ...)
  .swapaxes(1, 2)); `qwen2` files use NEOX RoPE and are not permuted.
* weights: `gguf.quants.dequantize` gives each tensor's exact float32 values
  (the reference for the storage error). For the default storage
  (`--dtype native`) the blocks that Parley stores without change are kept
  as they are: Q8_0 -> I8 group-wise (32), Q4_0 -> I4 group-wise (32);
  `exact_blocks` returns them.
* tokenizer: `tokenizer.ggml.model` "gpt2" (byte-level BPE) with
  `tokenizer.ggml.pre` naming the pre-tokenizer split (see PRE_TOKENIZERS).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..types import SpecialToken, Tokenizer, TokenizerKind, TokenizerRole
from .checkpoint import Checkpoint
from .errors import ConversionError, UnsupportedError
from .text import GPT2_REGEX, TextExport

GGUF_MAGIC = b"GGUF"

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}

# The Hugging Face pre-tokenizer split of the vocabularies llama.cpp names in
# `tokenizer.ggml.pre` (llama-vocab.cpp; the same regexes as transformers'
# integrations/gguf/gguf_tokenizer_mapping.py GGUF_PRE_TOKENIZER_SPLITS).
# Value: (regex, NFC normalizer, ignore_merges, add_bos default), as in each
# model's own tokenizer.json and llama.cpp: Llama-3 sets ignore_merges and
# adds BOS unless `tokenizer.ggml.add_bos_token` says otherwise; Qwen2
# normalizes to NFC. "smollm": SmolLM2's tokenizer.json uses GPT-2's split
# (llama.cpp isolates digits first; SmolLM2's vocabulary has no token that
# joins a digit to anything, so both give the same ids). llama.cpp's
# "default" (a missing `tokenizer.ggml.pre`) is its own regex set, not a
# Hugging Face one: refused.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# transformers/models/qwen2/tokenization_qwen2.py PRETOKENIZE_REGEX.
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS: dict[str, tuple[str, bool, bool, bool]] = {
    "gpt-2": (GPT2_REGEX, False, False, False),
    "smollm": (GPT2_REGEX, False, False, False),
    "llama3": (_LLAMA3_SPLIT, False, True, True),
    "llama-v3": (_LLAMA3_SPLIT, False, True, True),
    "llama-bpe": (_LLAMA3_SPLIT, False, True, True),
    "qwen2": (_QWEN2_SPLIT, True, False, False),
}

# llama.cpp's token types (gguf.TokenType).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

# GGUF tensor name (without "blk.N.") -> Hugging Face name (without "model.layers.N.").
_LAYER_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "ffn_gate.bias": "mlp.gate_proj.bias",
    "ffn_up.bias": "mlp.up_proj.bias",
    "ffn_down.bias": "mlp.down_proj.bias",
}
_GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def is_gguf(path: str) -> bool:
    """A file (not a folder) that starts with the GGUF magic."""
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face name of a GGUF tensor name, or None if unknown."""
    if gguf_name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_TENSORS:
        return f"model.layers.{int(parts[1])}.{_LAYER_TENSORS[parts[2]]}"
    return None


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of convert_hf_to_gguf.py LlamaModel.permute on axis 0."""
    rows = w.shape[0]
    if n_head <= 0 or rows % (2 * n_head):
        raise ConversionError(f"cannot un-permute {rows} rows for {n_head} heads (rows must be 2 * heads * k)")
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


@dataclass
class ExactBlocks:
    """GGUF blocks Parley stores without change: value = q * scale per group."""
    dtype: str  # "i8" (Q8_0) or "i4" (Q4_0)
    q: np.ndarray  # int8 [rows, cols] (i4: values in [-8, 7])
    scale: np.ndarray  # float32 [rows, cols / group_size]
    group_size: int


@dataclass
class GGUFTensor:
    gguf_name: str
    type_name: str  # GGMLQuantizationType name: F32, F16, Q8_0, Q4_1, ...
    shape: tuple[int, ...]  # numpy order (rows, cols)
    data: np.ndarray
    qtype: Any
    permute_heads: int = 0  # > 0: un-permute rows for this many heads


class GGUFCheckpoint(Checkpoint):
    """A Checkpoint whose tensors come from a GGUF file (Hugging Face names)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.tensors: dict[str, GGUFTensor] = {}
        self.files.append(path)
        self._handed_out: dict[int, tuple[np.ndarray, str]] = {}
        self._transformed: set[str] = set()

    def add(self, name: str, t: GGUFTensor) -> None:
        self.tensors[name] = t
        self.source_dtypes.add(t.type_name)
        self._add(name, t.shape, lambda name=name, t=t: self._hand_out(name, self._dequantize(t)))

    def transform(self, name: str, fn) -> None:
        """Tensor `name` becomes fn(dequantized tensor): still handed out as
        this GGUF tensor (its storage rule applies), but never as its exact
        blocks, which no longer hold it."""
        t = self.tensors[name]
        self._transformed.add(name)
        self._loaders[name] = lambda: self._hand_out(name, fn(self._dequantize(t)))

    def _hand_out(self, name: str, a: np.ndarray) -> np.ndarray:
        self._handed_out[id(a)] = (a, name)
        return a

    def source_of(self, value: np.ndarray) -> tuple[GGUFTensor, ExactBlocks | None] | None:
        """The GGUF tensor an array returned by get() came from (and its
        exact blocks, if any); None for an array this checkpoint did not
        hand out unchanged. Forgets the array."""
        entry = self._handed_out.pop(id(value), None)
        if entry is None or entry[0] is not value:
            return None
        name = entry[1]
        return self.tensors[name], self.exact_blocks(name)

    def _dequantize(self, t: GGUFTensor) -> np.ndarray:
        import gguf.quants

        try:
            # A corrupt scale gives inf/NaN values (store() refuses them by name), not a warning here.
            with np.errstate(all="ignore"):
                a = np.asarray(gguf.quants.dequantize(t.data, t.qtype), dtype=np.float32)
        except NotImplementedError:
            raise UnsupportedError(f"{self.path}: tensor {t.gguf_name!r}: the gguf package cannot dequantize "
                                   f"{t.type_name}") from None
        except Exception as e:  # noqa: BLE001 - truncated or inconsistent data
            raise ConversionError(f"{self.path}: tensor {t.gguf_name!r} ({t.type_name}) cannot be read: {e}") from None
        if tuple(a.shape) != t.shape:
            a = a.reshape(t.shape)
        if t.permute_heads:
            a = unpermute_rows(a, t.permute_heads)
        return np.ascontiguousarray(a)

    def exact_blocks(self, name: str) -> ExactBlocks | None:
        """Q8_0 / Q4_0 tensors of rank 2 as (q, scale) without re-quantizing,
        or None. `q * scale` equals gguf's own dequantization bit for bit
        (the caller checks)."""
        t = self.tensors.get(name)
        if t is None or name in self._transformed or len(t.shape) != 2 or t.type_name not in ("Q8_0", "Q4_0"):
            return None
        rows, cols = t.shape
        if cols % 32:
            return None
        raw = np.asarray(t.data, dtype=np.uint8)
        nb = cols // 32
        if t.type_name == "Q8_0":  # block: f16 d, int8 qs[32]
            if raw.shape != (rows, nb * 34):
                return None
            blocks = raw.reshape(rows, nb, 34)
            scale = blocks[:, :, :2].copy().view("<f2").reshape(rows, nb).astype(np.float32)
            q = blocks[:, :, 2:].copy().view(np.int8).reshape(rows, cols)
            dtype = "i8"
        else:  # Q4_0 block: f16 d, 16 bytes: element j low nibble, element j + 16 high nibble; value d * (n - 8)
            if raw.shape != (rows, nb * 18):
                return None
            blocks = raw.reshape(rows, nb, 18)
            scale = blocks[:, :, :2].copy().view("<f2").reshape(rows, nb).astype(np.float32)
            qs = blocks[:, :, 2:]
            q = np.concatenate([(qs & 0x0F), (qs >> 4)], axis=2).astype(np.int8) - np.int8(8)
            q = q.reshape(rows, cols)
            dtype = "i4"
        if not np.all(np.isfinite(scale)):
            return None
        if t.permute_heads:
            q = unpermute_rows(q, t.permute_heads)
            scale = unpermute_rows(scale, t.permute_heads)
        return ExactBlocks(dtype, np.ascontiguousarray(q), np.ascontiguousarray(scale), 32)


@dataclass
class GGUFModel:
    path: str
    architecture: str  # GGUF name, e.g. "llama"
    config: dict[str, Any]  # a Hugging Face config.json equivalent
    generation: dict[str, Any]  # a generation_config.json equivalent
    checkpoint: GGUFCheckpoint
    text: TextExport | None
    file_type: str  # the most common quantization type of the Linear weights, e.g. "Q4_1"
    metadata: dict[str, str] = field(default_factory=dict)


class _Fields:
    """Typed access to GGUF key/values with errors that name the key."""

    def __init__(self, reader, path: str):
        self.fields = reader.fields
        self.path = path

    def has(self, key: str) -> bool:
        return key in self.fields

    def _raw(self, key: str):
        f = self.fields[key]
        try:
            return f.contents(), [t.name for t in f.types]
        except Exception as e:  # noqa: BLE001 - malformed field
            raise ConversionError(f"{self.path}: GGUF key {key!r} cannot be read: {e}") from None

    def get(self, key: str, kind: str, default: Any = ...) -> Any:
        if key not in self.fields:
            if default is ...:
                raise ConversionError(f"{self.path}: GGUF key {key!r} is missing")
            return default
        v, types = self._raw(key)
        want = {"int": ("UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "UINT64", "INT64"),
                "float": ("FLOAT32", "FLOAT64", "UINT32", "INT32", "UINT64", "INT64"),
                "bool": ("BOOL",), "str": ("STRING",)}[kind]
        if len(types) != 1 or types[0] not in want:
            raise ConversionError(f"{self.path}: GGUF key {key!r} has type {'/'.join(types)}, expected {kind}")
        if kind == "int":
            return int(v)
        if kind == "float":
            v = float(v)
            if not np.isfinite(v):
                raise ConversionError(f"{self.path}: GGUF key {key!r} is {v}")
            return v
        return bool(v) if kind == "bool" else str(v)

    def pos_int(self, key: str, default: Any = ...) -> int:
        v = self.get(key, "int", default)
        if v is not None and v <= 0:
            raise ConversionError(f"{self.path}: GGUF key {key!r} is {v}, expected a positive integer")
        return v

    def array(self, key: str, kind: str, default: Any = ...) -> list:
        if key not in self.fields:
            if default is ...:
                raise ConversionError(f"{self.path}: GGUF key {key!r} is missing")
            return default
        v, types = self._raw(key)
        elem = {"str": ("STRING",), "int": ("INT32", "UINT32", "INT64", "UINT64", "INT8", "UINT8", "INT16", "UINT16"),
                "float": ("FLOAT32", "FLOAT64")}[kind]
        if len(types) != 2 or types[0] != "ARRAY" or types[1] not in elem:
            raise ConversionError(f"{self.path}: GGUF key {key!r} has type {'/'.join(types)}, expected an array of "
                                  f"{kind}")
        return [str(x) for x in v] if kind == "str" else [int(x) if kind == "int" else float(x) for x in v]


def _open(path: str):
    try:
        import gguf
    except ImportError:
        raise ConversionError("reading GGUF files needs the gguf package (pip install -r "
                              "formats/python/requirements.txt)") from None
    try:
        return gguf.GGUFReader(path, "r")
    except Exception as e:  # noqa: BLE001 - the reader raises ValueError, KeyError, IndexError, struct errors...
        raise ConversionError(f"{path}: not a readable GGUF file: {type(e).__name__}: {e}") from None


def read_gguf(path: str, *, tokenizer: bool = True) -> GGUFModel:
    """Reads the GGUF file at `path`; raises ConversionError/UnsupportedError
    naming the key, tensor or feature at fault."""
    reader = _open(path)
    kv = _Fields(reader, path)
    arch = kv.get("general.architecture", "str")
    if arch not in ARCHITECTURES:
        raise UnsupportedError(f"{path}: GGUF architecture {arch!r} is not supported "
                               f"(supported: {', '.join(ARCHITECTURES)})")
    a = f"{arch}."
    layers = kv.pos_int(a + "block_count")
    hidden = kv.pos_int(a + "embedding_length")
    ffn = kv.pos_int(a + "feed_forward_length")
    heads = kv.pos_int(a + "attention.head_count")
    kv_heads = kv.pos_int(a + "attention.head_count_kv", heads)
    head_dim = kv.pos_int(a + "attention.key_length", hidden // heads if hidden % heads == 0 else None)
    if head_dim is None:
        raise ConversionError(f"{path}: {a}embedding_length {hidden} is not divisible by {a}attention.head_count "
                              f"{heads} and {a}attention.key_length is missing")
    value_dim = kv.pos_int(a + "attention.value_length", head_dim)
    if value_dim != head_dim:
        raise UnsupportedError(f"{path}: {a}attention.value_length {value_dim} differs from key_length {head_dim}")
    if heads % kv_heads:
        raise ConversionError(f"{path}: {a}attention.head_count {heads} is not a multiple of head_count_kv {kv_heads}")
    rope_dims = kv.pos_int(a + "rope.dimension_count", head_dim)
    if rope_dims != head_dim:
        raise UnsupportedError(f"{path}: {a}rope.dimension_count {rope_dims} != head dimension {head_dim}: "
                               "partial rotary embeddings are not supported")
    eps = kv.get(a + "attention.layer_norm_rms_epsilon", "float")
    theta = kv.get(a + "rope.freq_base", "float", 10000.0)
    context = kv.pos_int(a + "context_length")
    for key in (a + "expert_count", a + "attention.sliding_window", a + "rope.scaling.yarn_log_multiplier"):
        if kv.has(key) and kv.get(key, "int" if not key.endswith("multiplier") else "float"):
            raise UnsupportedError(f"{path}: GGUF key {key!r} (a feature Parley does not implement) is set")
    rope: dict[str, Any] = {"rope_theta": theta, "rope_type": "default"}
    scaling = kv.get(a + "rope.scaling.type", "str", "none")
    if scaling == "linear":
        factor = kv.get(a + "rope.scaling.factor", "float")
        if factor <= 0:
            raise ConversionError(f"{path}: {a}rope.scaling.factor {factor} must be positive")
        rope.update(rope_type="linear", factor=factor)
    elif scaling != "none":
        raise UnsupportedError(f"{path}: RoPE scaling {scaling!r} is not supported from GGUF (supported: none, linear)")

    # Tensors.
    ck = GGUFCheckpoint(path)
    unknown = []
    linear_types: dict[str, int] = {}
    for t in reader.tensors:
        name = hf_name(t.name)
        if t.name == "rope_freqs.weight":
            raise UnsupportedError(f"{path}: tensor 'rope_freqs.weight' (per-frequency RoPE factors, e.g. Llama-3.1's "
                                   "llama3 scaling) is not supported from GGUF")
        if name is None:
            unknown.append(t.name)
            continue
        shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))
        type_name = t.tensor_type.name
        permute = 0
        if arch == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            permute = heads
        elif arch == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            permute = kv_heads
        ck.add(name, GGUFTensor(t.name, type_name, shape, t.data, t.tensor_type, permute))
        if name.endswith("_proj.weight"):
            linear_types[type_name] = linear_types.get(type_name, 0) + 1
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise UnsupportedError(f"{path}: GGUF tensor(s) {', '.join(unknown[:5])}{more} are not understood by the "
                               "converter; refusing to drop them")
    required = ["token_embd.weight", "output_norm.weight"] + [
        f"blk.{i}.{n}" for i in range(layers) for n in _LAYER_TENSORS if n.endswith(".weight")]
    for n in required:
        if hf_name(n) not in ck:
            raise ConversionError(f"{path}: tensor {n!r} is missing")
    emb_shape = ck.shape("model.embed_tokens.weight")
    if len(emb_shape) != 2 or emb_shape[1] != hidden:
        raise ConversionError(f"{path}: token_embd.weight has shape {list(emb_shape)}, expected [vocab, {hidden}]")
    vocab = kv.pos_int(a + "vocab_size", emb_shape[0])
    if vocab != emb_shape[0]:
        raise ConversionError(f"{path}: {a}vocab_size {vocab} but token_embd.weight has {emb_shape[0]} rows")
    has_bias = {k: any(n.endswith(k) for n in ck.names()) for k in ("o_proj.bias", "q_proj.bias", "mlp.up_proj.bias")}

    config: dict[str, Any] = {
        "architectures": [ARCHITECTURES[arch]], "model_type": arch,
        "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
        "hidden_act": "silu", "rms_norm_eps": eps, "max_position_embeddings": context,
        "vocab_size": vocab, "tie_word_embeddings": "lm_head.weight" not in ck,
        "rope_parameters": rope,
    }
    if arch == "llama":
        # LlamaAttention has one attention_bias flag for q/k/v/o.
        config["attention_bias"] = has_bias["q_proj.bias"] or has_bias["o_proj.bias"]
        config["mlp_bias"] = has_bias["mlp.up_proj.bias"]
    else:
        config["use_sliding_window"] = False

    # Special tokens and generation defaults.
    def tok_id(key: str) -> int | None:
        v = kv.get(f"tokenizer.ggml.{key}", "int", None)
        if v is not None and not (0 <= v < vocab):
            raise ConversionError(f"{path}: tokenizer.ggml.{key} {v} is outside the vocabulary (0..{vocab - 1})")
        return v
    bos, eos, pad = tok_id("bos_token_id"), tok_id("eos_token_id"), tok_id("padding_token_id")
    eos_ids = [i for i in (eos, tok_id("eot_token_id"), tok_id("eom_token_id")) if i is not None]
    eos_ids = list(dict.fromkeys(eos_ids))
    generation: dict[str, Any] = {}
    for k, v in (("bos_token_id", bos), ("pad_token_id", pad)):
        if v is not None:
            config[k] = generation[k] = v
    if eos_ids:
        config["eos_token_id"] = generation["eos_token_id"] = eos_ids[0] if len(eos_ids) == 1 else eos_ids

    text = _export_text(kv, path, vocab, bos, eos) if tokenizer else None
    file_type = max(linear_types, key=lambda k: linear_types[k]) if linear_types else "F32"
    metadata = {"converter.source": "gguf", "converter.gguf.architecture": arch,
                "converter.gguf.linear_type": file_type}
    for key in ("general.name", "general.file_type", "general.quantization_version"):
        if kv.has(key):
            try:
                metadata[f"converter.gguf.{key.split('.', 1)[1]}"] = str(kv._raw(key)[0])
            except ConversionError:
                pass
    return GGUFModel(path, arch, config, generation, ck, text, file_type, metadata)


# --- tokenizer -----------------------------------------------------------------

def _export_text(kv: _Fields, path: str, vocab_size: int, bos: int | None, eos: int | None) -> TextExport:
    out = TextExport()
    if not kv.has("tokenizer.ggml.model"):
        out.warnings.append("the GGUF file has no tokenizer (tokenizer.ggml.model): the model file will only serve "
                            "the token-level API")
        return out
    model = kv.get("tokenizer.ggml.model", "str")
    if model != "gpt2":
        raise UnsupportedError(f"{path}: GGUF tokenizer model {model!r} is not supported (supported: gpt2, i.e. "
                               "byte-level BPE); convert with --no-tokenizer for the token-level API")
    pre = kv.get("tokenizer.ggml.pre", "str", None)
    if pre is None:
        raise UnsupportedError(f"{path}: tokenizer.ggml.pre is missing (llama.cpp falls back to its own 'default' "
                               "split, which matches no Hugging Face tokenizer); convert with --no-tokenizer")
    if pre not in PRE_TOKENIZERS:
        raise UnsupportedError(f"{path}: GGUF pre-tokenizer {pre!r} is not supported (supported: "
                               f"{', '.join(sorted(PRE_TOKENIZERS))}); convert with --no-tokenizer")
    regex, nfc, ignore_merges, add_bos = PRE_TOKENIZERS[pre]
    tokens = kv.array("tokenizer.ggml.tokens", "str")
    types = kv.array("tokenizer.ggml.token_type", "int", [_NORMAL] * len(tokens))
    merges = kv.array("tokenizer.ggml.merges", "str")
    if len(types) != len(tokens):
        raise ConversionError(f"{path}: tokenizer.ggml.token_type has {len(types)} entries, tokens {len(tokens)}")
    if len(tokens) > vocab_size:
        raise ConversionError(f"{path}: tokenizer has {len(tokens)} tokens, the model's vocabulary only {vocab_size}")
    if len(set(tokens)) != len(tokens):
        seen: set[str] = set()
        dup = next(t for t in tokens if t in seen or seen.add(t))  # type: ignore[func-returns-value]
        raise ConversionError(f"{path}: tokenizer.ggml.tokens lists {dup!r} more than once")
    for i, m in enumerate(merges):
        if m.count(" ") != 1 or m.startswith(" ") or m.endswith(" ") or "\n" in m:
            raise ConversionError(f"{path}: tokenizer.ggml.merges[{i}] {m!r} is not 'left right'")
    byte_level_alphabet = {chr(c) for c in _bytes_to_unicode()}
    specials = []
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty in (_CONTROL, _USER_DEFINED):
            # convert_hf_to_gguf: HF added tokens -> CONTROL when special, USER_DEFINED otherwise.
            specials.append(SpecialToken(id=i, content=t, special=ty == _CONTROL))
        elif ty not in (_NORMAL, _UNKNOWN, _UNUSED, _BYTE):
            raise ConversionError(f"{path}: tokenizer.ggml.token_type[{i}] is {ty}, not a llama.cpp token type")
        elif ty == _NORMAL and not set(t) <= byte_level_alphabet:
            raise ConversionError(f"{path}: token {i} {t!r} is not spelled in the byte-level alphabet")
    prefix, suffix = [], []
    # llama.cpp adds BOS/EOS per these flags (default: BOS for Llama-3's split only).
    if kv.get("tokenizer.ggml.add_bos_token", "bool", add_bos):
        if bos is None:
            raise ConversionError(f"{path}: tokenizer.ggml.add_bos_token is set but bos_token_id is missing")
        prefix.append(tokens[bos] if bos < len(tokens) else "")
    if kv.get("tokenizer.ggml.add_eos_token", "bool", False):
        if eos is None:
            raise ConversionError(f"{path}: tokenizer.ggml.add_eos_token is set but eos_token_id is missing")
        suffix.append(tokens[eos] if eos < len(tokens) else "")
    if "" in prefix + suffix:
        raise ConversionError(f"{path}: the BOS/EOS token id is past the tokenizer's {len(tokens)} tokens")
    out.tokenizers = [Tokenizer(
        kind=TokenizerKind.ByteLevelBPE, role=TokenizerRole.Shared, model="".join(m + "\n" for m in merges).encode(),
        pre_tokenizer_regex=regex, special_tokens=specials, vocab=tokens, unk_id=-1,
        normalization="NFC" if nfc else "None", add_prefix_space=False, ignore_merges=ignore_merges,
        clean_up_spaces=False, prefix=prefix, suffix=suffix)]
    if kv.get("tokenizer.ggml.add_space_prefix", "bool", False):
        raise UnsupportedError(f"{path}: tokenizer.ggml.add_space_prefix with a byte-level BPE is not supported")
    template = kv.get("tokenizer.chat_template", "str", None)
    if template:
        out.chat_template = template
        try:
            import jinja2  # noqa: F401
        except ImportError:
            out.warnings.append("Jinja2 is not installed: the chat template is stored but not reduced to a chat "
                                "format (pip install -r formats/python/requirements.txt)")
            return out
        from .chat_format import derive_chat_format
        special = {k: (tokens[v] if v is not None and v < len(tokens) else "") for k, v in
                   (("bos_token", bos), ("eos_token", eos))}
        out.chat_format = derive_chat_format(JinjaChatTemplate(template, **special))
    return out


def _bytes_to_unicode() -> list[int]:
    """GPT-2's byte -> printable character map (its code points)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return cs


class JinjaChatTemplate:
    """Renders a chat template as transformers' apply_chat_template does
    (utils/chat_template_utils.py: an ImmutableSandboxedEnvironment with
    trim_blocks and lstrip_blocks, `raise_exception`, `strftime_now`, a
    `tojson` that keeps non-ASCII), for chat_format.derive_chat_format."""

    def __init__(self, template: str, **special_tokens: str):
        import json
        from datetime import datetime

        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self.template = env.from_string(template)
        except Exception as e:  # noqa: BLE001 - a syntax error in the file's template
            raise UnsupportedError(f"tokenizer.chat_template does not parse: {e}") from None
        self.special_tokens = special_tokens

    def apply_chat_template(self, messages, tokenize: bool = False, add_generation_prompt: bool = False) -> str:
        return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                    tools=None, documents=None, **self.special_tokens)

