"""Exceptions raised by the Parley binding: one class per ``parley_status``."""

from __future__ import annotations

__all__ = [
    "ParleyError",
    "InvalidArgumentError",
    "OutOfMemoryError",
    "ParleyIOError",
    "InvalidModelError",
    "UnsupportedVersionError",
    "ChecksumError",
    "NotFoundError",
    "PluginError",
    "DeviceError",
    "UnsupportedError",
    "InternalError",
    "CancelledError",
    "ClosedError",
    "BusyError",
    "DeadlineError",
]


class ParleyError(Exception):
    """A Parley call failed.

    ``status`` is the ``parley_status`` value, ``status_name`` its C name
    (e.g. ``"PARLEY_ERROR_INVALID_MODEL"``) and ``message`` the detailed text
    of ``parley_last_error()``.
    """

    status: int = -1
    status_name: str = "PARLEY_ERROR_UNKNOWN"

    def __init__(self, message: str, status: int | None = None, status_name: str | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if status_name is not None:
            self.status_name = status_name

    def __str__(self) -> str:
        return f"{self.message} [{self.status_name}]" if self.message else self.status_name


class InvalidArgumentError(ParleyError, ValueError):
    """PARLEY_ERROR_INVALID_ARGUMENT: a bad argument, option or input text."""

    status, status_name = 1, "PARLEY_ERROR_INVALID_ARGUMENT"


class OutOfMemoryError(ParleyError, MemoryError):
    """PARLEY_ERROR_OUT_OF_MEMORY."""

    status, status_name = 2, "PARLEY_ERROR_OUT_OF_MEMORY"


class ParleyIOError(ParleyError, OSError):
    """PARLEY_ERROR_IO: a file could not be opened, read or mapped."""

    status, status_name = 3, "PARLEY_ERROR_IO"


class InvalidModelError(ParleyError):
    """PARLEY_ERROR_INVALID_MODEL: the model file is malformed."""

    status, status_name = 4, "PARLEY_ERROR_INVALID_MODEL"


class UnsupportedVersionError(ParleyError):
    """PARLEY_ERROR_UNSUPPORTED_VERSION: a model format version this library cannot read."""

    status, status_name = 5, "PARLEY_ERROR_UNSUPPORTED_VERSION"


class ChecksumError(ParleyError):
    """PARLEY_ERROR_CHECKSUM: a tensor checksum does not match."""

    status, status_name = 6, "PARLEY_ERROR_CHECKSUM"


class NotFoundError(ParleyError, LookupError):
    """PARLEY_ERROR_NOT_FOUND: no such tensor, key, plugin, device, kernel or language."""

    status, status_name = 7, "PARLEY_ERROR_NOT_FOUND"


class PluginError(ParleyError):
    """PARLEY_ERROR_PLUGIN: a plugin could not be loaded or was refused."""

    status, status_name = 8, "PARLEY_ERROR_PLUGIN"


class DeviceError(ParleyError):
    """PARLEY_ERROR_DEVICE: a device is missing or unusable."""

    status, status_name = 9, "PARLEY_ERROR_DEVICE"


class UnsupportedError(ParleyError):
    """PARLEY_ERROR_UNSUPPORTED: a valid request this build or model cannot serve."""

    status, status_name = 10, "PARLEY_ERROR_UNSUPPORTED"


class InternalError(ParleyError):
    """PARLEY_ERROR_INTERNAL: a bug in Parley."""

    status, status_name = 11, "PARLEY_ERROR_INTERNAL"


class CancelledError(ParleyError):
    """PARLEY_ERROR_CANCELLED: the request was cancelled (Chat.cancel)."""

    status, status_name = 12, "PARLEY_ERROR_CANCELLED"


class ClosedError(InvalidArgumentError):
    """The object (Runtime, Model, Chat) was closed; its C handle is gone.

    Raised by the binding itself (the C API would see a NULL handle, hence the
    InvalidArgumentError base).
    """


class BusyError(ParleyError, RuntimeError):
    """PARLEY_ERROR_BUSY: a Chat is already in use (a say() or stream() in
    progress, or a call from its own on_text callback): one call at a time per
    session. The binding raises it itself before calling, and maps the C
    library's PARLEY_ERROR_BUSY to it."""

    status, status_name = 13, "PARLEY_ERROR_BUSY"


class DeadlineError(ParleyError, TimeoutError):
    """PARLEY_ERROR_TIMEOUT: the request's deadline passed before it finished."""

    status, status_name = 14, "PARLEY_ERROR_TIMEOUT"


_BY_STATUS: dict[int, type[ParleyError]] = {
    cls.status: cls
    for cls in (
        InvalidArgumentError,
        OutOfMemoryError,
        ParleyIOError,
        InvalidModelError,
        UnsupportedVersionError,
        ChecksumError,
        NotFoundError,
        PluginError,
        DeviceError,
        UnsupportedError,
        InternalError,
        CancelledError,
        DeadlineError,
        BusyError,
    )
}


def error_class(status: int) -> type[ParleyError]:
    """The exception class for a ``parley_status`` value (ParleyError for unknown ones)."""
    return _BY_STATUS.get(status, ParleyError)
