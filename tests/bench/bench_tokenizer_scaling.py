#!/usr/bin/env python3
"""Tokenizer scaling on hostile text (issue 10, item 11): seconds to
tokenize -- or refuse -- inputs of 10 KB ... 1 MB through the C API.

Rows: input kind x size. Columns:
  tokenize/<family>  parley_tokenize with a tokenizer fixture
                     (tests/tokenizers/files/<family>.parley; no length limit,
                     so every id is produced)
  hf/<family>        the anchor: Hugging Face tokenizers on the same
                     tokenizer (tests/tokenizers/hf/<family>/tokenizer.json),
                     only when the `tokenizers` package is importable
  translate          parley_translate with the demo OPUS-MT en-de model
                     (SentencePiece; refused as too long above 512 tokens)
  chat               one chat turn with the demo support-llama model (byte-level
                     BPE; refused as too long above its context), max 1 new token

Input kinds (fixed seed, so every run sees the same text):
  word   one long word of lowercase letters (skewed so merges chain)
  short  words of 1-9 letters separated by spaces
  mixed  Latin words, CJK, emoji (with ZWJ and skin tones), digits,
         punctuation and newlines

Usage (from the repository root, after building `parley` and `parley_cpu`):
  python3 tests/bench/bench_tokenizer_scaling.py [--lib build/lib/libparley.so]
      [--sizes 10,40,100,400,1000] [--limit 30] [--families gpt2,llama3,marian]

A cell whose time passes --limit seconds ends that column for larger sizes
("skip"), so the quadratic code of before can be measured without waiting an
hour. Times are CPU seconds of this process (time.process_time: on a shared machine
wall time mostly measures the neighbours), one run each -- the differences
measured are orders of magnitude, not percent.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = 20261204


def make_text(kind: str, size: int, rng: random.Random) -> str:
    letters = "eeeetttaaoinshrdlcumwfgypbvkjxqz"
    if kind == "word":
        return "".join(rng.choice(letters) for _ in range(size))
    parts: list[str] = []
    n = 0
    cjk = "你好世界中文分词测试漢字かなカナ한국어"
    emoji = ["🙂", "👍🏽", "👩‍💻", "🇩🇪", "🎉", "❤️"]
    while n < size:
        if kind == "short":
            w = "".join(rng.choice(letters) for _ in range(rng.randint(1, 9))) + " "
        else:
            r = rng.random()
            if r < 0.45:
                w = "".join(rng.choice(letters) for _ in range(rng.randint(1, 9))) + " "
            elif r < 0.65:
                w = "".join(rng.choice(cjk) for _ in range(rng.randint(1, 6)))
            elif r < 0.75:
                w = rng.choice(emoji) + " "
            elif r < 0.85:
                w = str(rng.randint(0, 10**6)) + rng.choice([" ", ", ", ". "])
            elif r < 0.95:
                w = rng.choice(["!", "?", "...", "--", "(", ")", "'s", "“", "”"]) + " "
            else:
                w = rng.choice(["\n", "\n\n", "\t", "  "])
        parts.append(w)
        n += len(w.encode())
    text = "".join(parts).encode()[:size].decode(errors="ignore")
    return text


def timed(fn) -> tuple[float, str]:
    t0 = time.process_time()
    try:
        out = fn()
        status = f"ok:{out}"
    except Exception as e:  # a refusal is a result too
        status = "refused" if "too long" in str(e) or "accepts" in str(e) else f"error:{type(e).__name__}:{e}"[:80]
    return time.process_time() - t0, status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default=os.path.join(ROOT, "build", "lib", "libparley.so"))
    ap.add_argument("--sizes", default="10,40,100,400,1000", help="KB (1 KB = 1000 bytes)")
    ap.add_argument("--limit", type=float, default=30.0, help="seconds; a slower cell ends its column")
    ap.add_argument("--families", default="gpt2,llama3,marian")
    ap.add_argument("--kinds", default="word,short,mixed")
    ap.add_argument("--no-engine", action="store_true", help="skip the translate/chat columns")
    args = ap.parse_args()

    os.environ["PARLEY_LIBRARY"] = os.path.abspath(args.lib)
    sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
    import parley  # noqa: E402

    try:
        import tokenizers  # type: ignore
    except ImportError:
        tokenizers = None

    rt = parley.Runtime(threads=1)
    families = [f for f in args.families.split(",") if f]
    models = {f: parley.Model(rt, os.path.join(ROOT, "tests", "tokenizers", "files", f + ".parley")) for f in families}
    hf = {}
    if tokenizers is not None:
        for f in families:
            path = os.path.join(ROOT, "tests", "tokenizers", "hf", f, "tokenizer.json")
            if os.path.exists(path):
                hf[f] = tokenizers.Tokenizer.from_file(path)
    demo = os.path.join(ROOT, "samples", "support-bot", "models")
    mt = bot = None
    if not args.no_engine:
        mt = parley.Model(rt, os.path.join(demo, "opus-mt-en-de.parley"))
        bot = parley.Model(rt, os.path.join(demo, "support-llama.parley"))

    columns: list[tuple[str, object]] = []
    for f in families:
        columns.append((f"tokenize/{f}", lambda t, m=models[f]: len(m.tokenize(t, add_special_tokens=False))))
        if f in hf:
            columns.append((f"hf/{f}", lambda t, h=hf[f]: len(h.encode(t, add_special_tokens=False).ids)))
    if mt is not None:
        columns.append(("translate", lambda t: len(mt.translate(t, beam_size=1, max_length=2).text)))
        columns.append(("chat", lambda t: len(parley.Chat(bot).say(t, max_new_tokens=1))))

    sizes = [int(float(s) * 1000) for s in args.sizes.split(",")]
    print(f"libparley: {args.lib}; CPU seconds; seed {SEED}; limit {args.limit:g} s; "
          f"hf tokenizers: {tokenizers.__version__ if tokenizers else 'not installed'}")
    header = f"| input | bytes | " + " | ".join(name for name, _ in columns) + " |"
    print(header)
    print("|" + "---|" * (2 + len(columns)))
    dead = set()
    for kind in args.kinds.split(","):
        dead.clear()
        for size in sizes:
            text = make_text(kind, size, random.Random(SEED + size))
            cells = []
            for name, fn in columns:
                if name in dead:
                    cells.append("skip")
                    continue
                secs, status = timed(lambda: fn(text))
                if status.startswith("error"):
                    cells.append(status)
                else:
                    cells.append(f"{secs:.3f}" + (" (refused)" if status == "refused" else ""))
                if secs > args.limit:
                    dead.add(name)
            print(f"| {kind} | {len(text.encode())} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
