"""parley.Model: a loaded .parley file — info, tokenizer, generate, translate."""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
from ctypes import POINTER, byref, c_char_p, c_double, c_float, c_int32, c_int64, c_size_t, c_void_p
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Unpack, overload

from . import _lib
from ._async import AsyncRequest, AsyncStream, run
from ._handle import Closable, HandleGuard
from ._marshal import (
    IdBatch,
    cstring_array,
    decode_text,
    encode_text,
    generation_defaults,
    generation_dict,
    generation_options,
    ids_array,
    ids_list,
    opt_text,
    path_bytes,
)
from .errors import BusyError, ClosedError, InvalidArgumentError
from .options import GenerationKwargs, GenerationOptions, TranslationKwargs, merge
from .runtime import KernelInfo, Runtime

__all__ = [
    "Model",
    "ModelInfo",
    "TokenizerInfo",
    "Hypothesis",
    "Translation",
    "TranslationHypothesis",
    "TranslationUpdate",
]

_KINDS = {_lib.MODEL_DECODER_ONLY: "decoder-only", _lib.MODEL_ENCODER_DECODER: "encoder-decoder"}
_TOKENIZER_KINDS = {0: "sentencepiece", 1: "byte-level-bpe"}
_TOKENIZER_ROLES = {0: "shared", 1: "source", 2: "target"}


def _s(b: bytes | None) -> str:
    return b.decode("utf-8", "replace") if b else ""


@dataclass(frozen=True)
class ModelInfo:
    format_version: tuple[int, int]
    architecture: str
    kind: str  # "decoder-only" or "encoder-decoder"
    vocab_size: int
    num_tensors: int
    num_tokenizers: int
    num_metadata: int
    has_chat_template: bool
    file_size: int
    weights_size: int
    device: str


@dataclass(frozen=True)
class TokenizerInfo:
    kind: str  # "sentencepiece" or "byte-level-bpe"
    role: str  # "shared", "source" or "target"
    model_size: int
    num_special_tokens: int


@dataclass(frozen=True)
class Hypothesis:
    """One hypothesis of generate() / translate_tokens(): generated ids and score.

    ``logprobs``: per generated token, its log-probability, when requested
    (``return_logprobs=True``; docs/scores.md): greedy/sampling the terms
    ``score`` sums, beam search the terms of ``score * len(tokens) **
    length_penalty``. ``alternatives``: per generated token, the k best
    (token id, log-probability) pairs of that step, best first, when
    requested (``alternatives=k``, k <= 32).
    """

    tokens: list[int]
    score: float
    logprobs: list[float] | None = None
    #: With grammar= / json_schema=: True when the output is a complete
    #: sentence of the grammar (parses and validates), False when generation
    #: stopped before (max_new_tokens, on_token); None when unconstrained.
    complete: bool | None = None
    alternatives: list[list[tuple[int, float]]] | None = None


@dataclass(frozen=True)
class ScoredTarget:
    """One item of Model.score(): the scored target ids, the model's raw
    log-probability of each (teacher forcing) and their sum."""

    tokens: list[int]
    logprobs: list[float]
    score: float


@dataclass(frozen=True)
class TranslationUpdate:
    """One streamed step of Model.translate_stream_async: hypothesis ``hypothesis`` of text
    ``index`` so far (the whole text so far, not a delta); ``final`` for its final text."""

    index: int
    hypothesis: int
    text: str
    final: bool


@dataclass(frozen=True)
class TranslationHypothesis:
    text: str
    score: float
    tokens: list[int]  # target ids (generated, ending with EOS when finished on one)
    source_tokens: list[int]
    attention: list[list[float]] | None  # [len(tokens)][len(source_tokens)], when requested
    # Protected spans (translate(protect=..., glossary=..., protect_patterns=...)), in source order.
    protected: list[ProtectedSpan] = field(default_factory=list)
    # return_logprobs=True / alternatives=k: per token of `tokens` (as Hypothesis).
    logprobs: list[float] | None = None
    alternatives: list[list[tuple[int, float]]] | None = None
    # It used up max_new_tokens (or the decoder's positions): it may be cut short.
    cut_by_length: bool = False


_PROTECT_CLASSES = {"numbers": 1, "emails": 2, "urls": 4, "placeholders": 8, "markup": 16, "all": 31}
_PROTECT_KINDS = {1: "number", 2: "email", 4: "url", 8: "placeholder", 16: "markup", 256: "pattern", 512: "glossary"}
_PLACEMENTS = {0: "copied", 1: "aligned", 2: "positioned"}
_LONG_TEXT = {"error": 0, "split": 1, "sentences": 2}


@dataclass(frozen=True)
class ProtectedSpan:
    """A span kept verbatim through translation. Offsets are str indices
    (characters): ``source[source_start:source_end] == target[target_start:target_end] == text``."""

    kind: str  # number, email, url, placeholder, markup, pattern, glossary
    placement: str  # copied (the model kept its placeholder), aligned (by attention), positioned
    text: str
    source_start: int
    source_end: int
    target_start: int
    target_end: int


@dataclass(frozen=True)
class Translation:
    """The translation of one text: its hypotheses, best first.

    ``text``, ``score``, ``tokens`` and ``attention`` are those of the best hypothesis.
    """

    source_tokens: list[int]
    hypotheses: list[TranslationHypothesis] = field(repr=False)

    @property
    def best(self) -> TranslationHypothesis:
        return self.hypotheses[0]

    @property
    def text(self) -> str:
        return self.hypotheses[0].text

    @property
    def score(self) -> float:
        return self.hypotheses[0].score

    @property
    def tokens(self) -> list[int]:
        return self.hypotheses[0].tokens

    @property
    def attention(self) -> list[list[float]] | None:
        return self.hypotheses[0].attention

    @property
    def cut_by_length(self) -> bool:
        return self.hypotheses[0].cut_by_length

    def __str__(self) -> str:
        return self.text


class _TokenCallback:
    """A parley_token_fn around a Python callable; exceptions are kept, not passed to C."""

    def __init__(self, fn: Callable[[int, int, int], Any] | None):
        self.exc: BaseException | None = None
        self.fn = fn
        self.c = _lib.TOKEN_FN(self._call) if fn is not None else None

    def _call(self, _user, batch_index, sequence_index, token):
        if self.exc is not None:
            return 1
        try:
            return 1 if self.fn(batch_index, sequence_index, token) else 0
        except BaseException as e:  # KeyboardInterrupt too: stop, re-raise after the C call
            self.exc = e
            return 1

    def install(self, opts: _lib.GenerationOptions) -> None:
        if self.c is not None:
            opts.on_token = self.c

    def reraise(self) -> None:
        if self.exc is not None:
            exc, self.exc = self.exc, None
            raise exc


