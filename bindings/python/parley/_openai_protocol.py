"""Requests and errors of the OpenAI-compatible routes, as runtime/http checks them.

The validation of request bodies (types, ranges, unknown fields, what is
refused), OpenAI's error shape, generation settings from the sampling
fields, chat message and tool-call conversion, and server-sent events: the
parts of parley.openai_api that do not touch a model. Mirrors
runtime/http/api.cpp, chat_completions.cpp, completions.cpp and
translations.cpp, so both servers answer a request alike.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import struct
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from . import errors as perr

MAX_JSON_DEPTH = 64
_PROTECT = ("numbers", "emails", "urls", "placeholders", "markup")


class ApiError(Exception):
    """An HTTP error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, message: str, param: str = "", code: str = "", http_status: int = 400,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.code, self.http_status, self.type = message, param, code, http_status, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param or None,
                          "code": self.code or None}}


def bad_request(message: str, param: str = "", code: str = "invalid_value") -> ApiError:
    return ApiError(message, param, code)


# As runtime/http/api.cpp: the request field a runtime message names, first in the message wins.
_PARAM_WORDS = (("protect_patterns", "protect_patterns"), ("glossary", "glossary"),
                ("JSON schema", "response_format"), ("json_schema", "response_format"),
                ("grammar", "response_format"), ("logit_bias", "logit_bias"), ("stop string", "stop"),
                ("tools", "tools"), ("messages", "messages"), ("source_language", "source_language"),
                ("target_language", "target_language"))
# The C API's own framing: the functions' names ("parley_translate: ") and the
# request getters' "the request failed: "; an HTTP client called neither.
_FUNCTION_NAME = re.compile(r"parley_[a-z_]+: |the request failed: ")


def _param_of(message: str) -> str:
    found = [(message.find(word), name) for word, name in _PARAM_WORDS if word in message]
    return min(found)[1] if found else ""


def error_from_parley(e: BaseException, context: str = "") -> ApiError:
    """A binding exception as runtime/http's error_from_status maps its status."""
    if not isinstance(e, perr.ParleyError):
        return ApiError(f"{context}{e}", http_status=500, type="server_error")
    # The library's advice names its C constant; here the option is the service's.
    msg = context + _FUNCTION_NAME.sub("", e.message or e.status_name).replace(
        "PARLEY_CHAT_CONTEXT_DROP_OLDEST", "context='drop_oldest' (OpenAIService, build_app)")
    code = e.status_name
    if isinstance(e, (perr.InvalidArgumentError, perr.UnsupportedError, perr.NotFoundError)):
        return ApiError(msg, _param_of(msg), code=code, http_status=400)
    if isinstance(e, (perr.BusyError, perr.OutOfMemoryError)):
        return ApiError(msg, code=code, http_status=503, type="server_overloaded")
    if isinstance(e, perr.CancelledError):
        return ApiError("the request was cancelled: the server is shutting down", code=code, http_status=503,
                        type="server_shutting_down")
    if isinstance(e, perr.DeadlineError):
        return ApiError(msg, code=code, http_status=504, type="timeout")
    return ApiError(msg, code=code, http_status=500, type="server_error")


# ---------------------------------------------------------------- validation (runtime/http/api.cpp)


def _type_name(v: Any) -> str:
    if isinstance(v, str):
        return "a string"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return "null"


