#!/usr/bin/env python3
"""Train a small Marian (opus-mt layout) translation model on the support-bot corpus.

Produces a Hugging Face folder that `parley-convert` accepts like any
Helsinki-NLP/opus-mt-* checkpoint:

  config.json, generation_config.json, model.safetensors     (MarianMTModel)
  source.spm, target.spm, vocab.json, tokenizer_config.json   (MarianTokenizer)
  bleu.json                                                   (held-out score of this run)

Tokenizer layout, as transformers.MarianTokenizer expects it: one SentencePiece
model per language (source.spm encodes the input language, target.spm the
output language) and one shared vocab.json that maps pieces of both to model
ids. The SentencePiece ids themselves are never used. Like the opus-mt models,
"</s>" is id 0, "<unk>" id 1 and "<pad>" the last id; "<pad>" doubles as the
decoder start token.

Run make_corpus.py first. Example:
  .venv/bin/python samples/support-bot/train/train_translation.py --direction de-en
"""

import argparse
import json
import math
import random
import tempfile
import time
import warnings
from pathlib import Path

import sacrebleu
import sentencepiece as spm
import torch
import torch.nn.functional as F
from transformers import MarianConfig, MarianMTModel, MarianTokenizer

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--direction", choices=["de-en", "en-de"], required=True)
    ap.add_argument("--corpus", default=str(REPO / "build/demo-train/corpus"))
    ap.add_argument("--out", help="output folder (default: build/demo-train/opus-mt-<direction>)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the build machine is shared)")
    ap.add_argument("--spm-vocab", type=int, default=2000, help="SentencePiece pieces per language")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3, help="encoder layers = decoder layers")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--batch-tokens", type=int, default=1500, help="source+target tokens per batch (approx.)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--eval-pairs", type=int, default=500, help="held-out pairs to score (0 = all)")
    ap.add_argument("--beams", type=int, default=4)
    return ap.parse_args()


def read_lines(path):
    return Path(path).read_text(encoding="utf-8").splitlines()


def train_spm(lines, lang, vocab_size, workdir):
    """SentencePiece model for one language.

    The opus-mt models use unigram models, but on this small, repetitive corpus
    the unigram trainer collapses to < 500 pieces and splits even frequent words
    into letters; BPE gives whole-word pieces. Both are plain SentencePiece
    models to MarianTokenizer and libsentencepiece.
    """
    text = workdir / f"{lang}.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    prefix = workdir / lang
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(prefix), vocab_size=vocab_size, model_type="bpe",
        character_coverage=1.0,
        # One piece per digit: order numbers and amounts must be copied digit by
        # digit, and unseen numbers must never fall back to <unk>.
        split_digits=True,
        bos_id=-1,  # Marian has no BOS; the decoder starts from <pad>.
        num_threads=1, minloglevel=2)
    return prefix.with_suffix(".model")


def build_vocab(spm_paths):
    """Shared Marian vocab: </s>=0, <unk>=1, pieces of all spm models, <pad> last."""
    vocab = {"</s>": 0, "<unk>": 1}
    for path in spm_paths:
        sp = spm.SentencePieceProcessor(model_file=str(path))
        for i in range(sp.get_piece_size()):
            if sp.is_control(i) or sp.is_unknown(i):
                continue
            vocab.setdefault(sp.id_to_piece(i), len(vocab))
    vocab["<pad>"] = len(vocab)
    return vocab


def make_batches(src_ids, tgt_ids, batch_tokens, rng):
    """Length-bucketed batches (little padding), in shuffled order."""
    order = sorted(range(len(src_ids)), key=lambda i: (len(src_ids[i]) + len(tgt_ids[i]), i))
    batches, cur, cur_max = [], [], 0
    for i in order:
        n = len(src_ids[i]) + len(tgt_ids[i])
        if cur and max(cur_max, n) * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, cur_max = [], 0
        cur.append(i)
        cur_max = max(cur_max, n)
    batches.append(cur)
    rng.shuffle(batches)
    return batches


def pad(seqs, value):
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs])


