"""Numbers, order ids and amounts through the demo translation models, with
and without span protection (parley translate --protect numbers).

Uses the held-out test split of the demo corpus (make_corpus.py: order
numbers starting with 9, amounts, dates never seen in training) and prints,
per direction, the share of sentences/spans that come out right:
  order ids: each 7-digit order number of the source exactly once in the output;
  amounts:   the amount's digits (separators ignored), and the source string
             verbatim (protection keeps "367,90 €" as written), as often as
             in the source (once, but for a policy amount named twice);
  numbers:   every digit run of the source exactly once;
  order:     sentences with >= 2 numbers whose numbers come in the reference
             translation's order (where protection placed them).
Not a unit test; no timing assertions.

  python3 tests/bench/translation_protect.py [--cli build/bin/parley] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AMOUNT = re.compile(r"(?:€\s?)?\d{1,3}(?:[.,]\d{3})*[.,]\d{2}(?:\s?€)?")
ORDER = re.compile(r"(?<!\d)\d{7}(?!\d)")
NUMBER = re.compile(r"\d+")


def count(text: str, digits: str) -> int:
    return len(re.findall(r"(?<!\d)" + re.escape(digits) + r"(?!\d)", text))


def once(text: str, digits: str) -> bool:
    return count(text, digits) == 1


def score(src: list[str], out: list[str]) -> dict[str, tuple[int, int]]:
    res = {"order ids": [0, 0], "amount values": [0, 0], "amounts verbatim": [0, 0], "all numbers": [0, 0],
           "sentences all numbers": [0, 0]}
    for s, o in zip(src, out):
        for m in ORDER.findall(s):
            res["order ids"][1] += 1
            res["order ids"][0] += once(o, m)
        squashed = re.sub(r"(?<=\d)[.,](?=\d)", "", o)
        squashed_src = re.sub(r"(?<=\d)[.,](?=\d)", "", s)
        for m in AMOUNT.findall(s):  # as often as in the source (a policy amount may come twice)
            digits = re.sub(r"\D", "", m)
            res["amount values"][1] += 1
            res["amount values"][0] += count(squashed, digits) == count(squashed_src, digits)
            res["amounts verbatim"][1] += 1
            res["amounts verbatim"][0] += o.count(m.strip()) == s.count(m.strip())
        ok = True
        for m in set(NUMBER.findall(re.sub(AMOUNT, "", s))):
            n = len(re.findall(r"(?<!\d)" + m + r"(?!\d)", s))
            res["all numbers"][1] += 1
            good = len(re.findall(r"(?<!\d)" + m + r"(?!\d)", o)) == n
            res["all numbers"][0] += good
            ok &= good
        res["sentences all numbers"][1] += 1
        res["sentences all numbers"][0] += ok
    return {k: tuple(v) for k, v in res.items()}


def order_agreement(src: list[str], ref: list[str], out: list[str]) -> tuple[int, int]:
    ok = total = 0
    for s, r, o in zip(src, ref, out):
        nums = re.findall(r"\d+(?:[.,]\d+)*", s)
        if len(nums) < 2:
            continue

        def order(text: str) -> list[int]:
            squashed = re.sub(r"(?<=\d)[.,](?=\d)", "", text)
            pos = [squashed.find(re.sub(r"\D", "", n)) for n in nums]
            return sorted(range(len(nums)), key=lambda j: pos[j])

        total += 1
        ok += order(r) == order(o)
    return ok, total


def translate(cli: str, model: str, lines: list[str], extra: list[str]) -> tuple[list[str], float]:
    env = dict(os.environ)
    env.setdefault("PARLEY_PLUGIN_PATH", str(Path(cli).resolve().parents[1] / "lib" / "parley" / "plugins"))
    t0 = time.perf_counter()
    r = subprocess.run([cli, "translate", model, "--threads", "1", *extra], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, env=env, check=True)
    return r.stdout.split("\n")[: len(lines)], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli", default=str(ROOT / "build" / "bin" / "parley"))
    ap.add_argument("--models", default=str(ROOT / "samples" / "support-bot" / "models"))
    ap.add_argument("--limit", type=int, default=400, help="sentences with digits per direction")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(ROOT / "samples/support-bot/train/make_corpus.py"), "--out", tmp,
                        "--pairs", "10", "--dialogues", "10"], check=True, capture_output=True)
        corpus = {lang: Path(tmp, f"test.{lang}").read_text().splitlines() for lang in ("de", "en")}
    target = {"de": "en", "en": "de"}
    print(f"demo models, held-out test split, first {args.limit} sentences with digits per direction")
    print(f"{'direction':9} {'metric':24} {'plain':>14} {'--protect numbers':>18}")
    for direction, lang in (("de-en", "de"), ("en-de", "en")):
        keep = [i for i, s in enumerate(corpus[lang]) if re.search(r"\d", s)][: args.limit]
        src = [corpus[lang][i] for i in keep]
        ref = [corpus[target[lang]][i] for i in keep]
        model = str(Path(args.models) / f"opus-mt-{direction}.parley")
        plain, t_plain = translate(args.cli, model, src, [])
        prot, t_prot = translate(args.cli, model, src, ["--protect", "numbers"])
        a, b = score(src, plain), score(src, prot)
        for k in a:
            pa, pb = a[k], b[k]
            print(f"{direction:9} {k:24} {pa[0]:5}/{pa[1]:<5}{100 * pa[0] / max(pa[1], 1):5.1f}% "
                  f"{pb[0]:5}/{pb[1]:<5}{100 * pb[0] / max(pb[1], 1):5.1f}%")
        oa, ob = order_agreement(src, ref, plain), order_agreement(src, ref, prot)
        print(f"{direction:9} {'order as reference':24} {oa[0]:5}/{oa[1]:<5}{100 * oa[0] / max(oa[1], 1):5.1f}% "
              f"{ob[0]:5}/{ob[1]:<5}{100 * ob[0] / max(ob[1], 1):5.1f}%")
        print(f"{direction:9} {'time (s, 1 thread)':24} {t_plain:14.1f} {t_prot:18.1f}")


if __name__ == "__main__":
    main()
