"""Parley: Transformer translation and dialogue inference — Python binding.

A thin ctypes layer over libparley's C API (include/parley/parley.h). The
library is the one bundled with the package (the wheel, PyPI name
parley-runtime: parley/_native/libparley.so.0), else the PARLEY_LIBRARY
environment variable (the full path of libparley.so), else
ctypes.util.find_library("parley"), else libparley.so.0 on the dynamic
loader's search path.

    import parley
    rt = parley.Runtime()
    model = parley.Model(rt, "opus-mt-de-en.parley")
    print(model.translate("Guten Morgen!").text)

    chat = parley.Chat(parley.Model(rt, "support-bot.parley"), system_prompt="You help customers.")
    for piece in chat.stream("My order has not arrived."):
        print(piece, end="", flush=True)

    # asyncio: say_async / stream_async, generate_async, translate_async,
    # translate_stream_async (each request on a libparley worker thread)
    reply = await chat.say_async("Thanks!")
    async for piece in chat.stream_async("Where is it now?"):
        print(piece, end="", flush=True)
"""

from __future__ import annotations

from . import _lib
from ._async import AsyncStream
from .chat import AsyncChatStream, Chat, ChatStream, Reply
from . import errors as _errors
from .errors import *  # noqa: F401,F403  (one exception class per parley_status)
from .model import (
    Hypothesis,
    Model,
    ModelInfo,
    ProtectedSpan,
    ScoredTarget,
    TokenizerInfo,
    Translation,
    TranslationHypothesis,
    TranslationUpdate,
)
from .options import GenerationOptions
from .runtime import DeviceInfo, KernelInfo, PluginInfo, Runtime

__version__ = "0.1.0"

#: Version of the loaded libparley, e.g. "0.1.0".
library_version: str = _lib.version_string
#: Path (or name) libparley was loaded from.
library_path: str = _lib.library_path

__all__ = [
    "Runtime",
    "Model",
    "GenerationOptions",
    "Chat",
    "ChatStream",
    "Reply",
    "AsyncChatStream",
    "AsyncStream",
    "ModelInfo",
    "TokenizerInfo",
    "PluginInfo",
    "DeviceInfo",
    "KernelInfo",
    "Hypothesis",
    "ScoredTarget",
    "Translation",
    "TranslationHypothesis",
    "ProtectedSpan",
    "TranslationUpdate",
    "library_version",
    "library_path",
] + _errors.__all__
