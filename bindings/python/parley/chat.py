"""parley.Chat: a conversation with a decoder-only model (parley_chat_*)."""

from __future__ import annotations

import asyncio
import ctypes
import json
import queue
import threading
from contextlib import contextmanager
from ctypes import POINTER, byref, c_char_p, c_int32, c_size_t, c_void_p
from typing import Any, Callable, Iterator, Mapping, Sequence, Unpack

from . import _lib
from ._async import AsyncRequest, AsyncStream, run
from ._handle import Closable, HandleGuard
from ._marshal import check_generation_keys, cstring_array, decode_text, encode_text, generation_options, opt_text
from .errors import BusyError, ClosedError, InvalidArgumentError
from .model import Model
from .options import GenerationKwargs, GenerationOptions, merge

__all__ = ["Chat", "ChatStream", "AsyncChatStream", "Reply"]

_ROLES = {"system": _lib.ROLE_SYSTEM, "user": _lib.ROLE_USER, "assistant": _lib.ROLE_ASSISTANT,
          "tool": _lib.ROLE_TOOL}
_ROLE_NAMES = {v: k for k, v in _ROLES.items()}


class Reply(str):
    """A reply of Chat.say_async / stream_async asked for scores
    (``return_logprobs=True`` or ``alternatives=k``): the text, and per
    generated token its id (``tokens``), its log-probability (``logprobs``,
    with return_logprobs) and the k best (id, log-probability) pairs of that
    step, best first (``alternatives``, with alternatives=k). The tokens are
    every token the turn generated: an EOS token, and tokens a stop string
    cut from the text, included (docs/scores.md). A streamed piece of such a
    turn is a Reply too, holding only the tokens whose text it completes
    (Chat.stream_async).
    """

    tokens: list[int]
    logprobs: list[float] | None
    alternatives: list[list[tuple[int, float]]] | None

    def __new__(cls, text: str, tokens: list[int], logprobs: list[float] | None,
                alternatives: list[list[tuple[int, float]]] | None) -> "Reply":
        r = super().__new__(cls, text)
        r.tokens, r.logprobs, r.alternatives = tokens, logprobs, alternatives
        return r


def _role(role: str | int) -> int:
    if isinstance(role, str):
        try:
            return _ROLES[role]
        except KeyError:
            raise InvalidArgumentError(f"unknown role {role!r}; use 'system', 'user', 'assistant' or 'tool'") from None
    if isinstance(role, bool) or not isinstance(role, int):
        raise TypeError("role must be 'system', 'user', 'assistant', 'tool' or a parley_chat_role int")
    if not -(2**31) <= role < 2**31:
        raise InvalidArgumentError(f"unknown role {role}")
    return role  # other ints go to libparley, which refuses unknown ones


class _Turn:
    """One parley_chat_generate call: its text callback, stop request and Python exception."""

    def __init__(self, handle: int, sink: Callable[[str], Any] | None):
        self.handle = handle
        self.sink = sink
        self.exc: BaseException | None = None
        self.stop = False
        self.lock = threading.Lock()
        self.finished = False
        self.wake: Callable[[], None] | None = None  # unblocks a sink waiting for its consumer
        self.c_fn = _lib.TEXT_FN(self._on_text)

    def _on_text(self, _user, ptr, length):
        # Runs inside the C call: nothing may propagate from here.
        if self.stop or self.exc is not None:
            _lib.lib.parley_chat_cancel(self.handle)
            return 1
        try:
            piece = decode_text(ctypes.string_at(ptr, length))
            if self.sink is not None and self.sink(piece):
                if self.stop:
                    # A stop request (the sink saw it): make sure the C call
                    # reports CANCELLED, even if request_stop() has set the
                    # flag but not yet called parley_chat_cancel.
                    _lib.lib.parley_chat_cancel(self.handle)
                return 1  # otherwise the host ends the reply here (not an error)
            return 0
        except BaseException as e:  # KeyboardInterrupt too
            self.exc = e
            # Cancel rather than just stop, so the truncated reply is not
            # appended to the conversation; the exception is re-raised after.
            _lib.lib.parley_chat_cancel(self.handle)
            return 1

    def request_stop(self) -> None:
        """Cancel the reply (any thread). Also covers a cancel that arrives
        before parley_chat_generate starts (it clears the C flag on entry)."""
        with self.lock:
            self.stop = True
            if not self.finished:
                _lib.lib.parley_chat_cancel(self.handle)
        if self.wake is not None:
            self.wake()

    def run(self, options: _lib.ChatOptions) -> str:
        options.on_text = self.c_fn
        out = c_void_p()
        status = _lib.lib.parley_chat_generate(self.handle, byref(options), byref(out))
        err = _lib.make_error(status) if status != _lib.OK else None
        with self.lock:
            self.finished = True
        try:
            if self.exc is not None:
                exc, self.exc = self.exc, None
                raise exc
            if err is not None:
                raise err
            return decode_text(ctypes.string_at(out.value)) if out.value else ""
        finally:
            _lib.lib.parley_string_free(out.value)


