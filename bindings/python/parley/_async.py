"""asyncio on top of the C request API (parley_*_submit, parley_request_*).

Each submitted request starts on a libparley request worker thread (a chat
turn or generation through the serving engine gives it back while it waits
for the engine, and goes on on a resume thread). Its
completion callback and streaming callbacks run on the model's serving
engine thread (between its steps; on the worker without an engine); they
only hand their data to the event loop with loop.call_soon_threadsafe, since
a callback holds up every request of the model while it runs. The request's
result is taken and the request freed on the event loop's thread, after the
completion has arrived there (parley_request_free then joins a worker that
has already returned from the callback, so it does not block the loop).

The ctypes callback objects, and every ctypes object a submission pointed
at, are kept by the AsyncRequest until parley_request_free has returned:
after that no libparley thread can call or read them.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from ctypes import byref, c_void_p
from typing import Any, Awaitable, Callable

from . import _lib
from .errors import ClosedError

# Requests not yet freed: they keep themselves (and so their ctypes
# callbacks) alive even when no coroutine refers to them any more (a
# cancelled task whose request still has to end before it can be freed).
_live: set["AsyncRequest"] = set()
_live_lock = threading.Lock()


class AsyncRequest:
    """One parley_request bound to an event loop.

    ``release`` gives back what the submission borrowed (handle guards, a
    chat's busy lock); it runs exactly once, when the request is freed.
    ``on_done`` (optional) runs on the loop thread when the request has
    finished, before anyone awaiting ``done`` resumes.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, release: Callable[[], None], keep: list[Any]):
        self.loop = loop
        self.done = loop.create_future()  # result: the request's parley_status
        self.on_done: Callable[[int], None] | None = None
        self._release = release
        self._keep = keep
        self._lock = threading.RLock()  # serialises C calls on the handle with free()
        self._handle: int | None = None
        self._freed = False
        self._free_when_done = False
        self._cancel_requested = False
        self.status: int | None = None
        self.c_complete = _lib.REQUEST_FN(self._on_complete)
        with _live_lock:
            _live.add(self)

    # -------------------------------------------------- worker thread side

    def _on_complete(self, _user, _request, status) -> None:
        try:
            self.loop.call_soon_threadsafe(self._completed, int(status))
        except RuntimeError:
            pass  # the loop is closed: the request is freed by close() of its owner, or at exit

    # ---------------------------------------------------- loop thread side

    def _completed(self, status: int) -> None:
        self.status = status
        if self.on_done is not None:
            self.on_done(status)
        if not self.done.done():
            self.done.set_result(status)
        if self._free_when_done:
            self.free()

    def submit(self, call: Callable[[Any, Any], int], deadline: float | None = None, logprobs: bool = False,
               alternatives: int = 0) -> None:
        """call(byref(request_options), byref(out_handle)) -> status; raises on a refused submission.

        ``logprobs`` / ``alternatives`` (chat requests): parley_request_options.return_logprobs / num_alternatives.
        """
        ro = _lib.new(_lib.RequestOptions)
        _lib.check(_lib.lib.parley_request_options_defaults(byref(ro)))
        ro.on_complete = self.c_complete
        if deadline is not None:
            if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not deadline > 0:
                self._abandon()
                raise ValueError(f"deadline must be a number of seconds > 0, got {deadline!r}")
            # inf, or one past what int64 milliseconds hold (ctypes would wrap it): no deadline.
            ro.deadline_ms = max(1, round(deadline * 1000)) if deadline < 2**62 / 1000 else 0
        ro.return_logprobs = 1 if logprobs else 0
        ro.num_alternatives = alternatives
        out = c_void_p()
        try:
            status = call(byref(ro), byref(out))
        except BaseException:
            self._abandon()
            raise
        if status != _lib.OK:
            err = _lib.make_error(status)
            self._abandon()
            raise err
        with self._lock:
            self._handle = out.value

    def _abandon(self) -> None:
        """A submission that did not happen: give back what it borrowed."""
        with self._lock:
            self._freed = True
        self._release()
        with _live_lock:
            _live.discard(self)

    def _abandon_silently(self) -> None:
        """Never submitted and nothing borrowed: just forget it."""
        with self._lock:
            self._freed = True
        with _live_lock:
            _live.discard(self)

    def with_handle(self, fn: Callable[[int], Any]) -> Any:
        """fn(handle) while the request cannot be freed; ClosedError once it was (its owner closed)."""
        with self._lock:
            if self._freed or self._handle is None:
                raise ClosedError("the request was ended by closing its chat or model")
            return fn(self._handle)

    def cancel(self) -> None:
        with self._lock:
            self._cancel_requested = True
            if not self._freed and self._handle is not None:
                _lib.lib.parley_request_cancel(self._handle)

    def free(self) -> None:
        """Free the C request (cancelled and joined if still running) and give back what it borrowed. Idempotent."""
        with self._lock:
            if self._freed:
                return
            self._freed = True
            h, self._handle = self._handle, None
            if h is not None:
                _lib.lib.parley_request_free(h)
        self._keep = None
        self._release()
        with _live_lock:
            _live.discard(self)

    @property
    def cancelled_running(self) -> bool:
        """Cancelled and not freed yet: it ends by itself, soon (at the engine's next step)."""
        return self._cancel_requested and not self._freed

    def free_when_done(self) -> None:
        """Cancel, and free once the completion has reached the loop (never blocks the loop)."""
        self.cancel()
        if self.status is not None:
            self.free()
        else:
            self._free_when_done = True

    async def wait(self) -> int:
        """The request's status once finished. Cancelling the awaiting task cancels the request."""
        try:
            return await asyncio.shield(self.done)
        except asyncio.CancelledError:
            self.free_when_done()
            raise


