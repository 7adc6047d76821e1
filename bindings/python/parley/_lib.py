"""ctypes declarations for libparley (include/parley/parley.h) and the loader.

This module mirrors the C header one to one: structs, callback types and the
argument/result types of every exported function. Nothing here implements
Parley behaviour; the rest of the package only marshals Python values.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_double,
    c_float,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)

from .errors import ParleyError, error_class

#: The major version of the C API this binding was written for.
EXPECTED_MAJOR = 0
#: The oldest library (as PARLEY_VERSION_NUMBER) that has every function used here (the text API).
MINIMUM_VERSION = (0 << 16) | (1 << 8) | 0

# ----------------------------------------------------------------- constants

OK = 0
ERROR_INVALID_ARGUMENT = 1

TOKENIZE_ADD_SPECIAL = 1  # parley_tokenize_flags
TOKENIZE_PARSE_SPECIAL = 1 << 16

PLUGINS_NONE = 0
PLUGINS_BESIDE_LIBRARY = 1
PLUGINS_ENV_PATH = 2
PLUGINS_BUILTIN = 4
PLUGINS_DEFAULT = PLUGINS_BESIDE_LIBRARY | PLUGINS_ENV_PATH | PLUGINS_BUILTIN

SEVERITY_DEBUG, SEVERITY_INFO, SEVERITY_WARNING, SEVERITY_ERROR = 0, 1, 2, 3

MODEL_DECODER_ONLY, MODEL_ENCODER_DECODER = 0, 1
ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL = 0, 1, 2, 3

# ------------------------------------------------------------ callback types

#: void (*parley_log_fn)(void *user_data, parley_log_severity severity, const char *message)
LOG_FN = CFUNCTYPE(None, c_void_p, c_int32, c_char_p)
#: int32_t (*parley_token_fn)(void *user_data, size_t batch_index, size_t sequence_index, int32_t token)
TOKEN_FN = CFUNCTYPE(c_int32, c_void_p, c_size_t, c_size_t, c_int32)
#: int32_t (*parley_text_fn)(void *user_data, const char *text, size_t length)
#: (text is not NUL-terminated, so it is declared as void * and read with string_at)
TEXT_FN = CFUNCTYPE(c_int32, c_void_p, c_void_p, c_size_t)
#: int32_t (*parley_translation_text_fn)(void *user_data, size_t text_index, size_t hypothesis,
#:                                       const char *text, size_t length, int32_t is_final)
TRANSLATION_TEXT_FN = CFUNCTYPE(c_int32, c_void_p, c_size_t, c_size_t, c_void_p, c_size_t, c_int32)
#: void (*parley_request_fn)(void *user_data, parley_request *request, int32_t status)
REQUEST_FN = CFUNCTYPE(None, c_void_p, c_void_p, c_int32)

# ------------------------------------------------------------------- structs


class ChatMessageEx(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("role", c_int32),
        ("content", c_char_p),
        ("content_length", c_size_t),
        ("tool_calls", c_char_p),
        ("tool_call_id", c_char_p),
        ("name", c_char_p),
    ]


class RuntimeOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("num_threads", c_int32),
        ("plugin_sources", c_uint32),
        ("plugin_dirs", POINTER(c_char_p)),
        ("num_plugin_dirs", c_size_t),
        ("log_fn", LOG_FN),
        ("log_user_data", c_void_p),
        ("min_severity", c_int32),
    ]


class PluginInfo(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("name", c_char_p),
        ("version", c_char_p),
        ("path", c_char_p),
        ("abi_version", c_uint32),
        ("num_devices", c_size_t),
        ("num_kernels", c_size_t),
    ]


class DeviceInfo(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("name", c_char_p),
        ("plugin", c_char_p),
        ("kind", c_int32),
        ("available", c_int32),
        ("status", c_char_p),
    ]


class KernelInfo(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("op", c_char_p),
        ("device", c_char_p),
        ("dtype", c_int32),
        ("priority", c_int32),
        ("name", c_char_p),
        ("plugin", c_char_p),
        ("selected", c_int32),
        ("reserved0", c_int32),
        ("weight_dtype", c_int32),
        ("tensor", c_char_p),
    ]


class ModelOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("verify_checksums", c_int32),
        ("device", c_char_p),
        ("borrow_memory", c_int32),
        ("reserved0", c_int32),
        ("read_into_memory", c_int32),
        ("reserved1", c_int32),
        ("kv_cache_dtype", c_int32),
        ("reserved2", c_int32),
        ("serving_engine", c_int32),
        ("kv_block_size", c_int32),
        ("kv_cache_budget_bytes", c_uint64),
        ("max_batch_sequences", c_int32),
        ("max_batch_tokens", c_int32),
        ("prefill_chunk_tokens", c_int32),
        ("admission_timeout_ms", c_int32),
        ("activation_dtype", c_int32),
    ]


class ModelInfo(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("format_major", c_uint32),
        ("format_minor", c_uint32),
        ("architecture", c_char_p),
        ("kind", c_int32),
        ("vocab_size", c_uint32),
        ("num_tensors", c_size_t),
        ("num_tokenizers", c_size_t),
        ("num_metadata", c_size_t),
        ("has_chat_template", c_int32),
        ("file_size", c_uint64),
        ("weights_size", c_uint64),
        ("device", c_char_p),
    ]


MAX_RANK = 8


class TensorInfo(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("name", c_char_p),
        ("dtype", c_int32),
        ("rank", c_size_t),
        ("shape", c_int64 * MAX_RANK),
        ("offset", c_uint64),
        ("length", c_uint64),
        ("checksum", c_uint64),
        ("scale_tensor", c_char_p),
        ("scale_axis", c_int32),
        ("reserved0", c_int32),
        ("quant", c_int32),
        ("group_size", c_int64),
    ]


class TokenizerInfo(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("kind", c_int32),
        ("role", c_int32),
        ("model_size", c_uint64),
        ("num_special_tokens", c_size_t),
    ]


class GenerationOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("max_new_tokens", c_size_t),
        ("min_new_tokens", c_size_t),
        ("num_beams", c_size_t),
        ("num_return_sequences", c_size_t),
        ("length_penalty", c_float),
        ("early_stopping", c_int32),
        ("no_repeat_ngram_size", c_size_t),
        ("repetition_penalty", c_float),
        ("do_sample", c_int32),
        ("temperature", c_float),
        ("top_k", c_size_t),
        ("top_p", c_float),
        ("min_p", c_float),
        ("seed", c_uint64),
        ("eos_token_ids", POINTER(c_int32)),
        ("num_eos_token_ids", c_size_t),
        ("on_token", TOKEN_FN),
        ("user_data", c_void_p),
        ("grammar", c_char_p),
        ("json_schema", c_char_p),
        ("return_logprobs", c_int32),
        ("num_alternatives", c_size_t),
        ("logit_bias_ids", POINTER(c_int32)),
        ("logit_bias_values", POINTER(c_float)),
        ("num_logit_bias", c_size_t),
    ]


class ScoreOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("source_language", c_char_p),
        ("target_language", c_char_p),
    ]


MAX_ALTERNATIVES = 32


class TranslationOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("source_language", c_char_p),
        ("target_language", c_char_p),
        ("generation", POINTER(GenerationOptions)),
        ("return_attention", c_int32),
        ("attention_layer", c_int32),
        ("per_text_errors", c_int32),
        ("on_text", TRANSLATION_TEXT_FN),
        ("user_data", c_void_p),
        ("protect", c_uint32),
        ("long_text", c_int32),
        ("protect_patterns", POINTER(c_char_p)),
        ("num_protect_patterns", c_size_t),
        ("glossary", POINTER(c_char_p)),
        ("num_glossary", c_size_t),
        ("max_source_tokens", c_size_t),
        ("max_batch_tokens", c_size_t),
    ]


class ProtectedSpan(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("kind", c_uint32),
        ("placement", c_int32),
        ("source_offset", c_size_t),
        ("source_length", c_size_t),
        ("target_offset", c_size_t),
        ("target_length", c_size_t),
    ]


class RequestOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("on_complete", REQUEST_FN),
        ("user_data", c_void_p),
        ("deadline_ms", c_int64),
        ("return_logprobs", c_int32),
        ("num_alternatives", c_size_t),
    ]


class ChatOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("generation", POINTER(GenerationOptions)),
        ("stop_strings", POINTER(c_char_p)),
        ("num_stop_strings", c_size_t),
        ("on_text", TEXT_FN),
        ("user_data", c_void_p),
        ("context_policy", c_int32),
    ]


class ReplyProgress(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("tokens", c_size_t),
        ("token_ids", POINTER(c_int32)),
        ("logprobs", POINTER(c_float)),
        ("alternatives", c_size_t),
        ("alternative_ids", POINTER(c_int32)),
        ("alternative_logprobs", POINTER(c_float)),
    ]


class ChatStats(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("prompt_tokens", c_uint64),
        ("reused_tokens", c_uint64),
        ("processed_tokens", c_uint64),
        ("generated_tokens", c_uint64),
        ("total_processed_tokens", c_uint64),
        ("cached_tokens", c_uint64),
        ("dropped_messages", c_uint64),
        ("total_dropped_messages", c_uint64),
        ("constraint_status", c_int32),
    ]


class ModelMemory(Structure):
    _fields_ = [("struct_size", c_size_t)] + [
        (n, c_uint64)
        for n in ("file_bytes", "packed_bytes", "converted_bytes", "linear_weights", "widened_weights",
                  "kv_bytes_per_token", "kv_pool_bytes", "released_bytes")
    ]


class ServingStats(Structure):
    _fields_ = [("struct_size", c_size_t), ("engine_active", c_int32), ("reserved0", c_int32)] + [
        (n, c_uint64)
        for n in ("steps", "batched_rows", "max_batch_rows", "prefill_tokens", "decode_tokens", "reused_tokens",
                  "preemptions", "refused", "cancelled", "timed_out", "waiting", "kv_budget_bytes",
                  "kv_block_bytes", "kv_blocks", "kv_blocks_free", "kv_blocks_cached", "kv_blocks_in_use",
                  "prefix_hits", "prefix_misses", "evictions")
    ]


def new(struct_type):
    """A zeroed struct with struct_size set to its ctypes size (the C sizeof)."""
    s = struct_type()
    s.struct_size = ctypes.sizeof(struct_type)
    return s


# --------------------------------------------------------------- signatures

_status = c_int32
_p = POINTER
_i32p = POINTER(c_int32)

# name: (restype, [argtypes]); handles are void *.
_SIGNATURES: dict[str, tuple] = {
    "parley_version": (c_uint32, []),
    "parley_version_string": (c_char_p, []),
    "parley_status_name": (c_char_p, [c_int32]),
    "parley_last_error": (c_char_p, []),
    "parley_dtype_name": (c_char_p, [c_int32]),
    # runtime
    "parley_runtime_options_defaults": (_status, [_p(RuntimeOptions)]),
    "parley_runtime_create": (_status, [_p(RuntimeOptions), _p(c_void_p)]),
    "parley_runtime_free": (None, [c_void_p]),
    "parley_runtime_load_plugin": (_status, [c_void_p, c_char_p]),
    "parley_runtime_plugin_count": (_status, [c_void_p, _p(c_size_t)]),
    "parley_runtime_plugin_info": (_status, [c_void_p, c_size_t, _p(PluginInfo)]),
    "parley_runtime_device_count": (_status, [c_void_p, _p(c_size_t)]),
    "parley_runtime_device_info": (_status, [c_void_p, c_size_t, _p(DeviceInfo)]),
    "parley_runtime_kernel_count": (_status, [c_void_p, _p(c_size_t)]),
    "parley_runtime_kernel_info": (_status, [c_void_p, c_size_t, _p(KernelInfo)]),
    "parley_runtime_find_kernel": (_status, [c_void_p, c_char_p, c_char_p, c_int32, _p(KernelInfo)]),
    # model
    "parley_model_options_defaults": (_status, [_p(ModelOptions)]),
    "parley_model_load_file": (_status, [c_void_p, c_char_p, _p(ModelOptions), _p(c_void_p)]),
    "parley_model_load_memory": (_status, [c_void_p, c_void_p, c_size_t, _p(ModelOptions), _p(c_void_p)]),
    "parley_model_free": (None, [c_void_p]),
    "parley_model_get_info": (_status, [c_void_p, _p(ModelInfo)]),
    "parley_model_config_int": (_status, [c_void_p, c_char_p, _p(c_int64)]),
    "parley_model_config_float": (_status, [c_void_p, c_char_p, _p(c_double)]),
    "parley_model_config_count": (_status, [c_void_p, _p(c_size_t)]),
    "parley_model_config_key": (_status, [c_void_p, c_size_t, _p(c_char_p), _p(c_int32)]),
    "parley_model_tensor_info": (_status, [c_void_p, c_size_t, _p(TensorInfo)]),
    "parley_model_find_tensor": (_status, [c_void_p, c_char_p, _p(TensorInfo)]),
    "parley_model_verify_tensor": (_status, [c_void_p, c_char_p]),
    "parley_model_tokenizer_info": (_status, [c_void_p, c_size_t, _p(TokenizerInfo)]),
    "parley_model_metadata_at": (_status, [c_void_p, c_size_t, _p(c_char_p), _p(c_char_p)]),
    "parley_model_metadata_get": (_status, [c_void_p, c_char_p, _p(c_char_p)]),
    "parley_model_chat_template": (_status, [c_void_p, _p(c_char_p)]),
    "parley_model_kernel_plan_count": (_status, [c_void_p, _p(c_size_t)]),
    "parley_model_kernel_plan_at": (_status, [c_void_p, c_size_t, _p(KernelInfo)]),
    "parley_model_memory_usage": (_status, [c_void_p, _p(ModelMemory)]),
    "parley_model_serving_stats": (_status, [c_void_p, _p(ServingStats)]),
    # token-level generation
    "parley_generation_options_defaults": (_status, [c_void_p, _p(GenerationOptions)]),
    "parley_model_prepare": (_status, [c_void_p]),
    "parley_generate": (
        _status,
        [c_void_p, _p(_i32p), _p(c_size_t), c_size_t, _p(GenerationOptions), _p(c_void_p)],
    ),
    "parley_translate_tokens": (
        _status,
        [c_void_p, _p(_i32p), _p(c_size_t), c_size_t, _p(_i32p), _p(c_size_t), _p(GenerationOptions), _p(c_void_p)],
    ),
    "parley_result_batch_size": (_status, [c_void_p, _p(c_size_t)]),
    "parley_result_hypothesis_count": (_status, [c_void_p, c_size_t, _p(c_size_t)]),
    "parley_result_hypothesis": (
        _status,
        [c_void_p, c_size_t, c_size_t, _p(_i32p), _p(c_size_t), _p(c_float)],
    ),
    "parley_result_free": (None, [c_void_p]),
    # text
    "parley_tokenize": (_status, [c_void_p, c_char_p, c_int32, c_char_p, _i32p, c_size_t, _p(c_size_t)]),
    "parley_detokenize": (_status, [c_void_p, _i32p, c_size_t, c_int32, _p(c_void_p)]),
    "parley_string_free": (None, [c_void_p]),
    "parley_translation_options_defaults": (_status, [_p(TranslationOptions)]),
    "parley_translate": (_status, [c_void_p, _p(c_char_p), c_size_t, _p(TranslationOptions), _p(c_void_p)]),
    "parley_translation_result_count": (_status, [c_void_p, _p(c_size_t)]),
    "parley_translation_result_hypothesis_count": (_status, [c_void_p, c_size_t, _p(c_size_t)]),
    "parley_translation_result_text": (_status, [c_void_p, c_size_t, c_size_t, _p(c_char_p), _p(c_float)]),
    "parley_translation_result_source_tokens": (_status, [c_void_p, c_size_t, _p(_i32p), _p(c_size_t)]),
    "parley_translation_result_target_tokens": (
        _status,
        [c_void_p, c_size_t, c_size_t, _p(_i32p), _p(c_size_t)],
    ),
    "parley_translation_result_attention": (
        _status,
        [c_void_p, c_size_t, c_size_t, _p(_p(c_float)), _p(c_size_t), _p(c_size_t)],
    ),
    "parley_translation_result_free": (None, [c_void_p]),
    "parley_translation_result_protected_count": (_status, [c_void_p, c_size_t, c_size_t, _p(c_size_t)]),
    "parley_translation_result_protected_span": (
        _status,
        [c_void_p, c_size_t, c_size_t, c_size_t, _p(ProtectedSpan)],
    ),
    "parley_translation_result_segments": (_status, [c_void_p, c_size_t, _p(c_size_t)]),
    "parley_translation_result_cut_by_length": (_status, [c_void_p, c_size_t, c_size_t, _p(c_int32)]),
    # chat
    "parley_chat_session_create": (_status, [c_void_p, c_char_p, _p(c_void_p)]),
    "parley_chat_session_free": (None, [c_void_p]),
    "parley_chat_append": (_status, [c_void_p, c_int32, c_char_p]),
    "parley_chat_options_defaults": (_status, [_p(ChatOptions)]),
    "parley_chat_generate": (_status, [c_void_p, _p(ChatOptions), _p(c_void_p)]),
    "parley_chat_cancel": (_status, [c_void_p]),
    "parley_chat_reset": (_status, [c_void_p]),
    "parley_chat_message_count": (_status, [c_void_p, _p(c_size_t)]),
    "parley_chat_message": (_status, [c_void_p, c_size_t, _p(c_int32), _p(c_char_p)]),
    "parley_chat_append_message": (_status, [c_void_p, _p(ChatMessageEx)]),
    "parley_chat_set_tools": (_status, [c_void_p, c_char_p]),
    "parley_chat_tool_calls": (_status, [c_void_p, c_size_t, _p(c_char_p), _p(c_char_p), _p(c_char_p)]),
    "parley_chat_stats_get": (_status, [c_void_p, _p(ChatStats)]),
    # asynchronous requests
    "parley_request_options_defaults": (_status, [_p(RequestOptions)]),
    "parley_chat_submit": (_status, [c_void_p, _p(ChatOptions), _p(RequestOptions), _p(c_void_p)]),
    "parley_generate_submit": (
        _status,
        [c_void_p, _p(_i32p), _p(c_size_t), c_size_t, _p(GenerationOptions), _p(RequestOptions), _p(c_void_p)],
    ),
    "parley_translate_submit": (
        _status,
        [c_void_p, _p(c_char_p), _p(c_size_t), c_size_t, _p(TranslationOptions), _p(RequestOptions), _p(c_void_p)],
    ),
    "parley_translate_tokens_submit": (
        _status,
        [
            c_void_p,
            _p(_i32p),
            _p(c_size_t),
            c_size_t,
            _p(_i32p),
            _p(c_size_t),
            _p(GenerationOptions),
            _p(RequestOptions),
            _p(c_void_p),
        ],
    ),
    "parley_request_wait": (_status, [c_void_p, c_int64]),
    "parley_request_poll": (_status, [c_void_p, _i32p]),
    "parley_request_cancel": (_status, [c_void_p]),
    "parley_request_status": (_status, [c_void_p, _i32p, _p(c_char_p)]),
    "parley_request_take_reply": (_status, [c_void_p, _p(c_void_p)]),
    "parley_request_take_generation_result": (_status, [c_void_p, _p(c_void_p)]),
    "parley_request_take_translation_result": (_status, [c_void_p, _p(c_void_p)]),
    "parley_request_reply_logprobs": (_status, [c_void_p, _p(_p(c_float)), _p(c_size_t)]),
    "parley_request_reply_tokens": (_status, [c_void_p, _p(_p(c_int32)), _p(c_size_t)]),
    "parley_request_reply_alternatives": (
        _status,
        [c_void_p, _p(_p(c_int32)), _p(_p(c_float)), _p(c_size_t), _p(c_size_t)],
    ),
    "parley_request_reply_progress": (_status, [c_void_p, _p(ReplyProgress)]),
    "parley_request_free": (None, [c_void_p]),
    "parley_result_hypothesis_constraint": (_status, [c_void_p, c_size_t, c_size_t, _p(c_int32)]),
    "parley_result_hypothesis_logprobs": (_status, [c_void_p, c_size_t, c_size_t, _p(_p(c_float)), _p(c_size_t)]),
    "parley_result_hypothesis_alternatives": (
        _status,
        [c_void_p, c_size_t, c_size_t, _p(_i32p), _p(_p(c_float)), _p(c_size_t), _p(c_size_t)],
    ),
    "parley_translation_result_hypothesis_logprobs": (
        _status,
        [c_void_p, c_size_t, c_size_t, _p(_p(c_float)), _p(c_size_t)],
    ),
    "parley_translation_result_hypothesis_alternatives": (
        _status,
        [c_void_p, c_size_t, c_size_t, _p(_i32p), _p(_p(c_float)), _p(c_size_t), _p(c_size_t)],
    ),
    "parley_score_options_defaults": (_status, [_p(ScoreOptions)]),
    "parley_score_tokens": (
        _status,
        [c_void_p, _p(_i32p), _p(c_size_t), _p(_i32p), _p(c_size_t), c_size_t, _p(ScoreOptions), _p(c_void_p)],
    ),
    "parley_score_text": (
        _status,
        [c_void_p, _p(c_char_p), _p(c_char_p), c_size_t, _p(ScoreOptions), _p(c_void_p)],
    ),
    "parley_score_result_count": (_status, [c_void_p, _p(c_size_t)]),
    "parley_score_result_item": (
        _status,
        [c_void_p, c_size_t, _p(_i32p), _p(_p(c_float)), _p(c_size_t), _p(c_double)],
    ),
    "parley_score_result_free": (None, [c_void_p]),
    "parley_chat_session_save": (_status, [c_void_p, _p(c_void_p), _p(c_size_t)]),
    "parley_chat_session_save_kv": (_status, [c_void_p, _p(c_void_p), _p(c_size_t)]),
    "parley_chat_session_restore": (_status, [c_void_p, c_void_p, c_size_t, _p(c_void_p)]),
}


# ------------------------------------------------------------------- loading


#: Where a wheel (bindings/python/pyproject.toml) puts libparley: beside this
#: package, with its plugins in _native/parley/plugins (libparley looks there).
BUNDLED_LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_native", "libparley.so.0")


def _candidates() -> list[tuple[str, str]]:
    """(what to pass to CDLL, where it came from), in search order.

    An installed wheel always uses the library it was built with (its ctypes
    declarations mirror that very header); PARLEY_LIBRARY and the loader's
    search path serve a source checkout or a binding installed without one.
    """
    if os.path.isfile(BUNDLED_LIBRARY):
        return [(BUNDLED_LIBRARY, "bundled with this package")]
    env = os.environ.get("PARLEY_LIBRARY")
    if env:
        return [(env, "PARLEY_LIBRARY")]
    out = []
    found = ctypes.util.find_library("parley")
    if found:
        out.append((found, "ctypes.util.find_library('parley')"))
    for name in ("libparley.so.0", "libparley.so"):
        if name not in (c for c, _ in out):
            out.append((name, "the dynamic loader's search path"))
    return out


def _load() -> tuple[ctypes.CDLL, str]:
    errors = []
    env = os.environ.get("PARLEY_LIBRARY")
    for target, origin in _candidates():
        try:
            lib = ctypes.CDLL(target)
        except OSError as e:
            errors.append(f"  {target} ({origin}): {e}")
            continue
        return lib, target
    if os.path.isfile(BUNDLED_LIBRARY):
        hint = "the bundled library cannot be loaded: reinstall the package (pip install --force-reinstall parley-runtime)"
    elif env:
        hint = "PARLEY_LIBRARY is set but the library cannot be loaded"
    else:
        hint = (
            "this binding was installed without its library: pip install parley-runtime, or set PARLEY_LIBRARY "
            "to the full path of libparley.so, or put its folder on LD_LIBRARY_PATH"
        )
    raise ImportError("parley: cannot load libparley (" + hint + "); tried:\n" + "\n".join(errors))


def _declare(lib: ctypes.CDLL, path: str) -> None:
    missing = []
    for name, (restype, argtypes) in _SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    if missing:
        raise ImportError(
            f"parley: {path} does not export {', '.join(missing)} — it is older than this binding "
            f"needs (the text API); rebuild or upgrade libparley"
        )


lib, library_path = _load()
if not hasattr(lib, "parley_version"):
    raise ImportError(f"parley: {library_path} is not libparley (no parley_version)")
lib.parley_version.restype = c_uint32
lib.parley_version.argtypes = []
version_number: int = lib.parley_version()
if version_number >> 16 != EXPECTED_MAJOR:
    raise ImportError(
        f"parley: {library_path} is libparley {version_number >> 16}.{(version_number >> 8) & 0xFF}."
        f"{version_number & 0xFF}; this binding needs major version {EXPECTED_MAJOR}"
    )
if version_number < MINIMUM_VERSION:
    raise ImportError(
        f"parley: {library_path} is libparley {version_number >> 16}.{(version_number >> 8) & 0xFF}."
        f"{version_number & 0xFF}; this binding needs at least "
        f"{MINIMUM_VERSION >> 16}.{(MINIMUM_VERSION >> 8) & 0xFF}.{MINIMUM_VERSION & 0xFF}"
    )
_declare(lib, library_path)
version_string: str = lib.parley_version_string().decode()

# ------------------------------------------------------------- status checks


def last_error() -> str:
    msg = lib.parley_last_error()
    return msg.decode("utf-8", "replace") if msg else ""


def make_error(status: int, message: str | None = None) -> ParleyError:
    """The exception for `status`; reads parley_last_error() unless `message` is given.

    Must be called on the thread that made the failed call, before any other
    Parley call on it (the C last-error text is thread-local).
    """
    if message is None:
        message = last_error()
    name = lib.parley_status_name(status)
    return error_class(status)(message, status, name.decode() if name else None)


def check(status: int) -> None:
    """Raise the ParleyError subclass for a non-OK status (reads the thread's last error at once)."""
    if status != OK:
        raise make_error(status)