class Chat(Closable):
    """A conversation with a decoder-only model that keeps its KV cache between turns.

    ``Chat(model, system_prompt=None, *, context="error")``. Keeps its Model
    alive. One thread uses a chat at a time (a second concurrent call raises
    BusyError), except ``cancel()``, which any thread may call. Many chats
    may share one model.

    ``context`` is what a conversation too long for the model does:
    ``"error"`` (the turn raises ParleyError) or ``"drop_oldest"`` (the
    oldest turns after the system prompt leave the conversation until the
    reply fits; ``stats["dropped_messages"]`` counts them).

    ``save()`` returns the conversation as bytes; ``Chat.restore(model,
    data)`` makes a new chat of it (see parley_chat_session_save).
    """

    _POLICIES = {"error": 0, "drop_oldest": 1}

    def __init__(
        self, model: Model, system_prompt: str | None = None, *, context: str = "error", _saved: bytes | None = None
    ):
        self._guard: HandleGuard | None = None
        if not isinstance(model, Model):
            raise TypeError("model must be a parley.Model")
        if context not in self._POLICIES:
            raise ValueError(f"context must be 'error' or 'drop_oldest', not {context!r}")
        self._context_policy = self._POLICIES[context]
        self._model = model
        self._busy = threading.Lock()
        self._turn: _Turn | None = None
        self._request: AsyncRequest | None = None  # say_async / stream_async in flight
        system = opt_text(system_prompt, "system_prompt")
        handle = c_void_p()
        with model._use() as mh:
            if _saved is None:
                _lib.check(_lib.lib.parley_chat_session_create(mh, system, byref(handle)))
            else:
                buf = ctypes.create_string_buffer(_saved, max(len(_saved), 1))
                _lib.check(_lib.lib.parley_chat_session_restore(mh, buf, len(_saved), byref(handle)))
            guard = HandleGuard(handle.value, _lib.lib.parley_chat_session_free, "Chat")
            try:
                model._register_chat(guard)
            except BaseException:
                guard.close()
                raise
        self._guard = guard

    # ------------------------------------------------------------ lifetime

    @property
    def model(self) -> Model:
        return self._model

    @property
    def closed(self) -> bool:
        return self._guard is None or self._guard.closed

    def close(self) -> None:
        """Free the session; a reply in progress (e.g. a stream) is cancelled and waited for."""
        g = self._guard
        if g is None or g.closed:
            return
        turn = self._turn
        if turn is not None:
            turn.request_stop()
        req = self._request
        if req is not None:
            req.free()  # cancels it and waits for its worker (one decoding step)
        g.close(before_wait=_lib.lib.parley_chat_cancel)
        self._model._unregister_chat(g)

    def __repr__(self) -> str:
        return f"<parley.Chat{' closed' if self.closed else ''}>"

    @contextmanager
    def _exclusive(self) -> Iterator[int]:
        if self._guard is None:
            raise ClosedError("Chat is closed")
        if not self._busy.acquire(blocking=False):
            raise BusyError("Chat is busy: a reply is being generated (finish or close the stream first)")
        try:
            with self._guard.use() as h:
                yield h
        finally:
            self._busy.release()

    # ------------------------------------------------------------ messages

    def append(self, role: str | int, content: str) -> None:
        """Append a message ('system', 'user' or 'assistant') without generating."""
        r = _role(role)
        data = encode_text(content, "content")
        with self._exclusive() as h:
            _lib.check(_lib.lib.parley_chat_append(h, r, data))

    def append_message(self, message: dict[str, Any]) -> None:
        """Append a message in Hugging Face's form, tool use included:
        {"role": "assistant", "content": "", "tool_calls": [{"id", "type": "function",
        "function": {"name", "arguments": {...}}}]} or {"role": "tool", "content": ...,
        "tool_call_id": ..., "name": ...}. Rendered by the model's Jinja chat template."""
        if not isinstance(message, dict):
            raise TypeError("message must be a dict")
        unknown = set(message) - {"role", "content", "tool_calls", "tool_call_id", "name"}
        if unknown:
            raise InvalidArgumentError(f"message: unknown field(s) {sorted(unknown)}")
        m = _lib.ChatMessageEx()
        m.struct_size = ctypes.sizeof(m)
        m.role = _role(message.get("role", "user"))
        content = encode_text(message.get("content") or "", "content")
        m.content = content
        m.content_length = len(content)
        calls = message.get("tool_calls")
        if calls is not None:
            m.tool_calls = encode_text(calls if isinstance(calls, str) else json.dumps(calls, ensure_ascii=False),
                                       "tool_calls")
        for key in ("tool_call_id", "name"):
            if message.get(key) is not None:
                setattr(m, key, encode_text(message[key], key))
        with self._exclusive() as h:
            _lib.check(_lib.lib.parley_chat_append_message(h, byref(m)))

    def set_tools(self, tools: Sequence[dict[str, Any]] | str | None) -> None:
        """Tool definitions (JSON schemas as transformers takes them) for the following turns;
        None removes them. A reply that calls a tool is stored with "tool_calls" (see messages)."""
        data = None
        if tools is not None:
            data = encode_text(tools if isinstance(tools, str) else json.dumps(list(tools), ensure_ascii=False),
                               "tools")
        with self._exclusive() as h:
            _lib.check(_lib.lib.parley_chat_set_tools(h, data))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The conversation: [{"role": ..., "content": ...}, ...], with "tool_calls"
        (parsed JSON), "tool_call_id" and "name" where a message has them."""
        out = []
        with self._exclusive() as h:
            n = c_size_t()
            _lib.check(_lib.lib.parley_chat_message_count(h, byref(n)))
            for i in range(n.value):
                role, content = c_int32(), c_char_p()
                _lib.check(_lib.lib.parley_chat_message(h, i, byref(role), byref(content)))
                m: dict[str, Any] = {
                    "role": _ROLE_NAMES.get(role.value, str(role.value)),
                    "content": decode_text(content.value or b""),
                }
                calls, call_id, name = c_char_p(), c_char_p(), c_char_p()
                _lib.check(_lib.lib.parley_chat_tool_calls(h, i, byref(calls), byref(call_id), byref(name)))
                if calls.value is not None:
                    m["tool_calls"] = json.loads(decode_text(calls.value))
                if call_id.value is not None:
                    m["tool_call_id"] = decode_text(call_id.value)
                if name.value is not None:
                    m["name"] = decode_text(name.value)
                out.append(m)
        return out

    def reset(self) -> None:
        """Drop every message after the system prompt (the KV cache is kept for reuse)."""
        with self._exclusive() as h:
            _lib.check(_lib.lib.parley_chat_reset(h))

    @property
    def stats(self) -> dict[str, int]:
        """Counters of the last turn (parley_chat_stats)."""
        s = _lib.new(_lib.ChatStats)
        with self._exclusive() as h:
            _lib.check(_lib.lib.parley_chat_stats_get(h, byref(s)))
        return {name: getattr(s, name) for name, _ in _lib.ChatStats._fields_ if name != "struct_size"}

    @classmethod
    def restore(cls, model: Model, data: bytes, *, context: str = "error") -> "Chat":
        """A new chat holding a conversation saved by ``save()``."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        return cls(model, context=context, _saved=bytes(data))

    def save(self, *, kv: bool = False) -> bytes:
        """The conversation as bytes (messages, version, checksum).

        With ``kv=True`` also the K/V of its leading full blocks that the
        serving engine's cache holds (parley_chat_session_save_kv): a restore
        into the same model file, here or in another process, continues
        without recomputing them.
        """
        data = c_void_p()
        size = ctypes.c_size_t()
        fn = _lib.lib.parley_chat_session_save_kv if kv else _lib.lib.parley_chat_session_save
        with self._exclusive() as h:
            _lib.check(fn(h, byref(data), byref(size)))
        try:
            return ctypes.string_at(data, size.value)
        finally:
            _lib.lib.parley_string_free(data)

    # ------------------------------------------------------------ replies

    def _options(self, stop: str | Sequence[str] | None, options: Mapping[str, Any], where: str):
        """parley_chat_options (+ the objects its pointers need kept alive)."""
        copts = _lib.new(_lib.ChatOptions)
        _lib.check(_lib.lib.parley_chat_options_defaults(byref(copts)))
        copts.context_policy = self._context_policy
        keep: list[Any] = []
        check_generation_keys(options, where)
        if any(v is not None for v in options.values()):
            with self._model._use() as mh:
                gopts = generation_options(mh, options, where)
            keep.append(gopts)
            copts.generation = ctypes.pointer(gopts)
        if stop is not None:
            stops = [stop] if isinstance(stop, (str, bytes)) else list(stop)
            if stops:
                arr = cstring_array([encode_text(s, f"stop[{i}]") for i, s in enumerate(stops)])
                keep.append(arr)
                copts.stop_strings = ctypes.cast(arr, POINTER(c_char_p))
                copts.num_stop_strings = len(stops)
        return copts, keep

    def say(
        self,
        text: str | None = None,
        *,
        stop: str | Sequence[str] | None = None,
        on_text: Callable[[str], Any] | None = None,
        generation: GenerationOptions | None = None,
        **options: Unpack[GenerationKwargs],
    ) -> str:
        """Append `text` as a user message (unless None) and return the assistant's reply.

        Options as Model.generate() (max_new_tokens, do_sample, temperature,
        top_k, top_p, min_p, repetition_penalty, seed, ...; None: the model's
        default; num_beams must be 1). ``stop``: the reply ends before the
        first of these strings. ``on_text(piece)`` receives the reply as it is
        generated; a true return value ends the reply there, an exception
        cancels it (the conversation keeps no reply) and is re-raised.
        Raises CancelledError when cancel() was called.
        """
        options = merge(generation, options)  # type: ignore[assignment]
        data = None if text is None else encode_text(text, "text")
        with self._exclusive() as h:
            copts, keep = self._options(stop, options, "say()")
            if data is not None:
                _lib.check(_lib.lib.parley_chat_append(h, _lib.ROLE_USER, data))
            turn = _Turn(h, on_text)
            self._turn = turn
            try:
                return turn.run(copts)
            finally:
                self._turn = None
                del keep

    def stream(
        self,
        text: str | None = None,
        *,
        stop: str | Sequence[str] | None = None,
        buffer: int = 16,
        generation: GenerationOptions | None = None,
        **options: Unpack[GenerationKwargs],
    ) -> "ChatStream":
        """Like say(), but returns an iterator over the reply's text pieces as they are generated.

        The reply is generated on a worker thread, at most ``buffer`` pieces
        ahead of the consumer (it waits for the consumer beyond that). Errors
        (CancelledError after cancel(), ...) are raised by the iterator.
        Closing the iterator (``close()``, leaving a ``with`` block, or
        dropping it) before the end cancels the reply; the conversation then
        keeps no reply (the user message stays: call ``stream()`` or ``say()``
        without text to retry).
        """
        options = merge(generation, options)  # type: ignore[assignment]
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise InvalidArgumentError(f"buffer must be an int >= 1, got {buffer!r}")
        data = None if text is None else encode_text(text, "text")
        if self._guard is None:
            raise ClosedError("Chat is closed")
        if not self._busy.acquire(blocking=False):
            raise BusyError("Chat is busy: a reply is being generated (finish or close the stream first)")
        try:
            h = self._guard.acquire()
            try:
                copts, keep = self._options(stop, options, "stream()")
                if data is not None:
                    _lib.check(_lib.lib.parley_chat_append(h, _lib.ROLE_USER, data))
                return ChatStream(self, h, copts, keep, buffer)
            except BaseException:
                self._guard.release()
                raise
        except BaseException:
            self._busy.release()
            raise

    def cancel(self) -> None:
        """Ask the reply in progress (say() or a stream, on another thread) to stop; it raises CancelledError.

        A no-op when no reply is running or the chat is closed.
        """
        turn = self._turn
        if turn is not None:
            turn.request_stop()
        req = self._request
        if req is not None:
            req.cancel()

    # ------------------------------------------------------------ asyncio

    def _submit_async(
        self, text: str | None, stop, deadline: float | None, options: Mapping[str, Any], where: str, on_text=None,
        return_logprobs: Any = False, alternatives: Any = 0
    ) -> AsyncRequest:
        """Append `text` and submit the turn (parley_chat_submit); the request holds the chat until freed."""
        if isinstance(alternatives, bool) or not isinstance(alternatives, int):
            raise TypeError(f"alternatives must be an int (0 <= k <= {_lib.MAX_ALTERNATIVES}), not {alternatives!r}")
        if not 0 <= alternatives <= _lib.MAX_ALTERNATIVES:
            raise InvalidArgumentError(f"alternatives must be in [0, {_lib.MAX_ALTERNATIVES}], got {alternatives}")
        loop = asyncio.get_running_loop()
        data = None if text is None else encode_text(text, "text")
        if self._guard is None:
            raise ClosedError("Chat is closed")
        if not self._busy.acquire(blocking=False):
            raise BusyError("Chat is busy: a reply is being generated (finish or close the stream first)")
        try:
            h = self._guard.acquire()
        except BaseException:
            self._busy.release()
            raise
        guard, busy = self._guard, self._busy

        model = self._model

        def release() -> None:
            model._untrack_request(req)
            self._request = None
            guard.release()
            busy.release()

        try:
            copts, keep = self._options(stop, options, where)
            if on_text is not None:
                if return_logprobs or alternatives:
                    scored = _PieceScores(bool(return_logprobs), alternatives)
                    fn = _lib.TEXT_FN(lambda _u, ptr, n: on_text(scored.piece(decode_text(ctypes.string_at(ptr, n))))
                                      or 0)
                else:
                    fn = _lib.TEXT_FN(lambda _u, ptr, n: on_text(decode_text(ctypes.string_at(ptr, n))) or 0)
                keep.append(fn)
                copts.on_text = fn
            if data is not None:
                _lib.check(_lib.lib.parley_chat_append(h, _lib.ROLE_USER, data))
        except BaseException:
            release()
            raise
        req = AsyncRequest(loop, release, keep)
        self._request = req
        try:
            model._track_request(req)  # Model.close() frees it before closing this chat
        except BaseException:
            req._abandon()
            raise
        req.submit(lambda ro, out: _lib.lib.parley_chat_submit(h, byref(copts), ro, out), deadline,
                   bool(return_logprobs), alternatives)
        return req

    async def say_async(
        self,
        text: str | None = None,
        *,
        stop: str | Sequence[str] | None = None,
        deadline: float | None = None,
        return_logprobs: bool = False,
        alternatives: int = 0,
        generation: GenerationOptions | None = None,
        **options: Unpack[GenerationKwargs],
    ) -> str:
        """``await chat.say_async(text)``: say() without blocking the event loop.

        The turn runs in libparley (parley_chat_submit: it holds no thread while
        the serving engine computes it); the engine batches it with every other
        turn of the model.
        ``deadline`` (seconds): the turn stops with DeadlineError after it.
        Cancelling the awaiting task cancels the turn (the conversation then
        keeps no reply; the user message stays). Raises BusyError while
        another reply of this chat runs. ``return_logprobs=True`` or
        ``alternatives=k`` (k <= 32): the reply is a Reply (a str) that also
        holds the generated token ids and their scores.
        """
        options = merge(generation, options)  # type: ignore[assignment]
        await self._after_cancelled_turn()
        req = self._submit_async(text, stop, deadline, options, "say_async()", None, return_logprobs, alternatives)
        return await run(req, _reply_taker(return_logprobs, alternatives))

    def _cancelled_turn(self) -> AsyncRequest | None:
        """The async turn this chat still runs although it was cancelled (a stream left with a
        plain ``break``), when it runs on this event loop: the next turn waits for it to end
        instead of failing with BusyError."""
        req = self._request
        if req is None or not req.cancelled_running:
            return None
        try:
            return req if req.loop is asyncio.get_running_loop() else None
        except RuntimeError:
            return None

    async def _after_cancelled_turn(self) -> None:
        req = self._cancelled_turn()
        if req is not None:
            await asyncio.shield(req.done)  # its completion frees it (and the chat) before waiters resume

    def stream_async(
        self,
        text: str | None = None,
        *,
        stop: str | Sequence[str] | None = None,
        deadline: float | None = None,
        return_logprobs: bool = False,
        alternatives: int = 0,
        generation: GenerationOptions | None = None,
        **options: Unpack[GenerationKwargs],
    ) -> "AsyncChatStream":
        """``async for piece in chat.stream_async(text)``: the reply's text pieces as they are generated.

        Must be called from a running event loop. After the last piece the
        stream's ``reply`` holds the whole reply (a Reply with the token
        scores when ``return_logprobs`` / ``alternatives`` ask for them, as
        say_async). With scores, each piece is a Reply too, holding the
        tokens whose text it completes (those of no earlier piece; possibly
        none): a token whose text is held back (it may begin a stop string,
        or ends inside a character) comes with a later piece, and what no
        piece holds (an EOS token, tokens a stop string cut) only with
        ``reply``. Leaving early (``aclose()``, ``async with``, cancelling
        the task) cancels the turn.
        """
        options = merge(generation, options)  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def on_text(piece: str) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, piece)
            except RuntimeError:  # the loop is closed: nobody is listening
                pass

        def submit() -> AsyncRequest:
            return self._submit_async(text, stop, deadline, options, "stream_async()", on_text, return_logprobs,
                                      alternatives)

        take = _reply_taker(return_logprobs, alternatives)
        if self._cancelled_turn() is None:
            return AsyncChatStream(submit(), q, take)

        async def start() -> AsyncRequest:  # after the cancelled turn, at the first piece asked for
            await self._after_cancelled_turn()
            return submit()

        return AsyncChatStream(None, q, take, start)