def translate(model, tok, sentences, beams, batch_size=50):
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(sentences), batch_size):
            enc = tok(sentences[i:i + batch_size], return_tensors="pt", padding=True)
            gen = model.generate(**enc, num_beams=beams, max_length=96)
            out += tok.batch_decode(gen, skip_special_tokens=True)
    return out


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    src_lang, tgt_lang = args.direction.split("-")
    out = Path(args.out or REPO / f"build/demo-train/opus-mt-{args.direction}")
    out.mkdir(parents=True, exist_ok=True)
    corpus = Path(args.corpus)
    train_src, train_tgt = read_lines(corpus / f"train.{src_lang}"), read_lines(corpus / f"train.{tgt_lang}")
    test_src, test_tgt = read_lines(corpus / f"test.{src_lang}"), read_lines(corpus / f"test.{tgt_lang}")
    if args.eval_pairs:
        test_src, test_tgt = test_src[:args.eval_pairs], test_tgt[:args.eval_pairs]

    # --- tokenizer -------------------------------------------------------
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src_spm = train_spm(train_src, src_lang, args.spm_vocab, tmp)
        tgt_spm = train_spm(train_tgt, tgt_lang, args.spm_vocab, tmp)
        # Vocab order is fixed (German pieces first) so that both directions
        # share the same id space, as the opus-mt de-en / en-de pair does.
        by_lang = {src_lang: src_spm, tgt_lang: tgt_spm}
        vocab = build_vocab([by_lang["de"], by_lang["en"]])
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1), encoding="utf-8")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
            tok = MarianTokenizer(str(src_spm), str(tgt_spm), str(tmp / "vocab.json"),
                                  source_lang=src_lang, target_lang=tgt_lang, model_max_length=256)
        tok.save_pretrained(out)  # copies the spm files before tmp disappears
    pad_id = tok.pad_token_id
    assert tok.eos_token_id == 0 and tok.unk_token_id == 1 and pad_id == len(vocab) - 1

    src_ids = tok(train_src)["input_ids"]
    tgt_ids = tok(text_target=train_tgt)["input_ids"]
    unk_rate = sum(s.count(1) for s in src_ids + tgt_ids) / sum(len(s) for s in src_ids + tgt_ids)
    print(f"tokenizer: {len(vocab)} ids, {sum(map(len, src_ids)) / len(src_ids):.1f} src / "
          f"{sum(map(len, tgt_ids)) / len(tgt_ids):.1f} tgt tokens per sentence, unk rate {unk_rate:.4%}, "
          f"{time.time() - t0:.1f}s")

    # --- model -----------------------------------------------------------
    config = MarianConfig(
        vocab_size=len(vocab), d_model=args.d_model,
        encoder_layers=args.layers, decoder_layers=args.layers,
        encoder_attention_heads=args.heads, decoder_attention_heads=args.heads,
        encoder_ffn_dim=args.ffn, decoder_ffn_dim=args.ffn,
        max_position_embeddings=256,
        # The opus-mt settings: post-norm, swish, scaled and shared/tied embeddings.
        activation_function="swish", scale_embedding=True, normalize_before=False,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        dropout=0.1, attention_dropout=0.0, activation_dropout=0.0,
        pad_token_id=pad_id, decoder_start_token_id=pad_id, eos_token_id=0, forced_eos_token_id=0,
    )
    model = MarianMTModel(config)
    gc = model.generation_config
    gc.num_beams, gc.max_length, gc.bad_words_ids = args.beams, 256, [[pad_id]]
    gc.pad_token_id, gc.eos_token_id, gc.decoder_start_token_id, gc.forced_eos_token_id = pad_id, 0, pad_id, 0
    n_params = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    print(f"model: {n_params / 1e6:.2f}M parameters ({n_params * 2 / 2**20:.1f} MiB in float16)")

    # --- training ----------------------------------------------------------
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    # Linear warmup, then cosine decay to 5% over the fixed step budget.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / args.warmup, 0.05 + 0.95 * 0.5 * (
        1 + math.cos(math.pi * min(1.0, max(0, s - args.warmup) / max(1, args.steps - args.warmup))))))
    batches, step, epoch, t0 = [], 0, 0, time.time()
    model.train()
    while step < args.steps:
        if not batches:
            batches = make_batches(src_ids, tgt_ids, args.batch_tokens, rng)
            epoch += 1
        idx = batches.pop()
        x = pad([src_ids[i] for i in idx], pad_id)
        labels = pad([tgt_ids[i] for i in idx], -100)
        logits = model(input_ids=x, attention_mask=(x != pad_id).long(), labels=labels).logits
        # Label smoothing as in Marian training; -100 marks padding.
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1),
                               ignore_index=-100, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if step % 50 == 0 or step == args.steps:
            print(f"step {step:5d}  epoch {epoch}  loss {loss.item():.3f}  lr {sched.get_last_lr()[0]:.2e}  "
                  f"{time.time() - t0:.0f}s", flush=True)
    train_seconds = time.time() - t0

    # --- evaluation ----------------------------------------------------------
    t0 = time.time()
    hyps = translate(model, tok, test_src, args.beams)
    bleu_metric, chrf_metric = sacrebleu.BLEU(), sacrebleu.CHRF()
    bleu = bleu_metric.corpus_score(hyps, [test_tgt])
    chrf = chrf_metric.corpus_score(hyps, [test_tgt])
    eval_seconds = time.time() - t0
    for s, h, r in list(zip(test_src, hyps, test_tgt))[:5]:
        print(f"  src: {s}\n  hyp: {h}\n  ref: {r}")
    print(f"held-out BLEU {bleu.score:.2f}  chrF {chrf.score:.2f}  ({len(hyps)} pairs, beam {args.beams}, "
          f"{eval_seconds:.0f}s)")

    model.save_pretrained(out)
    tok.save_pretrained(out)
    result = {
        "direction": args.direction, "bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2),
        "bleu_signature": str(bleu_metric.get_signature()),
        "test_pairs": len(hyps), "beams": args.beams, "steps": args.steps, "epochs_started": epoch,
        "train_seconds": round(train_seconds, 1), "eval_seconds": round(eval_seconds, 1),
        "threads": args.threads, "parameters": n_params, "float16_bytes": n_params * 2,
        "final_train_loss": round(loss.item(), 4), "seed": args.seed,
    }
    (out / "bleu.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