def _depth(v: Any, d: int = 1) -> int:
    """Depth of a document, iteratively (a hostile body must not exhaust the stack)."""
    deepest, todo = d, [(v, d)]
    while todo:
        x, k = todo.pop()
        deepest = max(deepest, k)
        if k > MAX_JSON_DEPTH:
            return k
        if isinstance(x, dict):
            todo.extend((c, k + 1) for c in x.values())
        elif isinstance(x, list):
            todo.extend((c, k + 1) for c in x)
    return deepest


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        # json.loads recurses: a deeply nested body is a RecursionError, also refused.
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ApiError(f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object", code="invalid_json")
    if _depth(body) > MAX_JSON_DEPTH:
        raise ApiError(f"the request body is nested deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")
    return body


def _field(body: Mapping[str, Any], name: str) -> Any:
    return body.get(name)  # absent and null are the same


def _known(body: Mapping[str, Any], known: Sequence[str], where: str = "") -> None:
    for k in body:
        if k not in known:
            raise ApiError(f"Unrecognized request argument supplied: {where}{k}", where + k, "unknown_parameter")


def _opt_string(body: Mapping[str, Any], name: str, where: str = "") -> str | None:
    v = _field(body, name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ApiError(f"{where}{name} must be a string, not {_type_name(v)}", where + name, "invalid_type")
    return v


def _opt_number(body: Mapping[str, Any], name: str, lo: float, hi: float) -> float | None:
    v = _field(body, name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ApiError(f"{name} must be a number, not {_type_name(v)}", name, "invalid_type")
    d = float(v)
    if not math.isfinite(d) or d < lo or d > hi:
        raise bad_request(f"{name} must be between {lo:g} and {hi:g}, not {v}", name)
    return d


def _opt_integer(body: Mapping[str, Any], name: str, lo: int, hi: int) -> int | None:
    v = _field(body, name)
    if v is None:
        return None
    if isinstance(v, float) and math.isfinite(v) and v == math.floor(v):
        if v < lo or v > hi:  # as runtime/http: a whole number written as a float is that number
            raise bad_request(f"{name} must be an integer in [{lo}, {hi}], not {v}", name)
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ApiError(f"{name} must be an integer, not {v if isinstance(v, float) else _type_name(v)}", name,
                       "invalid_type")
    if v < lo or v > hi:
        raise bad_request(f"{name} must be between {lo} and {hi}, not {v}", name)
    return v


def _opt_bool(body: Mapping[str, Any], name: str) -> bool | None:
    v = _field(body, name)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise ApiError(f"{name} must be a boolean, not {_type_name(v)}", name, "invalid_type")
    return v


def _read_stop(body: Mapping[str, Any]) -> list[str]:
    v = _field(body, "stop")
    if v is None:
        return []
    if isinstance(v, str):
        out = [v]
    elif isinstance(v, list):
        if len(v) > 4:
            raise bad_request(f"stop holds at most 4 strings, not {len(v)}", "stop")
        if not all(isinstance(s, str) for s in v):
            raise ApiError("stop must be a string or an array of strings", "stop", "invalid_type")
        out = list(v)
    else:
        raise ApiError(f"stop must be a string or an array of strings, not {_type_name(v)}", "stop", "invalid_type")
    if any(not s for s in out):
        raise bad_request("stop strings must not be empty", "stop")
    return out


# parley serve's limits (runtime/http/api.hpp kMaxChoices, kMaxTopLogprobs).
_MAX_CHOICES = 8
_MAX_TOP_LOGPROBS = 20


def _refuse_unsupported(body: Mapping[str, Any], legacy: bool = False) -> int | None:
    """Penalties other than 0 are refused, as parley serve refuses them.
    Returns, for chat (not `legacy` /v1/completions, whose `logprobs` is a
    count read by the caller), top_logprobs (0 when absent) if logprobs: true
    was asked, else None."""
    for p in ("presence_penalty", "frequency_penalty"):
        v = _opt_number(body, p, -2.0, 2.0)
        if v is not None and v != 0.0:
            raise ApiError(f"{p} is not supported (only 0)", p, "unsupported_value")
    if not legacy:
        lp = _opt_bool(body, "logprobs")
        top = _opt_integer(body, "top_logprobs", 0, _MAX_TOP_LOGPROBS)
        if top is not None and not lp:
            raise ApiError("top_logprobs needs logprobs: true", "top_logprobs", "invalid_value")
        if lp:
            return top or 0
    return None


def _read_logit_bias(body: Mapping[str, Any], vocab_size: int) -> dict[int, float]:
    """`logit_bias` as parley serve reads it (runtime/http/api.cpp read_logit_bias,
    the same errors): {"token id": bias in [-100, 100]} -> {id: bias}."""
    lb = _field(body, "logit_bias")
    if lb is None:
        return {}
    if not isinstance(lb, dict):
        raise ApiError("logit_bias must be an object mapping token ids to biases, not " + _type_name(lb),
                       "logit_bias", "invalid_type")
    out: dict[int, float] = {}
    for key, v in lb.items():
        digits = 0 < len(key) <= 10 and all(c in "0123456789" for c in key)
        tid = int(key) if digits else -1
        if not digits or tid >= vocab_size:
            raise ApiError(f"logit_bias: the key '{key}' is not a token id of this model (a decimal integer in "
                           f"[0, {vocab_size}))", "logit_bias", "invalid_value")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ApiError(f"logit_bias: the value of token {key} must be a number, not {_type_name(v)}",
                           "logit_bias", "invalid_type")
        if not math.isfinite(v) or v < -100.0 or v > 100.0:
            raise ApiError(f"logit_bias: the value of token {key} must be between -100 and 100, not "
                           f"{json.dumps(v)}", "logit_bias", "invalid_value")
        out[tid] = float(v)
    return out


def _stream_options(body: Mapping[str, Any]) -> bool:
    so = _field(body, "stream_options")
    if so is None:
        return False
    if not isinstance(so, dict):
        raise ApiError("stream_options must be an object", "stream_options", "invalid_type")
    _known(so, ["include_usage"], "stream_options.")
    v = _field(so, "include_usage")
    if v is not None and not isinstance(v, bool):
        raise ApiError(f"stream_options.include_usage must be a boolean, not {_type_name(v)}",
                       "stream_options.include_usage", "invalid_type")
    return bool(v)


@dataclass
class Limits:
    """As `parley serve`'s options of the same names."""

    max_tokens: int = 1024
    max_messages: int = 1024
    max_texts: int = 256
    request_timeout_s: float | None = None


@dataclass
class _Sampling:
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    seed: int | None
    stop: list[str]


def _read_sampling(body: Mapping[str, Any], limits: Limits) -> _Sampling:
    mt = _opt_integer(body, "max_tokens", 1, limits.max_tokens)
    mct = _opt_integer(body, "max_completion_tokens", 1, limits.max_tokens)
    if mct is not None:
        if mt is not None and mt != mct:
            raise bad_request("max_tokens and max_completion_tokens disagree", "max_completion_tokens")
        mt = mct
    return _Sampling(mt, _opt_number(body, "temperature", 0.0, 2.0), _opt_number(body, "top_p", 0.0, 1.0),
                     _opt_integer(body, "seed", -(2**63), 2**63 - 1), _read_stop(body))


def _generation(s: _Sampling, default_max: int, cap: int, model_max: int) -> dict[str, Any]:
    """Generation keywords for the binding, as runtime/http's apply_sampling sets them."""
    d = default_max
    if 0 < model_max < d:
        d = model_max
    kw: dict[str, Any] = {"num_beams": 1, "num_return_sequences": 1,
                          "max_new_tokens": s.max_tokens if s.max_tokens is not None else min(d, cap)}
    # temperature 0 (or top_p 0) is greedy decoding, as OpenAI documents it; a
    # positive temperature samples; absent keeps the model's defaults. A value
    # too small for the options' float (1e-320) is 0 there: greedy too.
    if s.temperature is not None:
        if _as_float32(s.temperature) == 0.0:
            kw["do_sample"] = False
        else:
            kw["do_sample"] = True
            kw["temperature"] = s.temperature
    if s.top_p is not None:
        if _as_float32(s.top_p) == 0.0:
            kw["do_sample"] = False
        else:
            kw["top_p"] = s.top_p
    # Without a seed, sampling differs from request to request, as OpenAI's does.
    kw["seed"] = s.seed & 0xFFFFFFFFFFFFFFFF if s.seed is not None else secrets.randbits(64)  # int64 -> uint64
    return kw


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(9)}"


def sse(doc: Any) -> str:
    return "data: " + json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n\n"


SSE_DONE = "data: [DONE]\n\n"


# ---------------------------------------------------------------- chat messages


def _content_text(msg: Mapping[str, Any], where: str) -> str:
    c = _field(msg, "content")
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        out = []
        for i, part in enumerate(c):
            p = f"{where}.content[{i}]"
            if not isinstance(part, dict):
                raise ApiError(f"{p} must be an object", p, "invalid_type")
            t = _opt_string(part, "type", p + ".")
            if t != "text":
                raise ApiError(f"{p}: content parts of type '{t or ''}' are not supported (only text)", p + ".type",
                               "unsupported_value")
            _known(part, ["type", "text"], p + ".")  # as unknown keys of a message are refused
            text = _opt_string(part, "text", p + ".")
            if text is None:
                raise ApiError(f"{p}.text is required", p + ".text", "missing_required_parameter")
            out.append(text)
        return "".join(out)
    raise ApiError(f"{where}.content must be a string or an array of text parts", where + ".content", "invalid_type")


def _tool_calls_for_parley(calls: Any, where: str) -> list[dict[str, Any]]:
    """OpenAI sends a call's arguments as a JSON string; chat templates take the object."""
    if not isinstance(calls, list):
        raise ApiError(f"{where}.tool_calls must be an array", where + ".tool_calls", "invalid_type")
    out = []
    for j, c in enumerate(calls):
        if not isinstance(c, dict) or not isinstance(c.get("function"), dict):
            at = f"{where}.tool_calls[{j}]"
            raise ApiError(f'{at} must be {{"type": "function", "function": {{...}}}}', at, "invalid_type")
        call = json.loads(json.dumps(c))
        args = call["function"].get("arguments")
        if isinstance(args, str):
            try:
                call["function"]["arguments"] = json.loads(args)
            except ValueError:
                pass
        out.append(call)
    return out


def _tool_calls_for_openai(calls: Any) -> list[dict[str, Any]]:
    out = []
    for c in calls if isinstance(calls, list) else []:
        fn = c.get("function") or {}
        args = fn.get("arguments", {})
        out.append({"id": c.get("id") or new_id("call"), "type": "function",
                    "function": {"name": fn.get("name", ""),
                                 "arguments": args if isinstance(args, str) else json.dumps(args,
                                                                                             ensure_ascii=False)}})
    return out


def _string_list(body: Mapping[str, Any], name: str, most: int) -> list[str]:
    v = _field(body, name)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ApiError(f"{name} must be an array of strings", name, "invalid_type")
    if len(v) > most:
        raise bad_request(f"{name} holds at most {most} entries", name)
    return list(v)


def _span_doc(sp, source: str, target: str) -> dict[str, Any]:
    """A protected span with UTF-8 byte offsets, as `parley serve` reports them."""
    def b(s: str, i: int) -> int:
        return len(s[:i].encode("utf-8"))

    s0, s1, t0, t1 = b(source, sp.source_start), b(source, sp.source_end), b(target, sp.target_start), b(target,
                                                                                                   sp.target_end)
    return {"kind": sp.kind, "placement": sp.placement, "source_offset": s0, "source_length": s1 - s0,
            "target_offset": t0, "target_length": t1 - t0}


def _held_back(s: str, stops: Sequence[str]) -> int:
    """Characters at the end of s that may be the start of one of stops."""
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(s)), hold, -1):
            if s.endswith(stop[:k]):
                hold = k
                break
    return hold


