"""parley.Runtime: plugins, devices and kernels (parley_runtime_*)."""

from __future__ import annotations

import ctypes
import os
from ctypes import byref, c_size_t, c_void_p
from dataclasses import dataclass
from typing import Callable, Sequence

from . import _lib
from ._handle import Closable, HandleGuard
from ._marshal import cstring_array, encode_text, path_bytes
from .errors import InvalidArgumentError

__all__ = ["Runtime", "PluginInfo", "DeviceInfo", "KernelInfo"]

_SEVERITIES = {"debug": 0, "info": 1, "warning": 2, "error": 3}
_SEVERITY_NAMES = {v: k for k, v in _SEVERITIES.items()}
_DEVICE_KINDS = {0: "cpu", 1: "cuda", 2: "other"}


def _s(b: bytes | None) -> str:
    return b.decode("utf-8", "replace") if b else ""


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    path: str  # "" for built-in plugins
    abi_version: tuple[int, int]
    num_devices: int
    num_kernels: int


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    plugin: str
    kind: str  # "cpu", "cuda", "other"
    available: bool
    status: str  # "" when available, else why not


@dataclass(frozen=True)
class KernelInfo:
    op: str
    device: str
    dtype: str
    priority: int
    name: str
    plugin: str
    selected: bool

    @classmethod
    def _from(cls, k: _lib.KernelInfo) -> "KernelInfo":
        return cls(
            _s(k.op),
            _s(k.device),
            _s(_lib.lib.parley_dtype_name(k.dtype)),
            k.priority,
            _s(k.name),
            _s(k.plugin),
            bool(k.selected),
        )


_DTYPES = {"f32": 0, "f16": 1, "bf16": 2, "i8": 3, "i32": 4, "u8": 5, "i64": 6}