class _PieceScores:
    """Inside a scored stream's on_text: the piece as a Reply holding the
    tokens its text completes (parley_request_reply_progress), those no
    earlier piece held."""

    def __init__(self, logprobs: bool, alternatives: int):
        self.logprobs, self.alternatives = logprobs, alternatives
        self.sent = 0  # tokens that earlier pieces held

    def piece(self, text: str) -> "Reply":
        p = _lib.ReplyProgress()
        p.struct_size = ctypes.sizeof(p)
        if _lib.lib.parley_request_reply_progress(None, byref(p)) != _lib.OK:
            # Cannot happen inside on_text; should it, these tokens come
            # with a later piece or with the reply instead of being lost.
            return Reply(text, [], [] if self.logprobs else None, [] if self.alternatives else None)
        begin, end = self.sent, max(self.sent, p.tokens)
        self.sent = end
        tokens = p.token_ids[begin:end] if end > begin else []
        lps = (p.logprobs[begin:end] if end > begin and p.logprobs else []) if self.logprobs else None
        alts = None
        if self.alternatives:
            k = p.alternatives
            ids = p.alternative_ids[begin * k : end * k] if k and end > begin else []
            lp = p.alternative_logprobs[begin * k : end * k] if k and end > begin else []
            alts = [list(zip(ids[i * k : (i + 1) * k], lp[i * k : (i + 1) * k])) for i in range(end - begin)]
        return Reply(text, tokens, lps, alts)