def _as_float32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def _finite_logprob(x: float) -> float:
    # OpenAI reports a token the distribution excludes with -9999.0 (JSON has no -infinity).
    return float(x) if math.isfinite(x) else -9999.0


def _chat_logprobs(model: Any, reply: Any, text: str, top: int) -> dict[str, Any]:
    """The choice's ``logprobs`` as parley serve writes it (runtime/http/logprobs.cpp):
    one entry per token of the reply's text (not the EOS token, nor what a
    stop string cut), each with its text, bytes and `top` alternatives."""
    size = len(text.encode("utf-8"))
    keep = 0
    while keep < len(reply.tokens):
        if len(model.detokenize(reply.tokens[:keep]).encode("utf-8")) >= size:
            break
        keep += 1

    return {"content": _chat_logprob_entries(model, reply, keep, top), "refusal": None}


def _chat_logprob_entries(model: Any, scored: Any, count: int, top: int) -> list[dict[str, Any]]:
    """The ``content`` entries of the first `count` tokens of a Reply (a
    whole reply, or a streamed piece: the tokens its text completes)."""

    def named(token_id: int) -> tuple[str, list[int]]:
        t = model.detokenize([token_id], skip_special_tokens=False)
        return t, list(t.encode("utf-8"))

    content = []
    for i in range(count):
        t, b = named(scored.tokens[i])
        alts = []
        for aid, alp in (scored.alternatives[i][:top] if scored.alternatives and top else []):
            at, ab = named(aid)
            alts.append({"token": at, "logprob": _finite_logprob(alp), "bytes": ab})
        lp = scored.logprobs[i] if scored.logprobs and i < len(scored.logprobs) else 0.0
        content.append({"token": t, "logprob": _finite_logprob(lp), "bytes": b, "top_logprobs": alts})
    return content