class Runtime(Closable):
    """A Parley runtime: thread pool, kernel registry and loaded plugins.

    ``threads``: kernel threads (0: one per available CPU). ``plugin_dirs``:
    extra folders searched first for ``libparley_*.so``.
    ``load_default_plugins``: also search beside libparley, PARLEY_PLUGIN_PATH
    and built-in plugins (``plugin_sources`` gives the PARLEY_PLUGINS_* flags
    directly instead). ``log_level``: "debug", "info", "warning" (default) or
    "error". ``log_callback(severity: str, message: str)`` receives log lines
    instead of stderr; it may be called from any thread, and exceptions it
    raises are ignored.
    """

    def __init__(
        self,
        threads: int = 0,
        plugin_dirs: Sequence[str | os.PathLike] | None = None,
        load_default_plugins: bool = True,
        *,
        plugin_sources: int | None = None,
        log_level: str = "warning",
        log_callback: Callable[[str, str], None] | None = None,
    ):
        self._guard: HandleGuard | None = None
        opts = _lib.new(_lib.RuntimeOptions)
        _lib.check(_lib.lib.parley_runtime_options_defaults(byref(opts)))
        if isinstance(threads, bool) or not isinstance(threads, int):
            raise TypeError("threads must be an int")
        if not -(2**31) <= threads < 2**31:
            raise InvalidArgumentError(f"threads out of range: {threads}")
        opts.num_threads = threads
        if plugin_sources is not None:
            if not 0 <= plugin_sources < 2**32:
                raise InvalidArgumentError(f"plugin_sources out of range: {plugin_sources}")
            opts.plugin_sources = plugin_sources
        else:
            opts.plugin_sources = _lib.PLUGINS_DEFAULT if load_default_plugins else _lib.PLUGINS_NONE
        if isinstance(plugin_dirs, (str, bytes, os.PathLike)):
            plugin_dirs = [plugin_dirs]
        dirs = [path_bytes(d) for d in (plugin_dirs or [])]
        dir_array = cstring_array(dirs)
        if dirs:
            opts.plugin_dirs = ctypes.cast(dir_array, ctypes.POINTER(ctypes.c_char_p))
            opts.num_plugin_dirs = len(dirs)
        if log_level not in _SEVERITIES:
            raise InvalidArgumentError(f"log_level must be one of {', '.join(_SEVERITIES)}, got {log_level!r}")
        opts.min_severity = _SEVERITIES[log_level]
        # The callback object must outlive every C object that may log through
        # it: the runtime and the models loaded from it (they keep plugins
        # alive). Models hold a reference to this Runtime, so it stays here
        # even after close().
        self._log_fn = None
        if log_callback is not None:
            if not callable(log_callback):
                raise TypeError("log_callback must be callable")

            def on_log(_user, severity, message, _cb=log_callback):
                try:
                    _cb(_SEVERITY_NAMES.get(severity, str(severity)), _s(message))
                except BaseException:  # never let an exception cross into C
                    pass

            self._log_fn = _lib.LOG_FN(on_log)
            opts.log_fn = self._log_fn
        handle = c_void_p()
        _lib.check(_lib.lib.parley_runtime_create(byref(opts), byref(handle)))
        self._guard = HandleGuard(handle.value, _lib.lib.parley_runtime_free, "Runtime")

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Free the runtime. Models loaded from it keep working (they keep what they need)."""
        if self._guard is not None:
            self._guard.close()

    @property
    def closed(self) -> bool:
        return self._guard is None or self._guard.closed

    def __repr__(self) -> str:
        return f"<parley.Runtime{' closed' if self.closed else ''}>"

    def _use(self):
        if self._guard is None:
            from .errors import ClosedError

            raise ClosedError("Runtime is closed")
        return self._guard.use()

    # ------------------------------------------------------------ plugins

    def load_plugin(self, path: str | os.PathLike) -> None:
        """Load one plugin library explicitly."""
        p = path_bytes(path)
        with self._use() as h:
            _lib.check(_lib.lib.parley_runtime_load_plugin(h, p))

    def _enumerate(self, count_fn, info_fn, struct_type, convert):
        out = []
        with self._use() as h:
            n = c_size_t()
            _lib.check(count_fn(h, byref(n)))
            for i in range(n.value):
                info = _lib.new(struct_type)
                _lib.check(info_fn(h, i, byref(info)))
                out.append(convert(info))
        return out

    def plugins(self) -> list[PluginInfo]:
        return self._enumerate(
            _lib.lib.parley_runtime_plugin_count,
            _lib.lib.parley_runtime_plugin_info,
            _lib.PluginInfo,
            lambda p: PluginInfo(
                _s(p.name),
                _s(p.version),
                _s(p.path),
                (p.abi_version >> 16, p.abi_version & 0xFFFF),
                p.num_devices,
                p.num_kernels,
            ),
        )

    def devices(self) -> list[DeviceInfo]:
        return self._enumerate(
            _lib.lib.parley_runtime_device_count,
            _lib.lib.parley_runtime_device_info,
            _lib.DeviceInfo,
            lambda d: DeviceInfo(
                _s(d.name), _s(d.plugin), _DEVICE_KINDS.get(d.kind, str(d.kind)), bool(d.available), _s(d.status)
            ),
        )

    def kernels(self) -> list[KernelInfo]:
        """Every registered kernel, selected or not."""
        return self._enumerate(
            _lib.lib.parley_runtime_kernel_count, _lib.lib.parley_runtime_kernel_info, _lib.KernelInfo, KernelInfo._from
        )

    def find_kernel(self, op: str, device: str = "cpu", dtype: str = "f32") -> KernelInfo:
        """The kernel that serves (op, device, dtype); NotFoundError if none does."""
        if dtype not in _DTYPES:
            raise InvalidArgumentError(f"unknown dtype {dtype!r}; known: {', '.join(_DTYPES)}")
        info = _lib.new(_lib.KernelInfo)
        with self._use() as h:
            _lib.check(
                _lib.lib.parley_runtime_find_kernel(
                    h, encode_text(op, "op"), encode_text(device, "device"), _DTYPES[dtype], byref(info)
                )
            )
        return KernelInfo._from(info)
