"""The OpenAI-compatible routes of `parley serve` (docs/serve.md) over the Python binding.

Framework-free: ``OpenAIService`` takes parsed request bodies and returns
JSON documents, or async iterators of server-sent-event strings for streamed
replies, and raises ``ApiError`` (HTTP status + OpenAI's error object).
parley.ray_serve puts it behind FastAPI in a Ray Serve deployment.

The request and response shapes, the validation and the error codes follow
runtime/http (api.cpp, chat_completions.cpp, completions.cpp,
translations.cpp), so a client sees the same thing from either server.
Every run goes through the binding's asyncio API (Chat.say_async /
stream_async, Model.generate_async, translate_async): the event loop is never
blocked by decoding, and concurrent requests of a model are batched by its
serving engine.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field as dc_field
from typing import Any, AsyncIterator, Mapping, Sequence

from . import errors as perr
from ._openai_protocol import (
    ApiError,
    Limits,
    SSE_DONE,
    _PROTECT,
    _content_text,
    _field,
    _generation,
    _MAX_CHOICES,
    _MAX_TOP_LOGPROBS,
    _held_back,
    _known,
    _opt_bool,
    _opt_integer,
    _opt_string,
    _read_sampling,
    _read_logit_bias,
    _chat_logprobs,
    _piece_logprobs,
    _completion_logprobs,
    _refuse_unsupported,
    _span_doc,
    _stream_options,
    _string_list,
    _tool_calls_for_openai,
    _tool_calls_for_parley,
    bad_request,
    error_from_parley,
    new_id,
    parse_body,
    sse,
)
from .chat import Chat
from .model import Model
from .runtime import Runtime

__all__ = ["ApiError", "Limits", "OpenAIService", "parse_body"]

@dataclass
class _Loaded:
    name: str
    path: str
    model: Model
    decoder_only: bool
    chat: bool
    architecture: str
    max_new_tokens: int
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class _ChatJob:
    entry: _Loaded
    chats: list[Chat]  # one session per choice (n), each with the whole conversation
    id: str
    created: int
    max_new_tokens: int
    tools: bool
    include_usage: bool
    stop: list[str]
    kws: list[dict[str, Any]] = dc_field(default_factory=list)  # generation options per choice (seed + index)
    release: Any = None  # gives back the admission slot; once
    top_logprobs: int | None = None  # logprobs: true -> top_logprobs (0 when absent)

    def end(self) -> None:
        """Free the chat sessions and the admission slot (idempotent)."""
        for c in self.chats:
            c.close()
        r, self.release = self.release, None
        if r is not None:
            r()


@dataclass
class _Outcome:
    content: str
    calls: list[dict[str, Any]]
    finish: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


class OpenAIService:
    """The models of one server (or one Ray Serve replica) and its routes.

    ``OpenAIService({"bot": "support-llama.parley", "en-de": "opus-mt-en-de.parley"}, threads=1)``
    loads each model once. The route methods must run on one event loop (the
    replica's); requests from many clients may run concurrently on it.
    ``context``: what a conversation past a model's positions does, as
    ``parley serve --context``: ``"error"`` (400) or ``"drop_oldest"`` (its
    oldest turns after the system prompt are left out; ``"drop-oldest"`` is
    accepted too).
    """

    def __init__(self, models: Mapping[str, str], *, threads: int = 0, device: str = "cpu",
                 limits: Limits | None = None, plugin_dirs: Sequence[str] | None = None, context: str = "error"):
        if not models:
            raise ValueError("at least one model is required: {name: path}")
        if not isinstance(context, str) or context.replace("-", "_") not in ("error", "drop_oldest"):
            raise ValueError(f"context must be 'error' or 'drop_oldest', not {context!r}")
        self.context = context.replace("-", "_")
        self.limits = limits or Limits()
        self.runtime = Runtime(threads=threads, plugin_dirs=list(plugin_dirs) if plugin_dirs else None)
        self.models: dict[str, _Loaded] = {}
        self.created = int(time.time())
        self.draining = False
        self.in_flight = 0
        self.client_disconnects = 0  # streams left before their end (their request was cancelled)
        try:
            for name, path in models.items():
                m = Model(self.runtime, os.fspath(path), device=device)
                decoder_only = m.kind == "decoder-only"
                chat = False
                if decoder_only:  # a chat model is one a session can be created for
                    try:
                        Chat(m).close()
                        chat = True
                    except perr.ParleyError:
                        pass
                self.models[name] = _Loaded(name, os.fspath(path), m, decoder_only, chat, m.info.architecture,
                                            int(m.generation_defaults().get("max_new_tokens") or 0))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for e in self.models.values():
            e.model.close()
        self.models.clear()
        self.runtime.close()

    # ------------------------------------------------------------ simple routes

    def _find(self, name: str) -> _Loaded:
        e = self.models.get(name)
        if e is None:
            raise ApiError(f"The model '{name}' does not exist (GET /v1/models lists the models this server holds)",
                           "model", "model_not_found", http_status=404)
        return e

    def _model_doc(self, e: _Loaded) -> dict[str, Any]:
        kind = "chat" if e.chat else ("text-generation" if e.decoder_only else "translation")
        endpoints = (["/v1/chat/completions", "/v1/completions"] if e.chat else ["/v1/completions"]) \
            if e.decoder_only else ["/v1/translations"]
        return {"id": e.name, "object": "model", "created": self.created, "owned_by": "parley",
                "parley": {"architecture": e.architecture, "kind": kind, "endpoints": endpoints}}

    def list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [self._model_doc(e) for e in self.models.values()]}

    def get_model(self, name: str) -> dict[str, Any]:
        return self._model_doc(self._find(name))

    def health(self) -> dict[str, Any]:
        return {"status": "shutting_down" if self.draining else "ok", "models": len(self.models),
                "requests_in_flight": self.in_flight}

    def stats(self) -> dict[str, Any]:
        """Per model: requests and tokens counted here, and the engine's counters (serving_stats)."""
        return {e.name: {"requests": e.requests, "prompt_tokens": e.prompt_tokens,
                         "completion_tokens": e.completion_tokens, "engine": e.model.serving_stats()}
                for e in self.models.values()}

    # ------------------------------------------------------------ chat completions

    async def chat_completions(self, body: Mapping[str, Any]) -> dict[str, Any] | AsyncIterator[str]:
        """A chat.completion document, or (``stream: true``) an async iterator of SSE event strings.

        Errors before the reply's first piece raise ApiError; later ones are
        sent as a ``data: {"error": ...}`` event.
        """
        job = self._prepare_chat(body)
        streaming = bool(_opt_bool(body, "stream"))
        if streaming and not job.tools:
            return await self._chat_stream(job)
        try:
            # The choices are requests of their own: the engine decodes them together.
            replies = await asyncio.gather(
                *(c.say_async(None, stop=job.stop or None, deadline=self.limits.request_timeout_s, **kw)
                  for c, kw in zip(job.chats, job.kws)), return_exceptions=True)
            for r in replies:
                if isinstance(r, perr.ParleyError):
                    raise error_from_parley(r) from None
                if isinstance(r, BaseException):
                    raise r
            outs = [self._outcome(job, c) for c in job.chats]
            logprobs = [self._logprobs(job, r) for r in replies]
        finally:
            job.end()
        usage = self._usage(outs)
        if streaming:  # with tools the replies were parsed for calls first; sent whole
            return self._chat_stream_whole(job, outs, usage, logprobs)
        choices = []
        for i, (o, lp) in enumerate(zip(outs, logprobs)):
            msg: dict[str, Any] = {"role": "assistant", "content": o.content}
            if o.calls:
                msg["tool_calls"] = o.calls
                if not o.content:
                    msg["content"] = None
            choices.append({"index": i, "message": msg, "logprobs": lp, "finish_reason": o.finish})
        return {"id": job.id, "object": "chat.completion", "created": job.created, "model": job.entry.name,
                "choices": choices, "usage": usage}

    def _prepare_chat(self, body: Mapping[str, Any]) -> _ChatJob:
        _known(body, ["model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
                      "temperature", "top_p", "seed", "stop", "n", "response_format", "tools", "tool_choice",
                      "parallel_tool_calls", "user", "logprobs", "top_logprobs", "presence_penalty",
                      "frequency_penalty", "logit_bias"])
        name = _opt_string(body, "model")
        if name is None:
            raise ApiError("model is required", "model", "missing_required_parameter")
        e = self._find(name)
        if not e.chat:
            raise ApiError(f"the model '{e.name}' is not a chat model" +
                           (" (it has no chat template: use /v1/completions)" if e.decoder_only
                            else " (a translation model: use /v1/translations)"), "model", "model_not_supported")
        n = _opt_integer(body, "n", 1, _MAX_CHOICES) or 1
        top_logprobs = _refuse_unsupported(body)
        s = _read_sampling(body, self.limits)
        bias = _read_logit_bias(body, e.model.vocab_size)
        _opt_bool(body, "stream")
        include_usage = _stream_options(body)

        schema: Any = None
        rf = _field(body, "response_format")
        if rf is not None:
            if not isinstance(rf, dict):
                raise ApiError("response_format must be an object", "response_format", "invalid_type")
            _known(rf, ["type", "json_schema"], "response_format.")
            t = _opt_string(rf, "type", "response_format.")
            if t is None:
                raise ApiError("response_format.type is required", "response_format.type",
                               "missing_required_parameter")
            if t == "json_object":
                schema = {"type": "object"}
            elif t == "json_schema":
                js = _field(rf, "json_schema")
                if not isinstance(js, dict):
                    raise ApiError("response_format.json_schema must be an object", "response_format.json_schema",
                                   "invalid_type")
                _known(js, ["name", "description", "schema", "strict"], "response_format.json_schema.")
                _opt_string(js, "name", "response_format.json_schema.")
                _opt_string(js, "description", "response_format.json_schema.")
                sc = _field(js, "schema")
                if not isinstance(sc, dict):
                    raise ApiError("response_format.json_schema.schema must be a JSON schema object",
                                   "response_format.json_schema.schema", "invalid_type")
                schema = sc
            elif t != "text":
                raise ApiError(f"response_format.type must be text, json_object or json_schema, not '{t}'",
                               "response_format.type", "unsupported_value")

        tools = _field(body, "tools")
        if tools is not None:
            if not isinstance(tools, list):
                raise ApiError("tools must be an array", "tools", "invalid_type")
            for i, tool in enumerate(tools):  # OpenAI's shape, as runtime/http checks it
                where = f"tools[{i}]"
                if not isinstance(tool, dict):
                    raise ApiError(f"{where} must be an object", where, "invalid_type")
                _known(tool, ["type", "function"], where + ".")
                ttype = _opt_string(tool, "type", where + ".")
                if ttype != "function":
                    raise ApiError(f'{where}.type must be "function"', where + ".type",
                                   "unsupported_value" if ttype is not None else "missing_required_parameter")
                fn = _field(tool, "function")
                if fn is None:
                    raise ApiError(f"{where}.function is required", where + ".function", "missing_required_parameter")
                if not isinstance(fn, dict):
                    raise ApiError(f"{where}.function must be an object", where + ".function", "invalid_type")
                _known(fn, ["name", "description", "parameters", "strict"], where + ".function.")
                _opt_string(fn, "description", where + ".function.")
                params = _field(fn, "parameters")
                if params is not None and not isinstance(params, dict):
                    raise ApiError(f"{where}.function.parameters must be a JSON schema object",
                                   where + ".function.parameters", "invalid_type")
                if not _opt_string(fn, "name", where + ".function."):
                    raise ApiError(f"{where}.function.name is required", where + ".function.name",
                                   "missing_required_parameter")
            tools = tools or None
        _opt_bool(body, "parallel_tool_calls")  # accepted (calls are parsed either way); a boolean
        tc = _field(body, "tool_choice")
        if tc is not None:
            if tc == "none":
                tools = None  # the model is not told about the tools
            elif tc != "auto":
                raise ApiError('tool_choice: only "auto" and "none" are supported (the model decides whether to '
                               'call a tool)', "tool_choice", "unsupported_value")

        messages = _field(body, "messages")
        if messages is None:
            raise ApiError("messages is required", "messages", "missing_required_parameter")
        if not isinstance(messages, list) or not messages:
            raise ApiError("messages must be a non-empty array", "messages", "invalid_type")
        if len(messages) > self.limits.max_messages:
            raise bad_request(f"at most {self.limits.max_messages} messages per request", "messages")
        msgs: list[dict[str, Any]] = []
        system: list[str] = []
        for i, m in enumerate(messages):
            where = f"messages[{i}]"
            if not isinstance(m, dict):
                raise ApiError(f"{where} must be an object", where, "invalid_type")
            _known(m, ["role", "content", "name", "tool_calls", "tool_call_id", "refusal"], where + ".")
            role = _opt_string(m, "role", where + ".")
            if role is None:
                raise ApiError(f"{where}.role is required", where + ".role", "missing_required_parameter")
            _opt_string(m, "name", where + ".")  # a participant's name on any role: a string
            refusal = _field(m, "refusal")
            if refusal is not None and not isinstance(refusal, str):
                raise ApiError(f"{where}.refusal must be a string", where + ".refusal", "invalid_type")
            if role != "assistant" and _field(m, "tool_calls") is not None:
                raise bad_request(f"{where}.tool_calls: only assistant messages carry tool calls", where + ".tool_calls")
            content = _content_text(m, where)
            msg: dict[str, Any] = {"content": content}
            if role in ("system", "developer"):
                if not msgs:  # leading system messages form the session's system prompt
                    system.append(content)
                    continue
                msg["role"] = "system"  # refused by the session: a system message after the start
            elif role == "user":
                msg["role"] = "user"
            elif role == "assistant":
                msg["role"] = "assistant"
                if _field(m, "tool_calls") is not None:
                    msg["tool_calls"] = _tool_calls_for_parley(m["tool_calls"], where)
            elif role == "tool":
                msg["role"] = "tool"
                for k in ("tool_call_id", "name"):
                    v = _opt_string(m, k, where + ".")
                    if v:
                        msg[k] = v
            else:
                raise ApiError(f"{where}.role must be system, developer, user, assistant or tool, not '{role}'",
                               where + ".role", "unsupported_value")
            msgs.append(msg)
        if not msgs:
            raise bad_request("messages holds only system messages: nothing to reply to", "messages")
        self._admit()
        e.requests += 1
        kw = _generation(s, self.limits.max_tokens, self.limits.max_tokens, e.max_new_tokens)
        if bias:
            kw["logit_bias"] = bias
        if schema is not None:
            kw["json_schema"] = schema
        if top_logprobs is not None:
            kw["return_logprobs"] = True
            kw["alternatives"] = top_logprobs
        # Each choice is a session of its own with the same conversation (the
        # sessions after the first find the prompt in the prefix cache), its
        # seed the request's (or the model's default) plus its index, as
        # parley serve does.
        kws = [kw]
        if n > 1:
            base = kw["seed"] if "seed" in kw else int(e.model.generation_defaults().get("seed") or 0)
            kws = [dict(kw, seed=(base + i) & 0xFFFFFFFFFFFFFFFF) for i in range(n)]
        chats: list[Chat] = []
        try:
            for _ in range(n):
                try:
                    chat = Chat(e.model, "\n\n".join(system) if system else None, context=self.context)
                except perr.ParleyError as err:
                    raise error_from_parley(err) from None
                chats.append(chat)
                if tools is not None:
                    try:
                        chat.set_tools(tools)
                    except perr.ParleyError as err:
                        raise error_from_parley(err, "tools: ") from None
                for m in msgs:
                    try:
                        chat.append_message(m)
                    except perr.ParleyError as err:
                        api = error_from_parley(err, "messages: ")
                        api.param = "messages"
                        raise api from None
        except BaseException:
            for c in chats:
                c.close()
            self._release()
            raise
        return _ChatJob(e, chats, new_id("chatcmpl"), int(time.time()), kw["max_new_tokens"], tools is not None,
                        include_usage, s.stop, kws, self._release, top_logprobs)

    def _admit(self) -> None:
        if self.draining:
            raise ApiError("the server is shutting down", http_status=503, type="server_shutting_down")
        self.in_flight += 1

    def _release(self) -> None:
        self.in_flight -= 1

    def _outcome(self, job: _ChatJob, chat: Chat) -> _Outcome:
        stats = chat.stats
        last = chat.messages[-1]
        content = last.get("content", "") if last.get("role") == "assistant" else ""
        calls = _tool_calls_for_openai(last["tool_calls"]) if job.tools and last.get("tool_calls") else []
        if calls:
            finish = "tool_calls"
        elif stats["generated_tokens"] >= job.max_new_tokens:
            finish = "length"
        else:
            finish = "stop"
        if chat is job.chats[0]:  # as usage counts it: the prompt once, every choice's completion
            job.entry.prompt_tokens += stats["prompt_tokens"]
        job.entry.completion_tokens += stats["generated_tokens"]
        return _Outcome(content, calls, finish, stats["prompt_tokens"], stats["generated_tokens"],
                        stats["reused_tokens"])

    @staticmethod
    def _usage(outs: list[_Outcome]) -> dict[str, Any]:
        """The prompt counted once (every choice has the same), the completions of all choices."""
        prompt = outs[0].prompt_tokens if outs else 0
        completion = sum(o.completion_tokens for o in outs)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": outs[0].cached_tokens if outs else 0}}

    def _chunk(self, job: _ChatJob, delta: dict[str, Any], finish: str | None,
               logprobs: dict[str, Any] | None = None, index: int = 0) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        c: dict[str, Any] = {"id": job.id, "object": "chat.completion.chunk", "created": job.created,
                             "model": job.entry.name, "choices": [choice]}
        if job.include_usage:
            c["usage"] = None
        return c

    def _usage_chunk(self, job: _ChatJob, usage: dict[str, Any]) -> dict[str, Any]:
        u = self._chunk(job, {}, None)
        u["choices"] = []
        u["usage"] = usage
        return u

    async def _chat_stream(self, job: _ChatJob) -> AsyncIterator[str]:
        streams: list[Any] = []
        firsts: list[str | None] = []
        try:
            for c, kw in zip(job.chats, job.kws):
                streams.append(c.stream_async(None, stop=job.stop or None, deadline=self.limits.request_timeout_s,
                                              **kw))
            # A turn that fails before its first piece (a conversation too long,
            # a schema the grammar compiler refuses) is answered as an HTTP error.
            for st in streams:
                try:
                    firsts.append(await st.__anext__())
                except StopAsyncIteration:
                    firsts.append(None)
        except BaseException as e:
            try:
                for st in streams:
                    await st.aclose()
            finally:
                job.end()
            if isinstance(e, perr.ParleyError):
                raise error_from_parley(e) from None
            raise
        return self._chat_events(job, streams, firsts)

    async def _chat_events(self, job: _ChatJob, streams: list[Any], firsts: list[str | None]) -> AsyncIterator[str]:
        # Leaving early (the client hung up: the ASGI server cancels this
        # generator) closes the streams, which cancels the turns.
        finished = False
        pumps: list[asyncio.Future] = []
        try:
            for i in range(len(streams)):
                yield sse(self._chunk(job, {"role": "assistant", "content": ""}, None, index=i))
            error: BaseException | None = None
            # With logprobs, each piece's chunk carries the tokens its text
            # completes; the rest come with the choice's last chunk.
            sent = [0] * len(streams)

            def piece_chunk(i: int, piece: str) -> str:
                lp = None
                if job.top_logprobs is not None:
                    lp = _piece_logprobs(job.entry.model, piece, job.top_logprobs)
                    sent[i] += len(lp["content"])
                return sse(self._chunk(job, {"content": piece}, None, lp, index=i))

            if len(streams) == 1:  # one choice: its pieces as they come
                if firsts[0] is not None:
                    if firsts[0]:
                        yield piece_chunk(0, firsts[0])
                    try:
                        async for piece in streams[0]:
                            if piece:
                                yield piece_chunk(0, piece)
                    except perr.ParleyError as e:
                        error = e
            # Several: their text pieces, interleaved as they come, each naming its index.
            q: asyncio.Queue = asyncio.Queue()

            async def pump(i: int, st: Any, first: str | None) -> None:
                try:
                    if first is not None:
                        if first:
                            q.put_nowait((i, first, None))
                        async for piece in st:
                            if piece:
                                q.put_nowait((i, piece, None))
                    q.put_nowait((i, None, None))
                except asyncio.CancelledError:
                    raise
                except BaseException as e:
                    q.put_nowait((i, None, e))

            if len(streams) > 1:
                pumps = [asyncio.ensure_future(pump(i, st, f)) for i, (st, f) in enumerate(zip(streams, firsts))]
            for _ in range(len(pumps)):
                while True:
                    i, piece, err = await q.get()
                    if piece is None:
                        error = error or err
                        break
                    yield piece_chunk(i, piece)
            if error is not None:
                if not isinstance(error, perr.ParleyError):
                    raise error
                finished = True
                yield sse(error_from_parley(error).body())
                yield SSE_DONE
                return
            outs = [self._outcome(job, c) for c in job.chats]
            # What the pieces did not carry (an EOS token, a token held back
            # at the end) comes with each choice's last chunk, as parley
            # serve sends it.
            for i, (st, o) in enumerate(zip(streams, outs)):
                rest = self._logprobs(job, st.reply)
                if rest is not None:
                    rest["content"] = rest["content"][sent[i]:]
                yield sse(self._chunk(job, {}, o.finish, rest, index=i))
            if job.include_usage:
                yield sse(self._usage_chunk(job, self._usage(outs)))
            finished = True
            yield SSE_DONE
        finally:
            if not finished:
                self.client_disconnects += 1
            for t in pumps:
                t.cancel()
            try:
                for st in streams:
                    await st.aclose()
            finally:  # also when the task is cancelled again while it waits (the sessions' close cancels the turns)
                job.end()

    def _logprobs(self, job: _ChatJob, reply: Any) -> dict[str, Any] | None:
        if job.top_logprobs is None or reply is None:
            return None
        return _chat_logprobs(job.entry.model, reply, str(reply), job.top_logprobs)

    async def _chat_stream_whole(self, job: _ChatJob, outs: list[_Outcome], usage: dict[str, Any],
                                 logprobs: list[dict[str, Any] | None]) -> AsyncIterator[str]:
        for i in range(len(outs)):
            yield sse(self._chunk(job, {"role": "assistant", "content": ""}, None, index=i))
        for i, (o, lp) in enumerate(zip(outs, logprobs)):
            if o.content:
                yield sse(self._chunk(job, {"content": o.content}, None, index=i))
            if o.calls:
                yield sse(self._chunk(job, {"tool_calls": [dict(c, index=j) for j, c in enumerate(o.calls)]}, None,
                                      index=i))
            yield sse(self._chunk(job, {}, o.finish, lp, index=i))
        if job.include_usage:
            yield sse(self._usage_chunk(job, usage))
        yield SSE_DONE

    # ------------------------------------------------------------ text completions

    async def completions(self, body: Mapping[str, Any]) -> dict[str, Any] | AsyncIterator[str]:
        _known(body, ["model", "prompt", "stream", "stream_options", "max_tokens", "temperature", "top_p", "seed",
                      "stop", "n", "best_of", "echo", "suffix", "user", "logprobs", "presence_penalty",
                      "frequency_penalty", "logit_bias"])
        name = _opt_string(body, "model")
        if name is None:
            raise ApiError("model is required", "model", "missing_required_parameter")
        e = self._find(name)
        if not e.decoder_only:
            raise ApiError(f"the model '{e.name}' is a translation model: use /v1/translations", "model",
                           "model_not_supported")
        n = _opt_integer(body, "n", 1, _MAX_CHOICES) or 1
        b = _opt_integer(body, "best_of", 1, 2**63 - 1)
        if b is not None and b != n:
            raise ApiError("best_of: only best_of = n is supported (every sampled choice is returned)", "best_of",
                           "unsupported_value")
        if _opt_bool(body, "echo"):
            raise ApiError("echo is not supported", "echo", "unsupported_value")
        if _opt_string(body, "suffix") is not None:
            raise ApiError("suffix is not supported", "suffix", "unsupported_value")
        # Legacy completions: `logprobs` is the number of alternatives per token (0 = the chosen token's only).
        logprobs = _opt_integer(body, "logprobs", 0, _MAX_TOP_LOGPROBS)
        _refuse_unsupported(body, legacy=True)
        s = _read_sampling(body, self.limits)
        bias = _read_logit_bias(body, e.model.vocab_size)
        p = _field(body, "prompt")
        if p is None:
            raise ApiError("prompt is required", "prompt", "missing_required_parameter")
        if isinstance(p, str):
            prompt = p
        elif isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
            prompt = p[0]
        else:
            raise ApiError("prompt must be a string (or an array of one string): batches and token arrays are not "
                           "supported", "prompt", "unsupported_value")
        if not prompt:
            raise bad_request("prompt must not be empty", "prompt")
        streaming = bool(_opt_bool(body, "stream"))
        include_usage = _stream_options(body)
        try:
            ids = e.model.tokenize(prompt, add_special_tokens=True)
        except perr.ParleyError as err:
            raise error_from_parley(err, "prompt: ") from None
        if not ids:
            raise bad_request("prompt: the prompt has no tokens", "prompt")
        kw = _generation(s, 16, self.limits.max_tokens, e.max_new_tokens)  # OpenAI's default max_tokens is 16
        if bias:
            kw["logit_bias"] = bias
        self._admit()
        e.requests += 1
        job = _Completion(self, e, ids, len(prompt.encode("utf-8")), n, s.stop, kw["max_new_tokens"], include_usage,
                          logprobs)
        task = asyncio.ensure_future(job.run(kw))
        if not streaming:
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                task.cancel()
                raise
            except perr.ParleyError as err:
                raise error_from_parley(err) from None
            return job.whole()
        # An early failure (a prompt too long for the model, ...) is an HTTP error.
        await job.first_or_end()
        if task.done() and task.exception() is not None and not job.started():
            err = task.exception()
            raise error_from_parley(err) if isinstance(err, perr.ParleyError) else err
        return job.events(task)

    # ------------------------------------------------------------ translations

    async def translations(self, body: Mapping[str, Any]) -> dict[str, Any]:
        _known(body, ["model", "text", "texts", "source_language", "target_language", "beam_size", "n",
                      "max_tokens", "protect", "protect_patterns", "glossary", "long_text", "user"])
        name = _opt_string(body, "model")
        if name is None:
            raise ApiError("model is required", "model", "missing_required_parameter")
        e = self._find(name)
        if e.decoder_only:
            raise ApiError(f"the model '{e.name}' is not a translation model (use /v1/chat/completions)", "model",
                           "model_not_supported")
        text = _opt_string(body, "text")
        if text is not None:
            if _field(body, "texts") is not None:
                raise bad_request("give text or texts, not both", "texts")
            texts, single = [text], True
        else:
            texts, single = _string_list(body, "texts", self.limits.max_texts), False
            if not texts:
                raise ApiError("text (a string) or texts (a non-empty array) is required", "text",
                               "missing_required_parameter")
        source = _opt_string(body, "source_language")
        target = _opt_string(body, "target_language")
        beam = _opt_integer(body, "beam_size", 1, 16)
        nbest = _opt_integer(body, "n", 1, 16)
        max_tokens = _opt_integer(body, "max_tokens", 1, self.limits.max_tokens)
        protect: list[str] = []
        p = _field(body, "protect")
        if p is not None:
            items = [p] if isinstance(p, str) else p
            if not isinstance(items, list) or not all(isinstance(c, str) for c in items):
                raise ApiError("protect must be a class name or an array of them", "protect", "invalid_type")
            for c in items:
                if c == "all":
                    protect.extend(_PROTECT)
                elif c in _PROTECT:
                    protect.append(c)
                else:
                    raise ApiError(f"protect: unknown class '{c}' (numbers, emails, urls, placeholders, markup, all)",
                                   "protect", "unsupported_value")
        patterns = _string_list(body, "protect_patterns", 64)
        glossary = _string_list(body, "glossary", 10000)
        long_text = _opt_string(body, "long_text") or "split"
        if long_text not in ("split", "sentences", "error"):
            raise ApiError("long_text must be split, sentences or error", "long_text", "unsupported_value")
        beams = beam if beam is not None else int(e.model.generation_defaults().get("num_beams") or 1)
        if nbest is not None and nbest > beams:
            raise bad_request("n must not exceed beam_size", "n")
        self._admit()
        try:
            e.requests += 1
            kw: dict[str, Any] = {"source_language": source, "target_language": target, "beam_size": beam,
                                  "num_hypotheses": nbest or 1,
                                  "max_length": min(max_tokens or e.max_new_tokens or self.limits.max_tokens,
                                                    self.limits.max_tokens),
                                  "long_text": long_text, "deadline": self.limits.request_timeout_s}
            if protect:
                kw["protect"] = sorted(set(protect))
            if patterns:
                kw["protect_patterns"] = patterns
            if glossary:
                kw["glossary"] = glossary
            # One request per text, submitted together: the engine encodes
            # sources arriving together in one batch, and a text that fails
            # (empty, invalid, too long with long_text=error) fails alone.
            results = await asyncio.gather(*[e.model.translate_async(t, **kw) for t in texts],
                                           return_exceptions=True)
        finally:
            self._release()
        data = []
        source_tokens = target_tokens = 0
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                if not isinstance(r, perr.ParleyError):
                    raise r
                err = error_from_parley(r)
                if err.http_status == 400 and not err.param:  # the text's own fault: the field is the text
                    err.param = "text" if single else f"texts[{i}]"
                if single:
                    raise err from None
                data.append({"index": i, "error": err.body()["error"]})
                continue
            source_tokens += len(r.source_tokens)
            target_tokens += len(r.hypotheses[0].tokens) if r.hypotheses else 0
            src = texts[i]
            alts = []
            for h in r.hypotheses:
                hyp: dict[str, Any] = {"text": h.text, "score": h.score,
                                       "finish_reason": "length" if h.cut_by_length else "stop"}
                if h.protected:
                    hyp["protected"] = [_span_doc(sp, src, h.text) for sp in h.protected]
                alts.append(hyp)
            if not alts:
                alts.append({"text": "", "score": 0.0, "finish_reason": "stop"})
            item: dict[str, Any] = {"index": i, **alts[0]}
            if len(alts) > 1:
                item["alternatives"] = alts
            data.append(item)
        e.prompt_tokens += source_tokens
        e.completion_tokens += target_tokens
        return {"object": "translation.list", "model": e.name, "data": data,
                "usage": {"source_tokens": source_tokens, "target_tokens": target_tokens,
                          "total_tokens": source_tokens + target_tokens}}


class _Choice:
    """One choice (batch row) of a /v1/completions request."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.text = ""
        self.safe = 0  # chars of text that can be streamed (no partial stop string or code point)
        self.emitted = 0  # chars of text streamed
        self.stopped = False
        self.hypothesis: Any = None  # with logprobs: the finished row's Hypothesis


class _Completion:
    """One /v1/completions request: its n choices are the rows of one
    generate_async batch (the engine decodes them together, each sampled row
    from its own random stream), as parley serve submits them. Tokens arrive
    on the model's serving engine thread (on_token), are detokenized there and
    checked for stop strings (a row stops at one), and what can be streamed
    is handed to the event loop."""

    def __init__(self, service: OpenAIService, entry: _Loaded, ids: list[int], prompt_bytes: int, n: int,
                 stop: list[str], max_new: int, include_usage: bool, logprobs: int | None):
        self.service, self.entry, self.ids, self.stop = service, entry, ids, stop
        self.prompt_bytes, self.logprobs = prompt_bytes, logprobs
        self.max_new, self.include_usage = max_new, include_usage
        self.id, self.created = new_id("cmpl"), int(time.time())
        self.loop = asyncio.get_running_loop()
        self.choices = [_Choice() for _ in range(n)]
        self.changed = asyncio.Event()
        self.finished = False

    def _on_token(self, b: int, _s: int, token: int) -> bool:  # the engine thread
        if b >= len(self.choices):
            return True
        c = self.choices[b]
        if c.stopped:
            return True
        c.tokens.append(token)
        full = self.entry.model.detokenize(c.tokens, skip_special_tokens=True)
        cuts = [full.find(s) for s in self.stop if s in full]
        if cuts:
            full = full[: min(cuts)]
            c.stopped = True
        ok = len(full)
        if not c.stopped:
            if full.endswith("\ufffd"):  # an unfinished UTF-8 sequence: hold it back
                ok -= 1
            ok -= _held_back(full[:ok], self.stop)
        c.text, c.safe = full, ok
        try:
            self.loop.call_soon_threadsafe(self.changed.set)
        except RuntimeError:
            pass
        return c.stopped

    async def run(self, kw: dict[str, Any]) -> None:
        try:
            if self.logprobs is not None:
                kw = dict(kw, return_logprobs=True, alternatives=self.logprobs)
            rows = await self.entry.model.generate_async([self.ids] * len(self.choices), on_token=self._on_token,
                                                         deadline=self.service.limits.request_timeout_s, **kw)
            for c, row in zip(self.choices, rows):
                c.hypothesis = row[0]
            self.entry.prompt_tokens += len(self.ids)
            self.entry.completion_tokens += sum(len(c.tokens) for c in self.choices)
        finally:
            self.finished = True
            self.changed.set()
            self.service._release()

    def started(self) -> bool:
        return any(c.tokens for c in self.choices)

    async def first_or_end(self) -> None:
        while not self.started() and not self.finished:
            self.changed.clear()
            await self.changed.wait()

    def finish_reason(self, c: _Choice) -> str:
        return "stop" if c.stopped or len(c.tokens) < self.max_new else "length"

    def usage(self) -> dict[str, int]:
        completion = sum(len(c.tokens) for c in self.choices)  # OpenAI counts the prompt once
        return {"prompt_tokens": len(self.ids), "completion_tokens": completion,
                "total_tokens": len(self.ids) + completion}

    def logprobs_of(self, c: _Choice) -> dict[str, Any] | None:
        if self.logprobs is None or c.hypothesis is None:
            return None
        return _completion_logprobs(self.entry.model, c.hypothesis, c.text, self.prompt_bytes, self.logprobs)

    def doc(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.entry.name,
                "choices": choices}

    @staticmethod
    def choice(index: int, text: str, logprobs: Any, finish: str | None) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}

    def whole(self) -> dict[str, Any]:
        out = self.doc([self.choice(i, c.text, self.logprobs_of(c), self.finish_reason(c))
                        for i, c in enumerate(self.choices)])
        out["usage"] = self.usage()
        return out

    async def events(self, task: asyncio.Future) -> AsyncIterator[str]:
        # Choices stream interleaved, each chunk naming its index; the
        # log-probabilities of a choice come with its last chunk.
        try:
            while True:
                self.changed.clear()
                if not self.finished:
                    pieces = []
                    for i, c in enumerate(self.choices):
                        if c.safe > c.emitted:
                            pieces.append((i, c.text[c.emitted : c.safe]))
                            c.emitted = c.safe
                    for i, piece in pieces:
                        yield sse(self.doc([self.choice(i, piece, None, None)]))
                    if pieces:
                        continue
                if self.finished:
                    break
                await self.changed.wait()
            try:
                await task
            except perr.ParleyError as err:
                yield sse(error_from_parley(err).body())
                yield SSE_DONE
                return
            for i, c in enumerate(self.choices):
                yield sse(self.doc([self.choice(i, c.text[c.emitted :], self.logprobs_of(c), self.finish_reason(c))]))
            if self.include_usage:
                u = self.doc([])
                u["usage"] = self.usage()
                yield sse(u)
            yield SSE_DONE
        finally:
            if not task.done():
                task.cancel()  # the client left: cancelling the await cancels the request
                try:
                    await task
                except BaseException:
                    pass
