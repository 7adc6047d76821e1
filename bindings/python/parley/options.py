"""Typed generation options: a dataclass, and the same fields as keyword arguments.

Every call that generates (Model.generate, translate_tokens, translate and
their async forms, Chat.say / stream and their async forms) takes
``generation=GenerationOptions(...)`` and/or the same fields as keyword
arguments; a keyword argument overrides the dataclass field of the same name.
A field left at None keeps the model's default (parley_generation_options_defaults).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence, TypedDict

__all__ = ["GenerationOptions", "GenerationKwargs", "TranslationKwargs"]


@dataclass(frozen=True, kw_only=True)
class GenerationOptions:
    """The settable fields of parley_generation_options (None: the model's default)."""

    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    num_beams: int | None = None
    num_return_sequences: int | None = None
    length_penalty: float | None = None
    #: True / False / "never" (Hugging Face's early_stopping for beam search)
    early_stopping: bool | Literal["never"] | None = None
    no_repeat_ngram_size: int | None = None
    repetition_penalty: float | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    seed: int | None = None
    eos_token_ids: Sequence[int] | None = None
    #: GBNF grammar text (constrained output; generate and chat only)
    grammar: str | None = None
    #: a JSON schema as a dict or as JSON text (constrained output; generate and chat only)
    json_schema: Mapping[str, Any] | str | None = None
    #: {token id: bias} added to those tokens' logits before any other processing
    #: (OpenAI's logit_bias: -100 bans a token, +100 forces it); every decoding mode
    logit_bias: Mapping[int, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields that are set (not None)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


class GenerationKwargs(TypedDict, total=False):
    """GenerationOptions' fields as keyword arguments (``**options``)."""

    max_new_tokens: int | None
    min_new_tokens: int | None
    num_beams: int | None
    num_return_sequences: int | None
    length_penalty: float | None
    early_stopping: bool | Literal["never"] | None
    no_repeat_ngram_size: int | None
    repetition_penalty: float | None
    do_sample: bool | None
    temperature: float | None
    top_k: int | None
    top_p: float | None
    min_p: float | None
    seed: int | None
    eos_token_ids: Sequence[int] | None
    grammar: str | None
    json_schema: Mapping[str, Any] | str | None
    logit_bias: Mapping[int, float] | None


class TranslationKwargs(TypedDict, total=False):
    """Model.translate()'s keyword arguments beyond its named parameters: decoding
    (GenerationOptions' fields other than those translate() names itself) and protection."""

    min_new_tokens: int | None
    early_stopping: bool | Literal["never"] | None
    no_repeat_ngram_size: int | None
    repetition_penalty: float | None
    do_sample: bool | None
    temperature: float | None
    top_k: int | None
    top_p: float | None
    min_p: float | None
    seed: int | None
    eos_token_ids: Sequence[int] | None
    logit_bias: Mapping[int, float] | None
    #: True (all classes), or "numbers", "emails", "urls", "placeholders", "markup" (list or comma-separated)
    protect: bool | str | Sequence[str] | None
    protect_patterns: Sequence[str] | None
    glossary: Sequence[str] | None
    long_text: Literal["error", "split", "sentences"]
    max_source_tokens: int
    max_batch_tokens: int


def merge(generation: GenerationOptions | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """generation's set fields, then the keyword options over them."""
    if generation is None:
        return dict(options)
    if not isinstance(generation, GenerationOptions):
        raise TypeError(f"generation must be a parley.GenerationOptions, not {type(generation).__name__}")
    out = generation.as_dict()
    out.update(options)
    return out
