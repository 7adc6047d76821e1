"""Ownership of C handles: use-counting so that close() never frees a handle in use."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from .errors import ClosedError, BusyError


class HandleGuard:
    """Owns one C handle and frees it exactly once.

    ``use()`` lends the handle for the duration of a C call (any number of
    threads at once); ``close()`` makes new uses fail with ClosedError, waits
    for the uses in progress to end, then frees the handle. ``acquire()`` /
    ``release()`` lend it across threads (a stream's worker thread).
    """

    def __init__(self, handle: int, free: Callable[[int], None], what: str):
        self._handle: int | None = handle
        self._free = free
        self._what = what
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._threads: dict[int, int] = {}  # thread id -> uses held through use()

    @property
    def closed(self) -> bool:
        return self._handle is None

    def acquire(self) -> int:
        with self._cond:
            if self._handle is None:
                raise ClosedError(f"{self._what} is closed")
            self._active += 1
            return self._handle

    def release(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active == 0:
                self._cond.notify_all()

    @contextmanager
    def use(self) -> Iterator[int]:
        h = self.acquire()
        me = threading.get_ident()
        with self._cond:
            self._threads[me] = self._threads.get(me, 0) + 1
        try:
            yield h
        finally:
            with self._cond:
                n = self._threads[me] - 1
                if n:
                    self._threads[me] = n
                else:
                    del self._threads[me]
            self.release()

    def with_handle(self, fn: Callable[[int], None]) -> bool:
        """Call fn(handle) under the guard's lock (it cannot be freed meanwhile); False when closed."""
        with self._cond:
            if self._handle is None:
                return False
            fn(self._handle)
            return True

    def in_call_here(self) -> bool:
        """Whether this thread is inside one of the handle's calls (e.g. in its callback)."""
        with self._cond:
            return bool(self._threads.get(threading.get_ident()))

    def close(self, before_wait: Callable[[int], None] | None = None) -> None:
        with self._cond:
            h = self._handle
            if h is None:
                return
            if self._threads.get(threading.get_ident()):
                raise BusyError(f"{self._what} cannot be closed from inside one of its own calls (a callback)")
            self._handle = None
            if before_wait is not None:
                before_wait(h)
            while self._active:
                self._cond.wait()
            self._free(h)


class Closable:
    """Context manager and finaliser around the subclass's close()."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
