#!/usr/bin/env python3
"""Text-level parity model: Marian with separate source and target
vocabularies, tokenizers included, with goldens from transformers.

    PYTHONPATH=formats/python .venv/bin/python tests/parity/make_text_goldens.py tests/parity

writes OUT_DIR/models/marian_separate_text.parley and
OUT_DIR/goldens/text/marian_separate_text.json (read by
tests/model/test_parity_text.cpp). Needs torch, transformers and
sentencepiece; nothing is downloaded. The two SentencePiece models (unigram,
identity normalization so that they stay a few kB) are trained here from a
generated two-language text; vocab.json and target_vocab.json are laid out as
transformers' convert_marian_to_pytorch.py lays out an OPUS-MT model with
separate vocabularies (add_special_tokens_to_vocab(separate_vocab=True)):
each is the Marian vocabulary (</s>=0, <unk>=1, then the pieces in an order
that is not the .spm order) with <pad> appended, so <pad> has a different id
on each side; config.pad_token_id (= decoder_start_token_id) is the source
one, which MarianTokenizer also uses. The source vocabulary is the smaller,
so that id is a decoder id too (as transformers' converter requires of
real models, whose pad must index the decoder embeddings).

The golden holds: tokenizer ids (source texts, target texts through
text_target; also for tests/tokenizers/corpus.json's strings, decoded
back), decode cases (target ids with and without skipping specials,
including the target vocabulary's own <pad>, the source <pad> id and <unk>),
greedy and beam generate() sequences for the source batch with their texts
(batch_decode(skip_special_tokens=True)), beam sequences_scores, and
teacher-forced log-probabilities of target texts (parley_score_text).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
try:
    import parley_format  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "formats", "python"))

import sentencepiece as spm  # noqa: E402
import torch  # noqa: E402
import transformers as T  # noqa: E402

from make_goldens import _f, _ids, _randomize  # noqa: E402
from parley_format.convert import convert  # noqa: E402

NAME = "marian_separate_text"
SEED = 4242
MAX_NEW_TOKENS = 10
SCALE_EMBEDDING = True
# A tiny random decoder with tied embeddings repeats its input token forever
# (tests/parity's other goldens do); banning repeats makes the hypotheses walk
# through the target vocabulary, so that their text exercises the decoding.
NO_REPEAT = 1

SRC_WORDS = ("der die das und ist nicht ein eine mit auf für von Haus Buch Katze Hund groß klein heute morgen "
             "schnell langsam Bestellung Kunde Rechnung Paket kommt geht sehr gut danke bitte").split()
TGT_WORDS = ("the a and is not with on for from house book cat dog big small today tomorrow fast slow order "
             "customer invoice parcel comes goes very good thanks please where when").split()

SOURCE_TEXTS = ["Das Haus ist groß.", "Der Hund kommt heute nicht.", "Danke, bitte!",
                "Die Rechnung für Kunde Zoë ist sehr gut"]
TARGET_TEXTS = ["The house is big.", "the dog comes today", "Thanks, please!", "Zoë's invoice", "</s> and <pad>"]


def _lines(words: tuple[str, ...], rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        k = rng.randint(3, 9)
        s = " ".join(rng.choice(words) for _ in range(k))
        out.append(s[0].upper() + s[1:] + rng.choice([".", "!", "?", ",", ""]))
    return out


def _train(lines: list[str], vocab_size: int) -> bytes:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size,
                                   model_type="unigram", normalization_rule_name="identity", unk_id=0, bos_id=1,
                                   eos_id=2, pad_id=-1, character_coverage=1.0, hard_vocab_limit=False,
                                   num_threads=1, minloglevel=2, shuffle_input_sentence=False,
                                   input_sentence_size=0)
    return buf.getvalue()


def _marian_vocab(proto: bytes, rng: random.Random) -> dict[str, int]:
    """</s>=0, <unk>=1, the normal pieces in a shuffled order, <pad> last."""
    sp = spm.SentencePieceProcessor(model_proto=proto)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())
              if not (sp.is_control(i) or sp.is_unknown(i))]
    rng.shuffle(pieces)
    vocab = {"</s>": 0, "<unk>": 1}
    for p in pieces:
        vocab.setdefault(p, len(vocab))
    vocab["<pad>"] = len(vocab)
    return vocab


def make_tokenizer(workdir: str, src_pieces: int = 60, tgt_pieces: int = 80):
    """MarianTokenizer(separate_vocabs=True) saved to workdir/NAME: (folder,
    source vocabulary, target vocabulary)."""
    rng = random.Random(SEED)
    src_proto = _train(_lines(SRC_WORDS, rng, 400), src_pieces)
    tgt_proto = _train(_lines(TGT_WORDS, rng, 400), tgt_pieces)
    src_vocab, tgt_vocab = _marian_vocab(src_proto, rng), _marian_vocab(tgt_proto, rng)
    hf_dir = os.path.join(workdir, NAME)
    os.makedirs(hf_dir)
    raw = os.path.join(workdir, "raw")
    os.makedirs(raw)
    for name, data in (("source.spm", src_proto), ("target.spm", tgt_proto)):
        with open(os.path.join(raw, name), "wb") as f:
            f.write(data)
    for name, v in (("vocab.json", src_vocab), ("target_vocab.json", tgt_vocab)):
        with open(os.path.join(raw, name), "w") as f:
            json.dump(v, f, ensure_ascii=False)
    tok = T.MarianTokenizer(os.path.join(raw, "source.spm"), os.path.join(raw, "target.spm"),
                            os.path.join(raw, "vocab.json"), target_vocab_file=os.path.join(raw, "target_vocab.json"),
                            separate_vocabs=True, source_lang="de", target_lang="en")
    tok.save_pretrained(hf_dir)
    return hf_dir, src_vocab, tgt_vocab


def build(workdir: str):
    hf_dir, src_vocab, tgt_vocab = make_tokenizer(workdir)
    if len(src_vocab) >= len(tgt_vocab):
        raise SystemExit(f"source vocabulary {len(src_vocab)} must be smaller than the target's {len(tgt_vocab)}")
    pad = src_vocab["<pad>"]
    cfg = T.MarianConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                         decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=48,
                         vocab_size=len(src_vocab), decoder_vocab_size=len(tgt_vocab),
                         share_encoder_decoder_embeddings=False, max_position_embeddings=64, dropout=0.0,
                         attention_dropout=0.0, activation_dropout=0.0, activation_function="swish",
                         scale_embedding=SCALE_EMBEDDING, pad_token_id=pad, decoder_start_token_id=pad, eos_token_id=0,
                         forced_eos_token_id=0, bos_token_id=None)
    cfg.architectures = ["MarianMTModel"]
    torch.manual_seed(SEED)
    model = T.MarianMTModel(cfg).eval()
    _randomize(model, torch.Generator().manual_seed(SEED), skip=("embed_positions",))
    model.tie_weights()
    model.generation_config.bad_words_ids = [[pad]]
    # Stored as the file's default too, so that `parley translate` without
    # options reproduces the greedy golden (tests/cli/test_cli.py).
    model.generation_config.no_repeat_ngram_size = NO_REPEAT
    model.save_pretrained(hf_dir)
    model = T.MarianMTModel.from_pretrained(hf_dir, attn_implementation="eager").eval()
    tok = T.AutoTokenizer.from_pretrained(hf_dir)
    if type(tok).__name__ != "MarianTokenizer" or not tok.separate_vocabs:
        raise SystemExit(f"AutoTokenizer gave {type(tok).__name__} (separate_vocabs="
                         f"{getattr(tok, 'separate_vocabs', None)})")
    return model, tok, hf_dir, src_vocab, tgt_vocab


def golden(model, tok, src_vocab: dict, tgt_vocab: dict) -> dict:
    cfg, gc = model.config, model.generation_config
    out: dict = {"name": NAME, "architecture": "MarianMTModel",
                 "vocab_size": cfg.vocab_size, "decoder_vocab_size": cfg.decoder_vocab_size,
                 "versions": {"torch": torch.__version__, "transformers": T.__version__},
                 "source_pad_id": src_vocab["<pad>"], "target_pad_id": tgt_vocab["<pad>"]}
    out["source"] = [{"text": t, "ids": list(tok(t)["input_ids"])} for t in SOURCE_TEXTS]
    # *_split_special: special-token strings in the text stay text (Parley's
    # default, tests/tokenizers/README.md); the plain ids match them as tokens.
    out["target"] = [{"text": t, "ids": list(tok(text_target=t)["input_ids"]),
                      "ids_no_special": list(tok(text_target=t, add_special_tokens=False)["input_ids"]),
                      "ids_split_special": list(tok(text_target=t, split_special_tokens=True)["input_ids"])}
                     for t in TARGET_TEXTS]
    # The tokenizer fixtures' 79 strings (tests/tokenizers/corpus.json:
    # scripts, whitespace runs, special-token strings, ...) on both sides,
    # special-token strings kept as text, and the target ids decoded back.
    with open(os.path.join(ROOT, "tests", "tokenizers", "corpus.json")) as f:
        corpus = json.load(f)
    out["corpus"] = []
    for t in corpus:
        tgt = list(tok(text_target=t, split_special_tokens=True)["input_ids"])
        out["corpus"].append({"text": t, "source_ids": list(tok(t, split_special_tokens=True)["input_ids"]),
                              "target_ids": tgt, "decoded": tok.decode(tgt),
                              "decoded_skip_special": tok.decode(tgt, skip_special_tokens=True)})
    unk_t, pad_t, pad_s = tgt_vocab["<unk>"], tgt_vocab["<pad>"], src_vocab["<pad>"]
    some = out["target"][0]["ids"]
    cases = {"target_text": some, "with_target_pad": [pad_t] + some, "with_source_pad_id": [pad_s] + some,
             "with_unk": some[:2] + [unk_t] + some[2:], "target_pad_inside": some[:2] + [pad_t] + some[2:], "top_ids": list(range(cfg.decoder_vocab_size - 6,
                                                                              cfg.decoder_vocab_size))}
    out["decode"] = [{"name": k, "ids": v, "decoded": tok.decode(v),
                      "decoded_skip_special": tok.decode(v, skip_special_tokens=True)} for k, v in cases.items()]
    # Teacher-forced log-probabilities (parley_score_text): each source with
    # the target text of the same index, encoded as tokenizer(text_target=...)
    # with special-token strings kept as text, as Parley encodes it.
    out["score"] = []
    for s_text, t_text in zip(SOURCE_TEXTS + SOURCE_TEXTS[:1], TARGET_TEXTS):
        src = torch.tensor([tok(s_text)["input_ids"]])
        tgt = tok(text_target=t_text, split_special_tokens=True)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=src, labels=torch.tensor([tgt])).logits[0].double()
        lp = torch.log_softmax(logits, -1)[torch.arange(len(tgt)), torch.tensor(tgt)]
        out["score"].append({"source": s_text, "target": t_text, "target_ids": tgt, "logprobs": _f(lp.float())})
    batch = tok(SOURCE_TEXTS, return_tensors="pt", padding=True)
    common = dict(do_sample=False, max_new_tokens=MAX_NEW_TOKENS, pad_token_id=cfg.pad_token_id, eos_token_id=0,
                  forced_eos_token_id=0, decoder_start_token_id=cfg.decoder_start_token_id,
                  bad_words_ids=gc.bad_words_ids, no_repeat_ngram_size=NO_REPEAT, repetition_penalty=1.0,
                  length_penalty=1.0, early_stopping=False)
    with torch.no_grad():
        greedy = model.generate(**batch, num_beams=1, **common)
        beam = model.generate(**batch, num_beams=3, num_return_sequences=2, output_scores=True,
                              return_dict_in_generate=True, **common)
    out["greedy"] = {"settings": dict(common), "sequences": _ids(greedy),
                     "texts": tok.batch_decode(greedy, skip_special_tokens=True),
                     "note": "decoder sequences starting with decoder_start_token_id; finished rows are filled "
                             "with pad_token_id; texts = batch_decode(skip_special_tokens=True)"}
    out["beam"] = {"settings": dict(common, num_beams=3, num_return_sequences=2),
                   "sequences": _ids(beam.sequences), "sequences_scores": _f(beam.sequences_scores),
                   "texts": tok.batch_decode(beam.sequences, skip_special_tokens=True),
                   "note": "2 rows per source, best first"}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    args = ap.parse_args(argv)
    models_dir = os.path.join(args.out_dir, "models")
    # goldens/text/: not a logits golden of goldens/*.json (test_convert.py's GOLDENS).
    goldens_dir = os.path.join(args.out_dir, "goldens", "text")
    os.makedirs(goldens_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        model, tok, hf_dir, src_vocab, tgt_vocab = build(work)
        path = os.path.join(models_dir, f"{NAME}.parley")
        r = convert(hf_dir, path, dtype="float32", force=True, progress=False)
        for w in r.warnings if hasattr(r, "warnings") else ():
            print(f"warning: {w}")
        gold = golden(model, tok, src_vocab, tgt_vocab)
        gold["model_file"] = f"models/{NAME}.parley"
        gold["hf_config"] = json.loads(model.config.to_json_string())
    with open(os.path.join(goldens_dir, f"{NAME}.json"), "w") as f:
        json.dump(gold, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"{path}: {os.path.getsize(path)} bytes; greedy {gold['greedy']['texts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