async def run(request: AsyncRequest, take: Callable[[int], Any]) -> Any:
    """Await the request, then take its result with take(handle) (which raises its error) and free it."""
    try:
        await request.wait()
        return request.with_handle(take)
    finally:
        if request.status is not None:
            request.free()


def _end_live_requests() -> None:
    """At interpreter exit: cancel and free every request still unfreed.

    Otherwise the interpreter frees their ctypes callbacks with this module
    while libparley threads may still call them (a program that ends, or
    fails, with requests in flight). parley_request_free joins each worker;
    a callback still due runs meanwhile (the call releases the GIL).
    """
    with _live_lock:
        live = list(_live)
    for r in live:
        r.cancel()
    for r in live:
        try:
            r.free()
        except Exception:  # noqa: BLE001  (exit goes on; the others must still be freed)
            pass


atexit.register(_end_live_requests)

_END = object()


class AsyncStream:
    """Async iterator over what a request streams; after the end, ``result`` holds its result.

    Created by Chat.stream_async and Model.translate_stream_async. Leaving it
    early (``aclose()``, ``async with``, or cancelling the task that iterates)
    cancels the request. Pieces are queued on the event loop as they come
    (no back-pressure: a slow consumer lets them accumulate).
    """

    def __init__(self, request: AsyncRequest | None, queue: asyncio.Queue, take: Callable[[int], Any],
                 start: Callable[[], Awaitable[AsyncRequest]] | None = None):
        """``request`` submitted already, or None and ``start`` submits it at the first ``__anext__``."""
        self._req = request
        self._start = start
        self._q = queue
        self._take = take
        self._finished = False
        self.result: Any = None
        if request is not None:
            request.on_done = lambda _status: queue.put_nowait(_END)

    def __aiter__(self) -> "AsyncStream":
        return self

    async def __anext__(self) -> Any:
        if self._finished:
            raise StopAsyncIteration
        if self._req is None:
            try:
                self._req = await self._start()  # type: ignore[misc]
            except BaseException:
                self._finished = True
                raise
            self._req.on_done = lambda _status: self._q.put_nowait(_END)
        try:
            item = await self._q.get()
        except asyncio.CancelledError:
            self._finished = True
            self._req.free_when_done()
            raise
        if item is _END:
            self._finished = True
            try:
                self.result = self._req.with_handle(self._take)
            finally:
                self._req.free()
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Cancel the request if it still runs and wait for it to end."""
        if self._finished:
            return
        self._finished = True
        if self._req is None:  # never started
            return
        self._req.cancel()
        try:
            await self._req.wait()
        finally:
            self._req.free()

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Dropped unfinished (a plain ``break`` out of ``async for``): cancel
        # now, not when the loop gets to it, and free it once it has ended.
        if not self._finished and self._req is not None:
            try:
                self._req.cancel()
                self._req.loop.call_soon_threadsafe(self._req.free_when_done)
            except Exception:
                pass
