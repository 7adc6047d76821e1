"""Tokenizers and chat templates of a Hugging Face folder -> Parley tables.

What is stored is what the runtime (runtime/text) runs, and every derived
piece is checked against transformers' own tokenizer before it is written:
- byte-level BPE (GPT-2, BART, Llama-3, Qwen2/3): vocab, merges, the
  pre-tokenizer regex, NFC, added tokens, from tokenizer.json;
- SentencePiece (Marian, M2M100, NLLB, mBART, Mistral/Llama-2): the model
  proto(s) as-is, plus the model's id of every piece (Marian's vocab.json,
  the fairseq offset) read back from the Hugging Face tokenizer;
- add_special_tokens' prefix/suffix and language tokens, measured by
  encoding probe texts;
- the chat template reduced to prefixes/suffixes (ChatFormat) and proven on
  probe conversations; a template that does not reduce is refused.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from ..types import ChatFormat, DecodeStyle, Language, Normalization, SpecialToken, SystemPlacement, Tokenizer, TokenizerKind, \
    TokenizerRole
from .errors import ConversionError, UnsupportedError

# tokenizers' ByteLevel(use_regex=True) pattern (pre_tokenizers/byte_level.rs).
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

SPM_FILES = ("tokenizer.model", "sentencepiece.bpe.model", "spiece.model")


@dataclass
class TextExport:
    tokenizers: list[Tokenizer] = field(default_factory=list)
    chat_template: str | None = None
    chat_format: ChatFormat | None = None
    # The template's other variables: the special tokens apply_chat_template passes.
    chat_template_variables: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _load_hf(model_dir: str):
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConversionError("exporting the tokenizer needs transformers (pip install -r "
                              "formats/python/requirements-convert.txt), or pass --no-tokenizer") from None
    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds
        raise ConversionError(f"{model_dir}: transformers cannot load the tokenizer: {e}") from None


def has_tokenizer_files(model_dir: str) -> bool:
    names = ("tokenizer.json", "tokenizer_config.json", "source.spm", "vocab.json") + SPM_FILES
    return any(os.path.exists(os.path.join(model_dir, n)) for n in names)


def _added_tokens(tok) -> list[SpecialToken]:
    out = []
    for i, t in sorted(tok.added_tokens_decoder.items()):
        out.append(SpecialToken(id=int(i), content=str(t.content), special=bool(t.special),
                                lstrip=bool(t.lstrip), rstrip=bool(t.rstrip)))
    return out


def _ids(tok, *args, **kw) -> list[int]:
    return list(tok(*args, **kw)["input_ids"])


def _template(tok, target: bool, lang_attr: str | None, languages: list[Language]) -> tuple[list[str], list[str]]:
    """Prefix/suffix tokens of add_special_tokens, as token contents."""
    probe = "probe text"
    kw = {"text_target": probe} if target else {"text": probe}
    bare = _ids(tok, add_special_tokens=False, **kw)
    ids_by_lang = {}
    for lang in (languages[:2] if languages else [None]):
        if lang is not None:
            setattr(tok, lang_attr, lang.code)
        ids_by_lang[lang.code if lang else None] = _ids(tok, **kw)
    first = next(iter(ids_by_lang.values()))
    n = len(bare)
    start = next((i for i in range(len(first) - n + 1) if first[i:i + n] == bare), None)
    if start is None:
        raise UnsupportedError("add_special_tokens changes the tokens of the text itself; cannot represent it")
    pre, suf = first[:start], first[start + n:]
    lang_ids = {l.token_id for l in languages}

    def name(i: int, pos: int, part: list[int]) -> str:
        if len(ids_by_lang) > 1 and i in lang_ids:
            others = [v for v in ids_by_lang.values() if v is not first]
            if all(o[pos] != i for o in others):
                return "{lang}"
        return tok.convert_ids_to_tokens(i)
    prefix = [name(i, p, pre) for p, i in enumerate(pre)]
    suffix = [name(i, start + n + p, suf) for p, i in enumerate(suf)]
    return prefix, suffix


_LANG_CODE = re.compile(r"^(?:[a-z]{2,3}_[A-Z][a-z]{3}|[a-z]{2}_[A-Z]{2}|__[a-z]{2,3}__)$")


def _languages(tok) -> tuple[list[Language], str | None, str | None]:
    """(languages, attribute for the source language, attribute for the target).

    5.x classes differ in how (or whether) they list their language codes, so
    they are found by trying: a candidate is a language when setting it as
    src_lang puts its token into the encoding."""
    if not hasattr(tok, "src_lang"):
        return [], None, None
    candidates = {str(k): int(v) for k, v in (getattr(tok, "lang_code_to_id", None) or {}).items()}
    for t, i in tok.get_vocab().items():
        if _LANG_CODE.match(str(t)):
            candidates.setdefault(str(t), int(i))
    for i, t in tok.added_tokens_decoder.items():
        if _LANG_CODE.match(str(t.content)):
            candidates.setdefault(str(t.content), int(i))
    original = tok.src_lang
    langs, aliases = [], []
    try:
        for code, i in sorted(candidates.items(), key=lambda kv: kv[1]):
            try:
                tok.src_lang = code
                ids = _ids(tok, "x")
            except Exception:  # noqa: BLE001 - not a language this class accepts
                continue
            if i in ids:
                langs.append(Language(code=code, token_id=i))
                name = str(tok.convert_ids_to_tokens(i))
                if name != code:  # M2M100 names "en" with token "__en__": accept both
                    aliases.append(Language(code=name, token_id=i))
    finally:
        tok.src_lang = original
    return langs + aliases, "src_lang", "tgt_lang"  # aliases last: _template sets the first two


def _separate_vocabs(tok) -> bool:
    """MarianTokenizer(separate_vocabs=True): target text is encoded, and
    every id decoded, through target_vocab.json (_switch_to_target_mode,
    MarianTokenizer.decoder)."""
    return type(tok).__name__ == "MarianTokenizer" and bool(getattr(tok, "separate_vocabs", False))


def _cleans_up_spaces(tok) -> bool:
    """Whether decode() applies clean_up_tokenization_spaces, measured (the
    flag in tokenizer_config.json is not honoured by every 5.x class)."""
    # decode() reads target ids: measure on target ids where the vocabularies differ.
    kw = {"text_target": "a ?"} if _separate_vocabs(tok) else {"text": "a ?"}
    ids = _ids(tok, add_special_tokens=False, **kw)
    return tok.decode(ids) == "a?" and tok.decode(ids, clean_up_tokenization_spaces=False) == "a ?"


def _byte_level_bpe(tok, role: TokenizerRole, vocab_size: int) -> Tokenizer:
    spec = json.loads(tok.backend_tokenizer.to_str())
    model = spec["model"]
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    regex, add_prefix_space = None, False
    for s in steps:
        if s.get("type") == "Split":
            if s.get("behavior") != "Isolated" or s.get("invert"):
                raise UnsupportedError(f"pre-tokenizer Split with behavior {s.get('behavior')!r} is not supported")
            if "Regex" not in s["pattern"]:
                raise UnsupportedError("pre-tokenizer Split on a plain string is not supported")
            if regex is not None:
                raise UnsupportedError("more than one Split pre-tokenizer")
            regex = s["pattern"]["Regex"]
        elif s.get("type") == "ByteLevel":
            add_prefix_space = bool(s.get("add_prefix_space"))
            if s.get("use_regex", True):
                if regex is not None:
                    raise UnsupportedError("Split followed by ByteLevel(use_regex=True) is not supported")
                regex = GPT2_REGEX
        else:
            raise UnsupportedError(f"pre-tokenizer {s.get('type')!r} is not supported for byte-level BPE")
    norm = spec.get("normalizer")
    normalization = Normalization.None_
    if norm:
        if norm.get("type") == "NFC":
            normalization = Normalization.NFC
        else:
            raise UnsupportedError(f"normalizer {norm.get('type')!r} is not supported for byte-level BPE")
    if (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise UnsupportedError(f"decoder {(spec.get('decoder') or {}).get('type')!r} is not a ByteLevel decoder")
    if model.get("dropout") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise UnsupportedError("BPE dropout / subword prefixes / end-of-word suffixes are not supported")
    vocab = ["" for _ in range(max(model["vocab"].values()) + 1)]
    for t, i in model["vocab"].items():
        if vocab[i]:  # two tokens for one id: the second would silently replace the first
            raise ConversionError(f"tokenizer.json: tokens {vocab[i]!r} and {t!r} both have id {i}")
        vocab[i] = t
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    known = set(vocab)
    for n, m in enumerate(merges):  # what the runtime's tokenizer refuses to load (FORMAT.md)
        parts = m.split(" ")
        if len(parts) != 2 or not {parts[0], parts[1], "".join(parts)} <= known:
            raise ConversionError(f"tokenizer.json: BPE merge #{n} ({m!r}) is not two tokens of the vocabulary "
                                  "making a third")
    if len(vocab) > vocab_size:
        raise ConversionError(f"tokenizer has {len(vocab)} tokens, the model's vocabulary only {vocab_size}")
    unk = model.get("unk_token")
    return Tokenizer(
        kind=TokenizerKind.ByteLevelBPE, role=role, model="".join(m + "\n" for m in merges).encode("utf-8"),
        pre_tokenizer_regex=regex, special_tokens=_added_tokens(tok), vocab=vocab,
        unk_id=int(model["vocab"][unk]) if unk in model["vocab"] else -1, normalization=normalization,
        add_prefix_space=add_prefix_space, ignore_merges=bool(model.get("ignore_merges")),
        clean_up_spaces=_cleans_up_spaces(tok))


def _target_vocab(tok) -> dict[str, int]:
    """MarianTokenizer(separate_vocabs=True)'s target_vocab.json: how target
    pieces map to decoder ids (MarianTokenizer._switch_to_target_mode) and
    back (MarianTokenizer.decoder)."""
    target = {str(t): int(i) for t, i in tok.target_encoder.items()}
    if str(tok.unk_token) not in target:
        # transformers raises KeyError on the first unknown target piece.
        raise UnsupportedError(f"MarianTokenizer with separate vocabularies: target_vocab.json has no "
                               f"{str(tok.unk_token)!r}")
    return target


def _sentencepiece(tok, proto_path: str, role: TokenizerRole, vocab_size: int,
                   warnings: list[str] | None = None) -> Tokenizer:
    import sentencepiece as spm
    with open(proto_path, "rb") as f:
        proto = f.read()
    sp = spm.SentencePieceProcessor(model_proto=proto)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    # The model's id of each token, as the Hugging Face tokenizer maps it
    # (Marian's source and target models share one vocab.json, so either
    # side can meet pieces only the other proto has; with separate
    # vocabularies the target side has its own, target_vocab.json).
    separate_target = role == TokenizerRole.Target and _separate_vocabs(tok)
    unk_id = tok.unk_token_id if tok.unk_token_id is not None else -1
    if separate_target:
        hf_vocab = _target_vocab(tok)
        unk_id = hf_vocab[str(tok.unk_token)]
    else:
        hf_vocab = {str(t): int(i) for t, i in tok.get_vocab().items()}
    # Language tokens some 5.x classes keep outside get_vocab() (M2M100).
    for i in (getattr(tok, "lang_code_to_id", None) or {}).values():
        hf_vocab.setdefault(str(tok.convert_ids_to_tokens(int(i))), int(i))
    specials = _added_tokens(tok)
    if separate_target:
        # transformers keeps one table of added tokens, with the source
        # vocabulary's ids (vocab.json), and uses it on both sides: a target
        # text's "</s>" and the EOS it appends get that id, and decode() looks
        # an id up there before target_vocab.json. Kept as is; an added token
        # whose source id is not a decoder id cannot come out of the decoder.
        dropped = [s for s in specials if s.id >= vocab_size]
        specials = [s for s in specials if s.id < vocab_size]
        for s in dropped if warnings is not None else ():
            warnings.append(f"target tokenizer: added token {s.content!r} has source id {s.id}, outside the target "
                            f"vocabulary of {vocab_size}; target text spelling it is encoded as ordinary pieces "
                            "(transformers would give that out-of-range id)")
        # A target piece that spells an added token at another id (OPUS-MT's
        # <pad>, appended to each vocabulary) is not skipped as special, but
        # convert_tokens_to_string decodes it as one (on its own, then a
        # space): a non-special added token after the special one, which
        # keeps matching in text (equal contents: the first listed wins), or
        # alone where the source id was left out.
        taken = {s.id for s in specials}
        for s in specials + dropped:
            t = hf_vocab.get(s.content)
            if t is not None and t != s.id and t < vocab_size and t not in taken:
                specials.append(SpecialToken(id=t, content=s.content, special=False))
                taken.add(t)
    n = max(max(hf_vocab.values()), max((s.id for s in specials), default=0)) + 1
    if n > vocab_size:
        side = "target " if separate_target else ""
        raise ConversionError(f"{side}tokenizer has {n} tokens, the model's {side}vocabulary only {vocab_size}")
    # An id the vocabulary lacks stays "" (decodes to nothing; transformers'
    # Marian decode falls back to the .spm's piece of that id): filling it
    # from the .spm would also make that piece encode to it, which
    # transformers never does (it gives <unk>). Converted OPUS-MT
    # vocabularies have no gaps.
    vocab = [""] * n
    for p, i in hf_vocab.items():
        vocab[i] = p
    identity = n == len(pieces) and all(vocab[i] == p for i, p in enumerate(pieces))
    # transformers' slow SentencePiece classes decode each run of pieces on
    # its own; the tokenizers-backed ones decode one stream (Metaspace).
    style = {"MarianTokenizer": DecodeStyle.RunsSpaced, "M2M100Tokenizer": DecodeStyle.Runs}.get(
        type(tok).__name__, DecodeStyle.Stream)
    if type(tok).__name__ == "MarianTokenizer":
        # Multilingual Marian: ">>fra<<" target-language codes are split off
        # the text and mapped straight to their id (MarianTokenizer.language_code_re).
        taken = {s.id for s in specials}
        specials += [SpecialToken(id=i, content=p, special=False, rstrip=True) for p, i in sorted(hf_vocab.items())
                     if p.startswith(">>") and p.endswith("<<") and len(p) > 4 and i not in taken]
    return Tokenizer(kind=TokenizerKind.SentencePiece, role=role, model=proto,
                     special_tokens=specials, vocab=() if identity else vocab, unk_id=unk_id,
                     clean_up_spaces=_cleans_up_spaces(tok), decode_style=style,
                     prefix_first_only=style == DecodeStyle.Stream)


def export_text(model_dir: str, vocab_size: int, *, encoder_decoder: bool,
                decoder_vocab_size: int | None = None) -> TextExport:
    """`decoder_vocab_size`: the model's target vocabulary when it differs
    from `vocab_size` (Marian with separate vocabularies; None: the same)."""
    out = TextExport()
    if not has_tokenizer_files(model_dir):
        out.warnings.append("no tokenizer files: the model file will only serve the token-level API")
        return out
    tok = _load_hf(model_dir)
    if decoder_vocab_size and decoder_vocab_size != vocab_size and not _separate_vocabs(tok):
        raise UnsupportedError(
            f"the model's source and target vocabularies differ (vocab_size={vocab_size}, decoder_vocab_size="
            f"{decoder_vocab_size}) but its tokenizer ({type(tok).__name__}) has one vocabulary for both; "
            "convert with --no-tokenizer for the token-level API")
    langs, src_attr, tgt_attr = _languages(tok)
    marian = os.path.exists(os.path.join(model_dir, "source.spm"))
    protos = [os.path.join(model_dir, n) for n in SPM_FILES if os.path.exists(os.path.join(model_dir, n))]
    if marian:
        tok_roles = [(os.path.join(model_dir, "source.spm"), TokenizerRole.Source),
                     (os.path.join(model_dir, "target.spm"), TokenizerRole.Target)]
        # The target side's ids are decoder ids (ModelConfig.decoder_vocab_size).
        out.tokenizers = [_sentencepiece(tok, p, r, (decoder_vocab_size or vocab_size) if r == TokenizerRole.Target
                                         else vocab_size, out.warnings) for p, r in tok_roles]
    elif protos:
        out.tokenizers = [_sentencepiece(tok, protos[0], TokenizerRole.Shared, vocab_size)]
    elif getattr(tok, "backend_tokenizer", None) is not None:
        out.tokenizers = [_byte_level_bpe(tok, TokenizerRole.Shared, vocab_size)]
    else:
        raise UnsupportedError(f"{type(tok).__name__}: neither a SentencePiece model nor a tokenizer.json found")
    for t in out.tokenizers:
        target = t.role == TokenizerRole.Target
        t.languages = tuple(langs)
        t.prefix, t.suffix = _template(tok, target and encoder_decoder, tgt_attr if target else src_attr, langs)
    template = getattr(tok, "chat_template", None)
    if isinstance(template, str) and template:
        out.chat_template = template
        out.chat_template_variables = {k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)}
        from .chat_format import derive_chat_format
        try:
            out.chat_format = derive_chat_format(tok)
        except UnsupportedError as e:
            # The runtime renders the template itself (runtime/text/jinja).
            out.warnings.append(f"{e}; the runtime renders the Jinja template instead")
    return out