def _piece_logprobs(model: Any, piece: Any, top: int) -> dict[str, Any]:
    """A streamed chunk's ``logprobs``: the tokens whose text its piece completes (Chat.stream_async with scores)."""
    tokens = getattr(piece, "tokens", None) or []
    return {"content": _chat_logprob_entries(model, piece, len(tokens), top), "refusal": None}


def _completion_logprobs(model: Any, hyp: Any, text: str, base_offset: int, top: int) -> dict[str, Any]:
    """A /v1/completions choice's ``logprobs`` as parley serve writes it
    (runtime/http/logprobs.cpp completion_logprobs): the tokens of the
    choice's text (not what a stop string cut), their log-probabilities, the
    `top` best alternatives of each step as {text: logprob} (two ids with one
    text keep the better, listed first) and each token's byte offset from the
    start of the prompt (echo is not supported, so the first is the prompt's
    length)."""
    size = len(text.encode("utf-8"))
    offsets: list[int] = []
    keep = 0
    while keep < len(hyp.tokens):
        at = len(model.detokenize(hyp.tokens[:keep]).encode("utf-8")) if keep else 0
        if at >= size:
            break
        offsets.append(at)
        keep += 1
    tokens, token_logprobs, top_logprobs = [], [], []
    for i in range(keep):
        tokens.append(model.detokenize([hyp.tokens[i]], skip_special_tokens=False))
        lp = hyp.logprobs[i] if hyp.logprobs and i < len(hyp.logprobs) else 0.0
        token_logprobs.append(_finite_logprob(lp))
        alts: dict[str, float] = {}
        for aid, alp in (hyp.alternatives[i][:top] if hyp.alternatives and top else []):
            alts.setdefault(model.detokenize([aid], skip_special_tokens=False), _finite_logprob(alp))
        top_logprobs.append(alts)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs,
            "text_offset": [base_offset + o for o in offsets]}