class Model(Closable):
    """A model loaded from a .parley file (memory-mapped).

    A mapped file must not be truncated or rewritten in place while the model
    is loaded: the process would die of SIGBUS on the next access. Pass
    ``read_into_memory=True`` to read the whole file into private memory
    instead (costs its size in RAM), when the file cannot be guaranteed.

    ``kv_cache`` picks the element type of the decoder's self-attention KV
    cache: ``"f32"`` (the default with f32 activations), ``"f16"`` or
    ``"bf16"`` (half the memory per cached token) or ``"int8"`` (about 3.9x
    less; one scale per head row). The device must support it (the cpu
    device does), else ``ParleyError`` (UNSUPPORTED); any other value raises
    ``ValueError``.

    ``activations`` picks the element type of the activations between
    kernels: ``"f32"`` (default), ``"f16"`` or ``"bf16"`` (a device with
    16-bit kernels for every op, as the cuda plugin; the cpu device computes
    in f32 and refuses them with ``UnsupportedError`` naming the op). With
    16-bit activations ``kv_cache`` defaults to the same type (they need a
    16-bit or int8 cache; an explicit ``"f32"`` is refused).

    ``serving_engine`` (default True) runs the chat turns and generations of
    a decoder-only model through the model's serving engine (requests from
    many threads batched into shared decode steps, a shared-prefix KV cache;
    docs/serving.md) where the model and device allow it; False makes every
    call decode alone with its own KV cache (the behaviour before the
    engine). ``serving_stats()`` says what the engine did.

    Keeps its Runtime object alive. A model is immutable and may be used by
    many threads at once. ``close()`` (or the context manager, or garbage
    collection) frees it; closing a model also closes its chats.
    """

    def __init__(
        self,
        runtime: Runtime,
        path: str | os.PathLike,
        device: str = "cpu",
        verify_checksums: bool = True,
        *,
        read_into_memory: bool = False,
        kv_cache: str | None = None,
        activations: str = "f32",
        serving_engine: bool = True,
        _data: bytes | None = None,
    ):
        self._guard: HandleGuard | None = None
        if not isinstance(runtime, Runtime):
            raise TypeError("runtime must be a parley.Runtime")
        kv_dtypes = {"f32": 0, "f16": 1, "bf16": 2, "int8": 3}  # parley_dtype F32 / F16 / BF16 / I8
        if activations not in ("f32", "f16", "bf16"):
            raise ValueError(f"activations must be 'f32', 'f16' or 'bf16', not {activations!r}")
        if kv_cache is None:  # the default: f32, or the 16-bit activations' own type (they need a 16-bit or int8 cache)
            kv_cache = activations
        if kv_cache not in kv_dtypes:
            raise ValueError(f"kv_cache must be one of 'f32', 'f16', 'bf16', 'int8', not {kv_cache!r}")
        self._runtime = runtime
        self._chats: set[HandleGuard] = set()
        self._requests: set[AsyncRequest] = set()  # *_async calls in flight
        self._chats_lock = threading.Lock()
        self._closing = False
        self.path = None if _data is not None else os.fspath(path)
        opts = _lib.new(_lib.ModelOptions)
        _lib.check(_lib.lib.parley_model_options_defaults(byref(opts)))
        opts.verify_checksums = 1 if verify_checksums else 0
        opts.read_into_memory = 1 if read_into_memory and _data is None else 0
        opts.kv_cache_dtype = kv_dtypes[kv_cache]
        opts.activation_dtype = kv_dtypes[activations]
        if not isinstance(serving_engine, bool):
            raise TypeError(f"serving_engine must be True or False, not {serving_engine!r}")
        opts.serving_engine = 1 if serving_engine else 0
        dev = encode_text(device, "device")
        opts.device = dev
        handle = c_void_p()
        with runtime._use() as rt:
            if _data is None:
                p = path_bytes(path)
                _lib.check(_lib.lib.parley_model_load_file(rt, p, byref(opts), byref(handle)))
            else:
                buf = ctypes.create_string_buffer(_data, max(len(_data), 1))  # never NULL, even for b""
                _lib.check(_lib.lib.parley_model_load_memory(rt, buf, len(_data), byref(opts), byref(handle)))
        self._guard = HandleGuard(handle.value, _lib.lib.parley_model_free, "Model")
        self.info = self._read_info()

    @classmethod
    def from_bytes(cls, runtime: Runtime, data: bytes, device: str = "cpu", verify_checksums: bool = True) -> "Model":
        """Load a model from bytes in memory (libparley copies them)."""
        return cls(runtime, "<memory>", device, verify_checksums, _data=bytes(data))

    # ------------------------------------------------------------ lifetime

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    @property
    def closed(self) -> bool:
        return self._guard is None or self._guard.closed

    def close(self) -> None:
        """Free the model, after closing its chats (a running reply is cancelled first)."""
        if self._guard is None or self._guard.closed:
            return
        with self._chats_lock:
            # Refused before anything is closed: from a callback, closing
            # would cancel and close part of the model's work and then fail.
            if self._guard.in_call_here() or any(g.in_call_here() for g in self._chats):
                raise BusyError("Model cannot be closed from inside one of its own or its chats' calls (a callback)")
            self._closing = True
            chats = list(self._chats)
            self._chats.clear()
            requests = list(self._requests)
        for r in requests:
            r.free()  # cancels it and waits for its worker (one decoding step)
        for g in chats:
            g.close(before_wait=_lib.lib.parley_chat_cancel)
        self._guard.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<parley.Model closed>"
        return f"<parley.Model {self.info.architecture} ({self.info.kind}) {self.path or ''}>"

    def _use(self):
        if self._guard is None:
            raise ClosedError("Model is closed")
        return self._guard.use()

    def _register_chat(self, guard: HandleGuard) -> None:
        with self._chats_lock:
            if self._closing:
                raise ClosedError("Model is being closed")
            self._chats.add(guard)

    def _track_request(self, req: AsyncRequest) -> None:
        with self._chats_lock:
            if self._closing:
                raise ClosedError("Model is being closed")
            self._requests.add(req)

    def _untrack_request(self, req: AsyncRequest) -> None:
        with self._chats_lock:
            self._requests.discard(req)

    def _unregister_chat(self, guard: HandleGuard) -> None:
        with self._chats_lock:
            self._chats.discard(guard)

    # ------------------------------------------------------------ description

    def _read_info(self) -> ModelInfo:
        i = _lib.new(_lib.ModelInfo)
        with self._use() as h:
            _lib.check(_lib.lib.parley_model_get_info(h, byref(i)))
        return ModelInfo(
            (i.format_major, i.format_minor),
            _s(i.architecture),
            _KINDS.get(i.kind, str(i.kind)),
            i.vocab_size,
            i.num_tensors,
            i.num_tokenizers,
            i.num_metadata,
            bool(i.has_chat_template),
            i.file_size,
            i.weights_size,
            _s(i.device),
        )

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def vocab_size(self) -> int:
        return self.info.vocab_size

    def config(self) -> dict[str, int | float]:
        """Every config value by dotted key (e.g. "decoder.num_layers")."""
        out: dict[str, int | float] = {}
        with self._use() as h:
            n = c_size_t()
            _lib.check(_lib.lib.parley_model_config_count(h, byref(n)))
            for idx in range(n.value):
                key, is_float = c_char_p(), c_int32()
                _lib.check(_lib.lib.parley_model_config_key(h, idx, byref(key), byref(is_float)))
                if is_float.value:
                    v = c_double()
                    _lib.check(_lib.lib.parley_model_config_float(h, key.value, byref(v)))
                else:
                    v = c_int64()
                    _lib.check(_lib.lib.parley_model_config_int(h, key.value, byref(v)))
                out[_s(key.value)] = v.value
        return out

    @property
    def metadata(self) -> dict[str, str]:
        out = {}
        with self._use() as h:
            for idx in range(self.info.num_metadata):
                k, v = c_char_p(), c_char_p()
                _lib.check(_lib.lib.parley_model_metadata_at(h, idx, byref(k), byref(v)))
                out[_s(k.value)] = _s(v.value)
        return out

    @property
    def chat_template(self) -> str | None:
        """The chat template source, or None when the model has none."""
        if not self.info.has_chat_template:
            return None
        src = c_char_p()
        with self._use() as h:
            _lib.check(_lib.lib.parley_model_chat_template(h, byref(src)))
        return _s(src.value)

    @property
    def tokenizers(self) -> list[TokenizerInfo]:
        out = []
        with self._use() as h:
            for idx in range(self.info.num_tokenizers):
                t = _lib.new(_lib.TokenizerInfo)
                _lib.check(_lib.lib.parley_model_tokenizer_info(h, idx, byref(t)))
                out.append(
                    TokenizerInfo(
                        _TOKENIZER_KINDS.get(t.kind, str(t.kind)),
                        _TOKENIZER_ROLES.get(t.role, str(t.role)),
                        t.model_size,
                        t.num_special_tokens,
                    )
                )
        return out

    def kernel_plan(self) -> list[KernelInfo]:
        """For each op the architecture needs, the kernel that serves it ("" name when none)."""
        out = []
        with self._use() as h:
            n = c_size_t()
            _lib.check(_lib.lib.parley_model_kernel_plan_count(h, byref(n)))
            for idx in range(n.value):
                k = _lib.new(_lib.KernelInfo)
                _lib.check(_lib.lib.parley_model_kernel_plan_at(h, idx, byref(k)))
                out.append(KernelInfo._from(k))
        return out

    def generation_defaults(self) -> dict[str, Any]:
        """The model's generation defaults (parley_generation_options_defaults)."""
        with self._use() as h:
            return generation_dict(generation_defaults(h))

    def prepare(self) -> None:
        """Bind every tensor and check the kernels now rather than at the first run."""
        with self._use() as h:
            _lib.check(_lib.lib.parley_model_prepare(h))

    def memory_usage(self) -> dict[str, int]:
        """What the prepared model holds in memory (parley_model_memory_usage; prepares the model)."""
        m = _lib.new(_lib.ModelMemory)
        with self._use() as h:
            _lib.check(_lib.lib.parley_model_memory_usage(h, byref(m)))
        return {name: getattr(m, name) for name, _ in _lib.ModelMemory._fields_ if name != "struct_size"}

    def serving_stats(self) -> dict[str, int]:
        """The serving engine's counters since load and its KV pool now (parley_model_serving_stats).

        ``engine_active`` is 0 (and every counter 0) when the engine is off,
        not started yet (it starts with the first chat turn or generation) or
        not possible for this model. Never starts the engine.
        """
        s = _lib.new(_lib.ServingStats)
        with self._use() as h:
            _lib.check(_lib.lib.parley_model_serving_stats(h, byref(s)))
        return {name: getattr(s, name) for name, _ in _lib.ServingStats._fields_
                if name not in ("struct_size", "reserved0")}

    # ------------------------------------------------------------ text

    def tokenize(
        self,
        text: str | bytes,
        add_special_tokens: bool = True,
        language: str | None = None,
        *,
        parse_special_tokens: bool = False,
    ) -> list[int]:
        """Token ids of `text` (for translation models: with the source tokenizer).

        Special-token strings written in the text ("</s>", "<|eot_id|>") are
        ordinary text unless ``parse_special_tokens`` is true (trusted text
        only: they then become their control-token ids, as transformers does
        by default).
        """
        data = encode_text(text, "text")
        lang = opt_text(language, "language")
        special = (_lib.TOKENIZE_ADD_SPECIAL if add_special_tokens else 0) | (
            _lib.TOKENIZE_PARSE_SPECIAL if parse_special_tokens else 0
        )
        with self._use() as h:
            capacity = 2 * len(data) + 16
            for _ in range(2):
                ids = (c_int32 * capacity)()
                count = c_size_t(0)
                st = _lib.lib.parley_tokenize(h, data, special, lang, ids, capacity, byref(count))
                if st == _lib.OK:
                    return ids[: count.value]
                if st == _lib.ERROR_INVALID_ARGUMENT and count.value > capacity:
                    capacity = count.value  # documented: *out_count is set when capacity is too small
                    continue
                raise _lib.make_error(st)
        raise AssertionError("parley_tokenize: the id count changed between two calls")

    def detokenize(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids` (for translation models: with the target tokenizer)."""
        arr = ids_array(ids, "ids")
        out = c_void_p()
        with self._use() as h:
            _lib.check(
                _lib.lib.parley_detokenize(h, arr, len(arr), 1 if skip_special_tokens else 0, byref(out))
            )
        try:
            return decode_text(ctypes.string_at(out.value))
        finally:
            _lib.lib.parley_string_free(out.value)

    # ------------------------------------------------------------ generation

    @staticmethod
    def _read_generation_result(
        result: int, logprobs: bool = False, alternatives: bool = False
    ) -> list[list[Hypothesis]]:
        out = []
        n = c_size_t()
        _lib.check(_lib.lib.parley_result_batch_size(result, byref(n)))
        for b in range(n.value):
            m = c_size_t()
            _lib.check(_lib.lib.parley_result_hypothesis_count(result, b, byref(m)))
            hyps = []
            for k in range(m.value):
                toks, length, score = POINTER(c_int32)(), c_size_t(), c_float()
                _lib.check(_lib.lib.parley_result_hypothesis(result, b, k, byref(toks), byref(length), byref(score)))
                lp = None
                if logprobs:
                    p, m2 = POINTER(c_float)(), c_size_t()
                    _lib.check(_lib.lib.parley_result_hypothesis_logprobs(result, b, k, byref(p), byref(m2)))
                    lp = p[: m2.value] if m2.value else []
                alts = _read_alternatives(_lib.lib.parley_result_hypothesis_alternatives, result, b, k) \
                    if alternatives else None
                status = c_int32()
                _lib.check(_lib.lib.parley_result_hypothesis_constraint(result, b, k, byref(status)))
                complete = None if status.value == 0 else status.value == 1
                hyps.append(Hypothesis(ids_list(toks, length.value), score.value, lp, complete, alts))
            out.append(hyps)
        return out

    def _count_prompt_in_max_length(self, options, batch):
        """Without max_new_tokens, a decoder-only model's max_length counts the
        prompt as in transformers (and parley_generate with NULL options):
        max(1, max_length - longest prompt) new tokens."""
        if options.get("max_new_tokens") is not None or self.kind != "decoder-only":
            return options
        v = c_int64()
        with self._use() as h:
            if _lib.lib.parley_model_config_int(h, b"generation.max_length", byref(v)) != 0 or v.value <= 0:
                return options
        longest = max((batch.lengths[i] for i in range(batch.count)), default=0)
        return {**options, "max_new_tokens": max(1, v.value - longest)}

    def _run_tokens(self, call, on_token, options, where, return_logprobs=False, alternatives=0):
        cb = _TokenCallback(on_token)
        result = c_void_p()
        with self._use() as h:
            opts = generation_options(h, options, where)
            _set_scores(opts, return_logprobs, alternatives)
            cb.install(opts)
            st = call(h, byref(opts), byref(result))
            err = _lib.make_error(st) if st != _lib.OK else None
        try:
            cb.reraise()
            if err is not None:
                raise err
            return self._read_generation_result(result.value, bool(return_logprobs), bool(alternatives))
        finally:
            _lib.lib.parley_result_free(result.value)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        on_token: Callable[[int, int, int], Any] | None = None,
        generation: GenerationOptions | None = None,
        return_logprobs: bool = False,
        alternatives: int = 0,
        **options: Unpack[GenerationKwargs],
    ) -> list[list[Hypothesis]]:
        """Continue each prompt (a list of token ids) with a decoder-only model.

        Returns, per prompt, ``num_return_sequences`` hypotheses (best first):
        the generated ids only. Options (None: the model's default; without
        max_new_tokens, the model's max_length counts the prompt, as in
        transformers): max_new_tokens, min_new_tokens, num_beams, num_return_sequences,
        length_penalty, early_stopping (True/False/"never"),
        no_repeat_ngram_size, repetition_penalty, do_sample, temperature,
        top_k, top_p, min_p, seed, eos_token_ids, grammar (GBNF text),
        json_schema (a dict or JSON text; see docs/constrained_output.md:
        each hypothesis's ``complete`` says whether it finished the
        grammar). ``on_token(batch_index,
        sequence_index, token)`` is called for each generated token (greedy and
        sampling only); a true return value finishes that sequence, and an
        exception stops the call and is re-raised. ``return_logprobs``:
        fill Hypothesis.logprobs; ``alternatives=k`` (<= 32): fill
        Hypothesis.alternatives with the k best tokens of every step (greedy,
        sampling and beam search; docs/scores.md).
        """
        options = merge(generation, options)  # type: ignore[assignment]
        batch = IdBatch(prompts, "prompts")
        options = self._count_prompt_in_max_length(options, batch)  # type: ignore[assignment]
        return self._run_tokens(
            lambda h, opts, out: _lib.lib.parley_generate(h, batch.pointers, batch.lengths, batch.count, opts, out),
            on_token,
            options,
            "generate()",
            return_logprobs,
            alternatives,
        )

    def translate_tokens(
        self,
        sources: Sequence[Sequence[int]],
        target_prefixes: Sequence[Sequence[int]] | None = None,
        *,
        on_token: Callable[[int, int, int], Any] | None = None,
        generation: GenerationOptions | None = None,
        return_logprobs: bool = False,
        alternatives: int = 0,
        **options: Unpack[GenerationKwargs],
    ) -> list[list[Hypothesis]]:
        """Translate source id sequences with an encoder-decoder model (options as generate())."""
        options = merge(generation, options)  # type: ignore[assignment]
        batch = IdBatch(sources, "sources")
        prefixes = None
        if target_prefixes is not None:
            prefixes = IdBatch(target_prefixes, "target_prefixes")
            if prefixes.count != batch.count:
                raise InvalidArgumentError(
                    f"target_prefixes has {prefixes.count} entries for {batch.count} sources"
                )
        return self._run_tokens(
            lambda h, opts, out: _lib.lib.parley_translate_tokens(
                h,
                batch.pointers,
                batch.lengths,
                batch.count,
                prefixes.pointers if prefixes else None,
                prefixes.lengths if prefixes else None,
                opts,
                out,
            ),
            on_token,
            options,
            "translate_tokens()",
            return_logprobs,
            alternatives,
        )

    @overload
    def translate(  # type: ignore[overload-overlap]  # a str is a Sequence too: the first overload wins
        self,
        texts: str | bytes,
        source_language: str | None = None,
        target_language: str | None = None,
        beam_size: int | None = None,
        num_hypotheses: int | None = None,
        length_penalty: float | None = None,
        max_length: int | None = None,
        return_attention: bool = False,
        attention_layer: int = -1,
        *,
        generation: GenerationOptions | None = None,
        **options: Unpack[TranslationKwargs],
    ) -> Translation: ...

    @overload
    def translate(
        self,
        texts: Sequence[str | bytes],
        source_language: str | None = None,
        target_language: str | None = None,
        beam_size: int | None = None,
        num_hypotheses: int | None = None,
        length_penalty: float | None = None,
        max_length: int | None = None,
        return_attention: bool = False,
        attention_layer: int = -1,
        *,
        generation: GenerationOptions | None = None,
        **options: Unpack[TranslationKwargs],
    ) -> list[Translation]: ...

    def translate(
        self,
        texts: str | bytes | Sequence[str | bytes],
        source_language: str | None = None,
        target_language: str | None = None,
        beam_size: int | None = None,
        num_hypotheses: int | None = None,
        length_penalty: float | None = None,
        max_length: int | None = None,
        return_attention: bool = False,
        attention_layer: int = -1,
        *,
        generation: GenerationOptions | None = None,
        **options: Unpack[TranslationKwargs],
    ) -> Translation | list[Translation]:
        """Translate text with an encoder-decoder model.

        A single string gives one Translation, a list gives a list.
        beam_size -> num_beams, num_hypotheses -> num_return_sequences (None:
        1), max_length -> max_new_tokens; other generation options as
        generate() (None: the model's default). ``generation``: a
        GenerationOptions whose num_beams, num_return_sequences,
        length_penalty and max_new_tokens stand in for those four arguments
        where they are None; keyword options override its other fields. ``return_attention`` keeps, per
        hypothesis, the source attention of decoder layer ``attention_layer``
        (-1: the last), averaged over heads.

        Protection: ``protect`` (True for all, or class names "numbers",
        "emails", "urls", "placeholders", "markup", as a list or a
        comma-separated str), ``protect_patterns`` (PCRE2 regexes) and
        ``glossary`` (do-not-translate terms) keep spans verbatim, each exactly
        once per hypothesis (TranslationHypothesis.protected says where).
        Long texts: ``long_text`` "error" (default), "split" (a text over the
        model's positions or ``max_source_tokens`` is split into sentences and
        joined with its whitespace) or "sentences" (always);
        ``max_batch_tokens`` batches by padded source tokens.
        Scores: ``return_logprobs=True`` fills TranslationHypothesis.logprobs,
        ``alternatives=k`` (<= 32) TranslationHypothesis.alternatives
        (docs/scores.md).
        """
        single, encoded, text_array, make_options = self._translation_args(
            texts, source_language, target_language, beam_size, num_hypotheses, length_penalty, max_length,
            return_attention, attention_layer, options, "translate()", generation,
        )
        result = c_void_p()
        with self._use() as h:
            topts, _keep = make_options(h)
            _lib.check(_lib.lib.parley_translate(h, text_array, len(encoded), byref(topts), byref(result)))
        try:
            out = self._read_translation_result(result.value, return_attention, encoded, *make_options.scores)
        finally:
            _lib.lib.parley_translation_result_free(result.value)
        return out[0] if single else out

    def score(
        self,
        targets: Sequence[str | bytes] | Sequence[Sequence[int]],
        *args: Any,
        sources: Sequence[str | bytes] | Sequence[Sequence[int]] | None = None,
        source_language: str | None = None,
        target_language: str | None = None,
    ) -> list[ScoredTarget]:
        """The model's log-probability of each target token given what precedes it (teacher
        forcing), like CTranslate2's score_batch (parley_score_tokens / parley_score_text;
        docs/scores.md).

        Targets (and sources) are texts (tokenized first) or token-id lists. Encoder-decoder
        models need ``sources`` and score every target token (texts: the target tokenizer adds
        EOS, which is scored). Decoder-only models: without ``sources`` each target is a whole
        sequence scored from its second token; with ``sources`` (prompts) every target token is
        scored. Raw log-probabilities: no penalty, temperature or other processor.
        ``sources`` is keyword-only: CTranslate2's score_batch takes the source first, and a
        second positional list here would silently have swapped the two.
        """
        if args:
            raise TypeError("score(targets, sources=...): pass sources by keyword (the targets come first, "
                            "unlike CTranslate2's score_batch(source, target))")
        if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence):
            raise TypeError("targets must be a list of texts or of token-id lists")
        if sources is not None and (isinstance(sources, (str, bytes)) or not isinstance(sources, Sequence)):
            raise TypeError("sources must be a list of texts or of token-id lists")
        if sources is not None and len(sources) != len(targets):
            raise InvalidArgumentError(f"sources has {len(sources)} entries for {len(targets)} targets")
        text = bool(targets) and isinstance(targets[0], (str, bytes))
        opts = _lib.new(_lib.ScoreOptions)
        _lib.check(_lib.lib.parley_score_options_defaults(byref(opts)))
        opts.source_language = opt_text(source_language, "source_language")
        opts.target_language = opt_text(target_language, "target_language")
        result = c_void_p()
        with self._use() as h:
            if text:
                tgt = [encode_text(t, f"targets[{i}]") for i, t in enumerate(targets)]
                src = None if sources is None else [encode_text(t, f"sources[{i}]") for i, t in enumerate(sources)]
                tgt_arr = cstring_array(tgt)
                src_arr = None if src is None else cstring_array(src)
                _lib.check(_lib.lib.parley_score_text(h, src_arr, tgt_arr, len(tgt), byref(opts), byref(result)))
            else:
                tb = IdBatch(targets, "targets")
                sb = None if sources is None else IdBatch(sources, "sources")
                _lib.check(
                    _lib.lib.parley_score_tokens(
                        h, sb.pointers if sb else None, sb.lengths if sb else None, tb.pointers, tb.lengths,
                        tb.count, byref(opts), byref(result),
                    )
                )
        try:
            n = c_size_t()
            _lib.check(_lib.lib.parley_score_result_count(result.value, byref(n)))
            out = []
            for i in range(n.value):
                toks, lps, m, total = POINTER(c_int32)(), POINTER(c_float)(), c_size_t(), c_double()
                _lib.check(
                    _lib.lib.parley_score_result_item(result.value, i, byref(toks), byref(lps), byref(m), byref(total))
                )
                out.append(ScoredTarget(ids_list(toks, m.value), lps[: m.value] if m.value else [], total.value))
            return out
        finally:
            _lib.lib.parley_score_result_free(result.value)

    def _translation_args(
        self, texts, source_language, target_language, beam_size, num_hypotheses, length_penalty, max_length,
        return_attention, attention_layer, options, where, generation=None,
    ):
        """(single, encoded texts, their C array, make_options(handle) -> (parley_translation_options, keep))."""
        single = isinstance(texts, (str, bytes))
        items = [texts] if single else list(texts)
        encoded = [encode_text(t, f"texts[{i}]") for i, t in enumerate(items)]
        options = dict(options)
        if generation is not None:
            # The dataclass's decoding fields under translate()'s own names; explicit arguments win.
            if not isinstance(generation, GenerationOptions):
                raise TypeError(f"generation must be a parley.GenerationOptions, not {type(generation).__name__}")
            given = generation.as_dict()
            beam_size = given.pop("num_beams", None) if beam_size is None else beam_size
            hyps = given.pop("num_return_sequences", None)
            num_hypotheses = hyps if num_hypotheses is None else num_hypotheses
            length_penalty = given.pop("length_penalty", None) if length_penalty is None else length_penalty
            max_length = given.pop("max_new_tokens", None) if max_length is None else max_length
            for k in ("num_beams", "length_penalty", "max_new_tokens"):
                given.pop(k, None)
            options = {**given, **options}
        if num_hypotheses is None:
            num_hypotheses = 1
        protect = options.pop("protect", None)
        patterns = options.pop("protect_patterns", None) or []
        glossary = options.pop("glossary", None) or []
        long_text = options.pop("long_text", "error")
        return_logprobs = bool(options.pop("return_logprobs", False))
        alternatives = options.pop("alternatives", 0)
        max_source_tokens = options.pop("max_source_tokens", 0)
        max_batch_tokens = options.pop("max_batch_tokens", 0)
        if protect is None or protect is False:
            protect_bits = 0
        elif protect is True:
            protect_bits = 31
        elif isinstance(protect, str):
            protect_bits = 0
            for name in (protect,) if "," not in protect else protect.split(","):
                if name.strip() not in _PROTECT_CLASSES:
                    raise InvalidArgumentError(f"unknown protect class {name!r} (one of {sorted(_PROTECT_CLASSES)})")
                protect_bits |= _PROTECT_CLASSES[name.strip()]
        else:
            protect_bits = 0
            for name in protect:
                if name not in _PROTECT_CLASSES:
                    raise InvalidArgumentError(f"unknown protect class {name!r} (one of {sorted(_PROTECT_CLASSES)})")
                protect_bits |= _PROTECT_CLASSES[name]
        if long_text not in _LONG_TEXT:
            raise InvalidArgumentError(f"long_text must be one of {sorted(_LONG_TEXT)}, not {long_text!r}")
        for name, v in (("max_source_tokens", max_source_tokens), ("max_batch_tokens", max_batch_tokens)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidArgumentError(f"{name} must be an int >= 0")
        pattern_array = cstring_array([encode_text(p, f"protect_patterns[{i}]") for i, p in enumerate(patterns)])
        glossary_array = cstring_array([encode_text(t, f"glossary[{i}]") for i, t in enumerate(glossary)])
        for name, alias in (("num_beams", "beam_size"), ("num_return_sequences", "num_hypotheses"),
                            ("length_penalty", "length_penalty"), ("max_new_tokens", "max_length")):
            if name in options and name != alias:
                raise TypeError(f"translate(): pass {alias}=, not {name}=")
        gen = dict(options)
        gen.update(
            num_beams=beam_size,
            num_return_sequences=num_hypotheses,
            length_penalty=length_penalty,
            max_new_tokens=max_length,
        )
        if isinstance(attention_layer, bool) or not isinstance(attention_layer, int):
            raise TypeError("attention_layer must be an int")
        if not -(2**31) <= attention_layer < 2**31:
            raise InvalidArgumentError(f"attention_layer out of range: {attention_layer}")
        text_array = cstring_array(encoded)
        src = opt_text(source_language, "source_language")
        tgt = opt_text(target_language, "target_language")

        def make_options(h: int):
            gopts = generation_options(h, gen, where)
            _set_scores(gopts, return_logprobs, alternatives)
            topts = _lib.new(_lib.TranslationOptions)
            _lib.check(_lib.lib.parley_translation_options_defaults(byref(topts)))
            topts.source_language = src
            topts.target_language = tgt
            topts.generation = ctypes.pointer(gopts)
            topts.return_attention = 1 if return_attention else 0
            topts.attention_layer = attention_layer
            topts.protect = protect_bits
            topts.long_text = _LONG_TEXT[long_text]
            topts.protect_patterns = pattern_array if patterns else None
            topts.num_protect_patterns = len(patterns)
            topts.glossary = glossary_array if glossary else None
            topts.num_glossary = len(glossary)
            topts.max_source_tokens = max_source_tokens
            topts.max_batch_tokens = max_batch_tokens
            return topts, [gopts, src, tgt, pattern_array, glossary_array]

        make_options.scores = (return_logprobs, bool(alternatives))  # type: ignore[attr-defined]
        return single, encoded, text_array, make_options

    # ------------------------------------------------------------ asyncio

    def _submit_async(self, submit, keep: list[Any], deadline: float | None, logprobs: bool = False) -> AsyncRequest:
        """submit(handle, request_options, out) under a model use held until the request is freed."""
        loop = asyncio.get_running_loop()
        if self._guard is None:
            raise ClosedError("Model is closed")
        guard = self._guard

        def release() -> None:
            self._untrack_request(req)
            guard.release()

        req = AsyncRequest(loop, release, keep)
        with self._chats_lock:  # close() frees every tracked request before it waits for the guard
            if self._closing:
                req._abandon_silently()
                raise ClosedError("Model is being closed")
            try:
                h = guard.acquire()
            except BaseException:
                req._abandon_silently()
                raise
            self._requests.add(req)
        req.submit(lambda ro, out: submit(h, ro, out), deadline, logprobs)
        return req

    async def generate_async(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        return_logprobs: bool = False,
        alternatives: int = 0,
        deadline: float | None = None,
        on_token: Callable[[int, int, int], Any] | None = None,
        generation: GenerationOptions | None = None,
        **options: Unpack[GenerationKwargs],
    ) -> list[list[Hypothesis]]:
        """``await model.generate_async(prompts)``: generate() without blocking the event loop.

        Runs in libparley (parley_generate_submit: it holds no thread while the
        serving engine computes it); the serving engine batches concurrent calls (tokens equal to a call alone,
        scores up to float32 rounding). ``return_logprobs`` / ``alternatives``:
        as generate(). ``deadline`` (seconds): DeadlineError after it.
        Cancelling the awaiting task cancels the request.
        ``on_token(batch_index, sequence_index, token)`` as for generate()
        (greedy and sampling; a true return value finishes that sequence, an
        exception stops it and is re-raised by the await), but called on the
        model's serving engine thread, not the event loop's: keep it short
        (no request of the model steps meanwhile) and hand data to the loop
        with ``loop.call_soon_threadsafe``.
        """
        options = merge(generation, options)  # type: ignore[assignment]
        batch = IdBatch(prompts, "prompts")
        options = self._count_prompt_in_max_length(options, batch)  # type: ignore[assignment]
        cb = _TokenCallback(on_token)
        with self._use() as h:
            opts = generation_options(h, options, "generate_async()")
            _set_scores(opts, False, alternatives)
            cb.install(opts)
        req = self._submit_async(
            lambda h, ro, out: _lib.lib.parley_generate_submit(
                h, batch.pointers, batch.lengths, batch.count, byref(opts), ro, out
            ),
            [batch, opts, cb],
            deadline,
            return_logprobs,
        )

        def take(r: int) -> list[list[Hypothesis]]:
            cb.reraise()
            return _take_generation(r, return_logprobs, bool(alternatives))

        return await run(req, take)

    async def translate_tokens_async(
        self,
        sources: Sequence[Sequence[int]],
        target_prefixes: Sequence[Sequence[int]] | None = None,
        *,
        return_logprobs: bool = False,
        alternatives: int = 0,
        deadline: float | None = None,
        generation: GenerationOptions | None = None,
        **options: Unpack[GenerationKwargs],
    ) -> list[list[Hypothesis]]:
        """``await model.translate_tokens_async(sources)``: translate_tokens() on a worker thread."""
        options = merge(generation, options)  # type: ignore[assignment]
        batch = IdBatch(sources, "sources")
        prefixes = None
        if target_prefixes is not None:
            prefixes = IdBatch(target_prefixes, "target_prefixes")
            if prefixes.count != batch.count:
                raise InvalidArgumentError(f"target_prefixes has {prefixes.count} entries for {batch.count} sources")
        with self._use() as h:
            opts = generation_options(h, options, "translate_tokens_async()")
            _set_scores(opts, False, alternatives)
        req = self._submit_async(
            lambda h, ro, out: _lib.lib.parley_translate_tokens_submit(
                h,
                batch.pointers,
                batch.lengths,
                batch.count,
                prefixes.pointers if prefixes else None,
                prefixes.lengths if prefixes else None,
                byref(opts),
                ro,
                out,
            ),
            [batch, prefixes, opts],
            deadline,
            return_logprobs,
        )
        return await run(req, lambda r: _take_generation(r, return_logprobs, bool(alternatives)))

    def _submit_translation(self, args: tuple, deadline: float | None, on_update=None) -> tuple[AsyncRequest, Any]:
        single, encoded, text_array, make_options = args
        with self._use() as h:
            topts, keep = make_options(h)
        keep += [text_array, encoded]
        if on_update is not None:

            def on_text(_u, index, hyp, ptr, n, final):
                on_update(TranslationUpdate(index, hyp, decode_text(ctypes.string_at(ptr, n)), bool(final)))
                return 0

            fn = _lib.TRANSLATION_TEXT_FN(on_text)
            keep.append(fn)
            topts.on_text = fn
        keep.append(topts)
        req = self._submit_async(
            lambda h, ro, out: _lib.lib.parley_translate_submit(
                h, text_array, None, len(encoded), byref(topts), ro, out
            ),
            keep,
            deadline,
        )
        return req, single

    @overload
    async def translate_async(  # type: ignore[overload-overlap]  # a str is a Sequence too: the first overload wins
        self,
        texts: str | bytes,
        source_language: str | None = None,
        target_language: str | None = None,
        beam_size: int | None = None,
        num_hypotheses: int | None = None,
        length_penalty: float | None = None,
        max_length: int | None = None,
        return_attention: bool = False,
        attention_layer: int = -1,
        *,
        deadline: float | None = None,
        generation: GenerationOptions | None = None,
        **options: Unpack[TranslationKwargs],
    ) -> Translation: ...

    @overload
    async def translate_async(
        self,
        texts: Sequence[str | bytes],
        source_language: str | None = None,
        target_language: str | None = None,
        beam_size: int | None = None,
        num_hypotheses: int | None = None,
        length_penalty: float | None = None,
        max_length: int | None = None,
        return_attention: bool = False,
        attention_layer: int = -1,
        *,
        deadline: float | None = None,
        generation: GenerationOptions | None = None,
        **options: Unpack[TranslationKwargs],
    ) -> list[Translation]: ...

    async def translate_async(
        self,
        texts: str | bytes | Sequence[str | bytes],
        source_language: str | None = None,
        target_language: str | None = None,
        beam_size: int | None = None,
        num_hypotheses: int | None = None,
        length_penalty: float | None = None,
        max_length: int | None = None,
        return_attention: bool = False,
        attention_layer: int = -1,
        *,
        deadline: float | None = None,
        generation: GenerationOptions | None = None,
        **options: Unpack[TranslationKwargs],
    ) -> Translation | list[Translation]:
        """``await model.translate_async(texts)``: translate() on a libparley worker thread.

        The serving engine batches concurrent translations. Cancelling the awaiting task cancels the
        translation between decoding steps; ``deadline`` (seconds):
        DeadlineError after it.
        """
        args = self._translation_args(
            texts, source_language, target_language, beam_size, num_hypotheses, length_penalty, max_length,
            return_attention, attention_layer, options, "translate_async()", generation,
        )
        req, single = self._submit_translation(args, deadline)
        out = await run(req, lambda r: _take_translation(r, return_attention, args[1], *args[3].scores))
        return out[0] if single else out

    def translate_stream_async(
        self,
        texts: str | bytes | Sequence[str | bytes],
        source_language: str | None = None,
        target_language: str | None = None,
        beam_size: int | None = None,
        num_hypotheses: int | None = None,
        length_penalty: float | None = None,
        max_length: int | None = None,
        *,
        deadline: float | None = None,
        generation: GenerationOptions | None = None,
        **options: Unpack[TranslationKwargs],
    ) -> AsyncStream:
        """``async for u in model.translate_stream_async(texts)``: TranslationUpdate per hypothesis.

        Greedy decoding and sampling stream each hypothesis' text so far as
        tokens come, then its final text (``final=True``); beam search only
        the final texts, best first. After the end, the stream's ``result``
        holds what translate_async() returns. Leaving early cancels.
        """
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def on_update(u: TranslationUpdate) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, u)
            except RuntimeError:  # the loop is closed
                pass

        args = self._translation_args(
            texts, source_language, target_language, beam_size, num_hypotheses, length_penalty, max_length,
            False, -1, options, "translate_stream_async()", generation,
        )
        req, single = self._submit_translation(args, deadline, on_update)
        return AsyncStream(req, q, lambda r: (lambda out: out[0] if single else out)(_take_translation(r, False, args[1])))

    @staticmethod
    def _read_protected(r: int, i: int, k: int, target: bytes, source: bytes | None) -> list[ProtectedSpan]:
        L = _lib.lib
        n = c_size_t()
        _lib.check(L.parley_translation_result_protected_count(r, i, k, byref(n)))
        out = []
        for j in range(n.value):
            sp = _lib.new(_lib.ProtectedSpan)
            _lib.check(L.parley_translation_result_protected_span(r, i, k, j, byref(sp)))

            def chars(b: bytes, off: int) -> int:
                return len(b[:off].decode("utf-8", "replace"))

            t0, t1 = chars(target, sp.target_offset), chars(target, sp.target_offset + sp.target_length)
            s0 = chars(source, sp.source_offset) if source is not None else -1
            s1 = chars(source, sp.source_offset + sp.source_length) if source is not None else -1
            out.append(ProtectedSpan(
                _PROTECT_KINDS.get(sp.kind, str(sp.kind)), _PLACEMENTS.get(sp.placement, str(sp.placement)),
                target[sp.target_offset : sp.target_offset + sp.target_length].decode("utf-8", "replace"),
                s0, s1, t0, t1,
            ))
        return out

    @staticmethod
    def _read_translation_result(
        r: int, with_attention: bool, sources: list[bytes] | None = None, logprobs: bool = False,
        alternatives: bool = False,
    ) -> list[Translation]:
        L = _lib.lib
        out = []
        n = c_size_t()
        _lib.check(L.parley_translation_result_count(r, byref(n)))
        for i in range(n.value):
            sp, sn = POINTER(c_int32)(), c_size_t()
            _lib.check(L.parley_translation_result_source_tokens(r, i, byref(sp), byref(sn)))
            source = ids_list(sp, sn.value)
            m = c_size_t()
            _lib.check(L.parley_translation_result_hypothesis_count(r, i, byref(m)))
            hyps = []
            for k in range(m.value):
                text, score = c_char_p(), c_float()
                _lib.check(L.parley_translation_result_text(r, i, k, byref(text), byref(score)))
                tp, tn = POINTER(c_int32)(), c_size_t()
                _lib.check(L.parley_translation_result_target_tokens(r, i, k, byref(tp), byref(tn)))
                attention = None
                if with_attention:
                    w, rows, cols = POINTER(c_float)(), c_size_t(), c_size_t()
                    _lib.check(L.parley_translation_result_attention(r, i, k, byref(w), byref(rows), byref(cols)))
                    flat = w[: rows.value * cols.value] if rows.value and cols.value else []
                    attention = [flat[t * cols.value : (t + 1) * cols.value] for t in range(rows.value)]
                raw = text.value or b""
                lp = None
                if logprobs:
                    p, m2 = POINTER(c_float)(), c_size_t()
                    _lib.check(L.parley_translation_result_hypothesis_logprobs(r, i, k, byref(p), byref(m2)))
                    lp = p[: m2.value] if m2.value else []
                alts = _read_alternatives(L.parley_translation_result_hypothesis_alternatives, r, i, k) \
                    if alternatives else None
                cut = c_int32()
                _lib.check(L.parley_translation_result_cut_by_length(r, i, k, byref(cut)))
                hyps.append(
                    TranslationHypothesis(
                        decode_text(raw), score.value, ids_list(tp, tn.value), source, attention,
                        Model._read_protected(r, i, k, raw, sources[i] if sources else None), lp, alts,
                        bool(cut.value),
                    )
                )
            out.append(Translation(source, hyps))
        return out


def _take_generation(handle: int, logprobs: bool, alternatives: bool = False) -> list[list[Hypothesis]]:
    out = c_void_p()
    _lib.check(_lib.lib.parley_request_take_generation_result(handle, byref(out)))
    try:
        return Model._read_generation_result(out.value, logprobs, alternatives)
    finally:
        _lib.lib.parley_result_free(out.value)


def _take_translation(
    handle: int, with_attention: bool, sources: list[bytes] | None = None, logprobs: bool = False,
    alternatives: bool = False,
) -> list[Translation]:
    out = c_void_p()
    _lib.check(_lib.lib.parley_request_take_translation_result(handle, byref(out)))
    try:
        return Model._read_translation_result(out.value, with_attention, sources, logprobs, alternatives)
    finally:
        _lib.lib.parley_translation_result_free(out.value)


def _set_scores(opts: _lib.GenerationOptions, return_logprobs: Any, alternatives: Any) -> None:
    """The score fields of a parley_generation_options (libparley checks the range and names the limit)."""
    if isinstance(alternatives, bool) or not isinstance(alternatives, int):
        raise TypeError(f"alternatives must be an int (0 <= k <= {_lib.MAX_ALTERNATIVES}), not {alternatives!r}")
    if alternatives < 0:
        raise InvalidArgumentError(f"alternatives must be >= 0 (at most {_lib.MAX_ALTERNATIVES}), got {alternatives}")
    opts.return_logprobs = 1 if return_logprobs else 0
    opts.num_alternatives = min(alternatives, 1 << 62)


def _read_alternatives(fn, result: int, a: int, b: int) -> list[list[tuple[int, float]]]:
    ids, lps, steps, k = POINTER(c_int32)(), POINTER(c_float)(), c_size_t(), c_size_t()
    _lib.check(fn(result, a, b, byref(ids), byref(lps), byref(steps), byref(k)))
    n, kk = steps.value, k.value
    flat_ids = ids[: n * kk] if n * kk else []
    flat_lps = lps[: n * kk] if n * kk else []
    return [list(zip(flat_ids[t * kk : (t + 1) * kk], flat_lps[t * kk : (t + 1) * kk])) for t in range(n)]
