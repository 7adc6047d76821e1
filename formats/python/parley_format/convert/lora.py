"""PEFT LoRA adapters, merged into the base weights at conversion (--lora).

An adapter folder as PEFT's `save_pretrained` writes it: `adapter_config.json`
and `adapter_model.safetensors` with `base_model.model.<module>.lora_A.weight`
[r, in] and `.lora_B.weight` [out, r] (embeddings: `.lora_embedding_A`
[r, vocab] and `.lora_embedding_B` [dim, r]). The merge is PEFT's own
(`LoraLayer.get_delta_weight`, `merge_and_unload`):

    W' = W + scaling * (B @ A)          (transposed for fan_in_fan_out and embeddings)
    scaling = alpha / r                 (alpha / sqrt(r) with use_rslora)

with r and alpha per module from rank_pattern / alpha_pattern (PEFT's
get_pattern_key: a key matches a module name that ends in it at a dot). The
merged model is an ordinary model: the runtime needs nothing new.

Anything else an adapter may hold changes the math and is refused by name:
DoRA (use_dora), trained biases (bias, lora_bias), modules_to_save,
trainable tokens, layer replication, activated LoRA, QA-LoRA and the other
LoRA variants PEFT 0.21 configures, other PEFT methods, and any tensor this
module does not know.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np

from .checkpoint import Checkpoint
from .errors import ConversionError, UnsupportedError
from .jsonfile import read_json_object

PREFIX = "base_model.model."
_SUFFIXES = {".lora_A.weight": ("linear", "A"), ".lora_B.weight": ("linear", "B"),
             ".lora_embedding_A": ("embedding", "A"), ".lora_embedding_B": ("embedding", "B")}


@dataclass
class LoraDelta:
    module: str  # e.g. "model.layers.0.self_attn.q_proj"
    kind: str  # "linear" or "embedding"
    a: np.ndarray  # [r, in] (embedding: [r, vocab])
    b: np.ndarray  # [out, r] (embedding: [dim, r])
    scaling: float
    transpose: bool  # the delta B @ A is stored transposed in the checkpoint (fan_in_fan_out, embeddings)

    def delta(self) -> np.ndarray:
        d = (self.b.astype(np.float64) @ self.a.astype(np.float64)) * self.scaling
        return (d.T if self.transpose else d).astype(np.float32)


def _pattern_value(patterns: dict, module: str, default, what: str, path: str):
    if not isinstance(patterns, dict):
        raise ConversionError(f"{path}: {what} must be an object, not {type(patterns).__name__}")
    for key, value in patterns.items():
        try:
            if re.match(rf"(.*\.)?({key})$", module):
                return value
        except re.error as e:
            raise ConversionError(f"{path}: {what} key {key!r} is not a regular expression: {e}") from None
    return default


def _number(config: dict, key: str, path: str, default=None) -> float:
    v = config.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ConversionError(f"{path}: {key} must be a positive number, not {v!r}")
    return float(v)


def read_adapter(adapter_dir: str) -> list[LoraDelta]:
    """The adapter's deltas, each checked for shape and finite values."""
    if not os.path.isdir(adapter_dir):
        raise ConversionError(f"--lora {adapter_dir}: not a folder (give the folder PEFT's save_pretrained wrote)")
    cfg_path = os.path.join(adapter_dir, "adapter_config.json")
    config = read_json_object(cfg_path)
    kind = config.get("peft_type")
    if not isinstance(kind, str) or kind.upper() != "LORA":
        raise UnsupportedError(f"{cfg_path}: peft_type {kind!r}: only LORA adapters can be merged")
    for key, what in (("use_dora", "DoRA (use_dora)"), ("lora_bias", "a trained LoRA bias (lora_bias)")):
        if config.get(key):
            raise UnsupportedError(f"{cfg_path}: {what} is not supported; merge it with PEFT's merge_and_unload "
                                   "and convert the merged checkpoint")
    for key in ("layer_replication", "alora_invocation_tokens", "use_qalora", "arrow_config", "kasa_config",
                "monteclora_config"):
        if config.get(key):
            raise UnsupportedError(f"{cfg_path}: {key} changes what the adapter computes beyond W + scaling * B @ A; "
                                   "not supported")
    if config.get("bias", "none") not in ("none", None):
        raise UnsupportedError(f"{cfg_path}: bias {config['bias']!r}: adapters that train biases are not supported")
    for key in ("modules_to_save", "trainable_token_indices"):
        if config.get(key):
            raise UnsupportedError(f"{cfg_path}: {key} is not supported (the adapter replaces whole tensors); "
                                   "merge it with PEFT's merge_and_unload and convert the merged checkpoint")
    default_r = _number(config, "r", cfg_path)
    default_alpha = _number(config, "lora_alpha", cfg_path, default_r)
    rslora = bool(config.get("use_rslora", False))
    fan_in_fan_out = bool(config.get("fan_in_fan_out", False))

    weights = os.path.join(adapter_dir, "adapter_model.safetensors")
    if not os.path.isfile(weights):
        other = " (adapter_model.bin is not read: save with safe_serialization=True)" if os.path.isfile(
            os.path.join(adapter_dir, "adapter_model.bin")) else ""
        raise ConversionError(f"--lora {adapter_dir}: adapter_model.safetensors not found{other}")
    ck = Checkpoint()
    ck.add_safetensors(weights)
    parts: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for name in ck.names():
        suffix = next((s for s in _SUFFIXES if name.endswith(s)), None)
        if suffix is None or not name.startswith(PREFIX):
            raise UnsupportedError(f"{weights}: tensor {name!r} is not a LoRA A/B matrix "
                                   f"({PREFIX}<module>.lora_A.weight / .lora_B.weight); refusing to drop it")
        module = name[len(PREFIX):-len(suffix)]
        layer, ab = _SUFFIXES[suffix]
        parts.setdefault((module, layer), {})[ab] = ck.get(name)
    if not parts:
        raise ConversionError(f"{weights}: holds no LoRA matrices")
    out = []
    for (module, layer), ab in sorted(parts.items()):
        if set(ab) != {"A", "B"}:
            raise ConversionError(f"{weights}: {module} has lora_{'A' if 'A' not in ab else 'B'} missing")
        a, b = ab["A"], ab["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ConversionError(f"{weights}: {module}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} do not "
                                  "multiply (A: [r, in], B: [out, r])")
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise ConversionError(f"{weights}: {module}: the LoRA matrices hold inf or NaN")
        r = _number({"r": _pattern_value(config.get("rank_pattern") or {}, module, default_r, "rank_pattern",
                                         cfg_path)}, "r", cfg_path)
        if int(r) != a.shape[0]:
            raise ConversionError(f"{weights}: {module}: rank {a.shape[0]} in the tensors, {int(r)} in "
                                  "adapter_config.json")
        alpha = _number({"lora_alpha": _pattern_value(config.get("alpha_pattern") or {}, module, default_alpha,
                                                      "alpha_pattern", cfg_path)}, "lora_alpha", cfg_path)
        scaling = alpha / math.sqrt(r) if rslora else alpha / r
        transpose = layer == "embedding" or fan_in_fan_out
        out.append(LoraDelta(module, layer, a, b, scaling, transpose))
    return out


def apply_adapter(ck: Checkpoint, adapter_dir: str) -> list[str]:
    """Merges the adapter into `ck` (its tensors are replaced lazily). Returns
    the merged tensor names. Every delta must land on a tensor of the right
    shape: a module the checkpoint does not have is an error, not a skip."""
    merged = []
    for d in read_adapter(adapter_dir):
        name = f"{d.module}.weight"
        if name not in ck:
            raise ConversionError(f"--lora: the adapter changes {name}, which the model does not have (an adapter "
                                  "for another model, or a tied lm_head: merge into the embeddings instead)")
        out_dim, in_dim = d.b.shape[0], d.a.shape[1]
        want = (in_dim, out_dim) if d.transpose else (out_dim, in_dim)
        if tuple(ck.shape(name)) != want:
            raise ConversionError(f"--lora: the adapter's delta for {name} is {want}, the model's tensor "
                                  f"{tuple(ck.shape(name))}")
        ck.transform(name, lambda w, d=d: np.ascontiguousarray(w + d.delta(), dtype=np.float32))
        merged.append(name)
    return merged