def _take_reply(handle: int) -> str:
    out = c_void_p()
    _lib.check(_lib.lib.parley_request_take_reply(handle, byref(out)))
    try:
        return decode_text(ctypes.string_at(out.value)) if out.value else ""
    finally:
        _lib.lib.parley_string_free(out.value)


def _reply_taker(return_logprobs: Any, alternatives: int) -> Callable[[int], str]:
    if not return_logprobs and not alternatives:
        return _take_reply

    def take(handle: int) -> str:
        text = _take_reply(handle)
        ids, n = POINTER(c_int32)(), c_size_t()
        _lib.check(_lib.lib.parley_request_reply_tokens(handle, byref(ids), byref(n)))
        tokens = ids[: n.value] if n.value else []
        lps = None
        if return_logprobs:
            lp, m = POINTER(ctypes.c_float)(), c_size_t()
            _lib.check(_lib.lib.parley_request_reply_logprobs(handle, byref(lp), byref(m)))
            lps = lp[: m.value] if m.value else []
        alts = None
        if alternatives:
            aids, alps, steps, k = POINTER(c_int32)(), POINTER(ctypes.c_float)(), c_size_t(), c_size_t()
            _lib.check(_lib.lib.parley_request_reply_alternatives(handle, byref(aids), byref(alps), byref(steps),
                                                                   byref(k)))
            t, kk = steps.value, k.value
            fi = aids[: t * kk] if t * kk else []
            fl = alps[: t * kk] if t * kk else []
            alts = [list(zip(fi[i * kk : (i + 1) * kk], fl[i * kk : (i + 1) * kk])) for i in range(t)]
        return Reply(text, tokens, lps, alts)

    return take


