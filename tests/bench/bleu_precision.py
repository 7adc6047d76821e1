#!/usr/bin/env python3
"""BLEU of the demo translation models per storage type (issue 11).

    /work/venvs/bleu/bin/python tests/bench/bleu_precision.py [--parley build/bin/parley]

Environment: tests/bench/requirements-bleu.txt (sacrebleu + the format
package's requirements; no torch).

Models: samples/support-bot/models/opus-mt-{en-de,de-en}.parley. Their
float32 training checkpoints (build/demo-train/, from
samples/support-bot/train/) are not committed, only the float16 conversion, so
every other storage type is re-stored from the float16 file's values with the
converter's own storage step (tests/parity/restore.py, the function
`parley-convert --dtype` calls): float32 holds those values exactly (the
baseline), int8 and int4 quantise them (int4: the layers' Linear weights
group-wise, embeddings I8 per row, as `parley-convert --dtype int4
--group-size G` stores them).

Held-out set: samples/support-bot/train/make_corpus.py's test split (1 000
pairs with slot values and template/category combinations never seen in
training; byte-for-byte reproducible from its seed), regenerated into
--corpus unless it is there already. All pairs are scored (train_translation.py
scored the first 500 for its README).

Translation: `parley translate MODEL --beam 4` (the models' own generation
config otherwise), one process per file, detokenised output scored with
sacreBLEU (corpus BLEU, default 13a tokenisation; chrF). Goals: int8 within
0.5 BLEU of float32, int4 within 1.5.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import sacrebleu

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "parity"))
from restore import restore  # noqa: E402

DIRECTIONS = ("en-de", "de-en")
# (label, storage dtype, int4 group size, goal: max BLEU drop vs float32)
ROWS = (
    ("float32", "float32", None, None),
    ("float16 (committed)", None, None, None),
    ("int8", "int8", None, 0.5),
    ("int4 g64", "int4", 64, 1.5),
    ("int4 g32", "int4", 32, 1.5),
)


def read_lines(p: Path) -> list[str]:
    return p.read_text(encoding="utf-8").splitlines()


def translate(parley: str, model: Path, src: list[str], beam: int, threads: int, batch: int) -> tuple[list[str], float]:
    t0 = time.perf_counter()
    r = subprocess.run([parley, "translate", str(model), "--beam", str(beam), "--threads", str(threads), "--batch",
                        str(batch)], input="\n".join(src) + "\n", capture_output=True, text=True, encoding="utf-8")
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"parley translate {model} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    out = r.stdout.split("\n")
    if out and out[-1] == "":
        out.pop()
    if len(out) != len(src):
        raise SystemExit(f"parley translate {model}: {len(out)} output lines for {len(src)} inputs")
    return out, dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parley", default=str(ROOT / "build" / "bin" / "parley"), help="the parley CLI")
    ap.add_argument("--corpus", default=str(ROOT / "build" / "demo-train" / "corpus"),
                    help="folder with test.{en,de} (made by make_corpus.py when missing)")
    ap.add_argument("--work", default=str(ROOT / "build" / "bleu-precision"), help="where the re-stored models go")
    ap.add_argument("--pairs", type=int, default=0, help="held-out pairs to score (0 = all)")
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args(argv)

    corpus, work = Path(args.corpus), Path(args.work)
    if not (corpus / "test.en").exists() or not (corpus / "test.de").exists():
        print(f"making the held-out set in {corpus}", file=sys.stderr)
        subprocess.run([sys.executable, str(ROOT / "samples/support-bot/train/make_corpus.py"), "--out", str(corpus)],
                       check=True, stdout=subprocess.DEVNULL)
    work.mkdir(parents=True, exist_ok=True)

    table = []
    failed = False
    bleu_metric, chrf_metric = sacrebleu.BLEU(), sacrebleu.CHRF()
    for direction in DIRECTIONS:
        s, t = direction.split("-")
        src, ref = read_lines(corpus / f"test.{s}"), read_lines(corpus / f"test.{t}")
        if args.pairs:
            src, ref = src[: args.pairs], ref[: args.pairs]
        committed = ROOT / "samples/support-bot/models" / f"opus-mt-{direction}.parley"
        base = None
        for label, dtype, group, goal in ROWS:
            if dtype is None:
                model = committed
            else:
                model = work / f"opus-mt-{direction}.{dtype}{'.g' + str(group) if group else ''}.parley"
                restore(str(committed), str(model), dtype, group)
            hyps, dt = translate(args.parley, model, src, args.beam, args.threads, args.batch)
            bleu = bleu_metric.corpus_score(hyps, [ref])
            chrf = chrf_metric.corpus_score(hyps, [ref])
            if label == "float32":
                base = bleu.score
                base_hyps = hyps
            same = sum(a == b for a, b in zip(hyps, base_hyps))
            delta = bleu.score - base
            verdict = "" if goal is None else ("met" if delta >= -goal else "MISSED")
            failed |= verdict == "MISSED"
            table.append((direction, label, model.stat().st_size / 2**20, bleu.score, chrf.score, delta,
                          f"within {goal}" if goal is not None else "", verdict, same, len(src), dt))
            print(f"{direction} {label}: BLEU {bleu.score:.2f} chrF {chrf.score:.2f} ({dt:.1f} s)", file=sys.stderr)

    print(f"\nsacreBLEU {sacrebleu.__version__} ({bleu_metric.get_signature()}), held-out pairs: "
          f"{table[0][9]} per direction, beam {args.beam}, {args.threads} thread(s)\n")
    print("| direction | storage | file MiB | BLEU | chrF | ΔBLEU vs float32 | goal | | lines = float32 | time s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for d, label, mib, b, c, delta, goal, verdict, same, n, dt in table:
        print(f"| {d} | {label} | {mib:.1f} | {b:.2f} | {c:.2f} | {delta:+.2f} | {goal} | {verdict} | "
              f"{same}/{n} | {dt:.0f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