class AsyncChatStream(AsyncStream):
    """Async iterator over the text pieces of one reply (Chat.stream_async); ``reply`` after the end."""

    @property
    def reply(self) -> str | None:
        return self.result


_DONE = object()


def _make_sink(turn: _Turn, q: queue.SimpleQueue, credits: threading.Semaphore) -> Callable[[str], bool]:
    def sink(piece: str) -> bool:
        credits.acquire()  # request_stop() releases it too, so a stop never waits for the consumer
        if turn.stop:
            return True
        q.put(piece)
        return False

    return sink


def _stream_worker(turn: _Turn, options, keep, q: queue.SimpleQueue, chat: Chat, guard: HandleGuard, busy) -> None:
    result: Any
    try:
        result = turn.run(options)
        ok = True
    except BaseException as e:
        result, ok = e, False
    finally:
        chat._turn = None
        guard.release()
        busy.release()
    q.put((_DONE, ok, result))


class ChatStream(Closable):
    """Iterator over the text pieces of one streamed reply (see Chat.stream).

    After the last piece, ``reply`` holds the whole reply and ``text`` what was yielded.
    """

    def __init__(self, chat: Chat, handle: int, options, keep, buffer: int):
        self._chat = chat  # keeps the Chat (and its Model) alive while the stream exists
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._pieces: list[str] = []
        self._done = False
        self.reply: str | None = None
        # At most `buffer` pieces wait in the queue: the worker takes a credit
        # per piece, the consumer gives one back per piece it takes.
        self._credits = threading.Semaphore(buffer)
        turn = _Turn(handle, None)
        turn.sink = _make_sink(turn, self._q, self._credits)
        turn.wake = self._credits.release
        self._turn = turn
        chat._turn = turn
        # The worker holds no reference to this object, so dropping the
        # iterator lets __del__ cancel the reply.
        self._thread = threading.Thread(
            target=_stream_worker,
            args=(turn, options, keep, self._q, chat, chat._guard, chat._busy),
            name="parley-chat-stream",
            daemon=True,
        )
        self._thread.start()

    @property
    def text(self) -> str:
        return "".join(self._pieces)

    def __iter__(self) -> "ChatStream":
        return self

    def __next__(self) -> str:
        if self._done:
            raise StopIteration
        try:
            item = self._q.get()
        except BaseException:  # e.g. KeyboardInterrupt while waiting
            self.close()
            raise
        if isinstance(item, tuple) and item and item[0] is _DONE:
            self._done = True
            self._thread.join()
            _, ok, result = item
            if not ok:
                raise result
            self.reply = result
            raise StopIteration
        self._credits.release()
        self._pieces.append(item)
        return item

    def close(self) -> None:
        """Cancel the reply if it is still running and wait for the worker to end."""
        if self._done:
            return
        self._done = True
        self._turn.request_stop()
        if self._thread is not threading.current_thread():
            self._thread.join()
