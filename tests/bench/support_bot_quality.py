"""What a customer of the support bot gets right: facts and slots of the
dialogue models' replies, and order numbers and amounts through translation.

Runs build/bin/support-bot (the sample, as users run it) and prints:

1. Held-out support set: the first --conversations conversations of the demo
   corpus' held-out dialogue split (make_corpus.py, dialogue_test: held-out
   question wordings, names, order numbers; the set train_dialogue.py scores),
   played through the bot in English (--english), each conversation a fresh
   bot; the order numbers they name are in the order table the bot is given
   (status "shipped", as the reference answers assume). A reply passes when
   it holds every expected fact and slot (the corpus' "checks"): the policy
   fact, the order number, the amount, "Mr/Ms <surname>". Also: replies with
   a number or amount the conversation never gave (invented data).
   For reference, "model alone": the same turns through the dialogue model
   with the reference history and no tool or grounding (Python binding), the
   figure train_dialogue.py reports.
   Also: fresh wordings (FRESH_WORDINGS), scored the same way.
2. Order table: a question about each order of samples/support-bot/models/
   orders.csv and about 8 numbers that are not in it; a reply passes when it
   names the order and its status facts from the table (date, carrier), or
   says the order cannot be found, and invents no number.
3. Translation (the German demo, per dialogue model): German customer
   sentences with order numbers and amounts from the corpus' held-out split,
   played through the German bot; order numbers and amounts of each message
   verbatim in its English translation, and of each English reply verbatim
   in the German reply, each as often as in the source (once, for most).
   And whether the German reply is the reference translation of the English
   one (make_corpus.DIALOGUE_TEMPLATES, for replies made only of sentences it
   has a German for), exactly and by difflib's similarity ratio.
4. The held-out set in German (per dialogue model): the same conversations
   as a German customer writes them (each English customer sentence replaced
   by its German in make_corpus' templates, slots in German form: "117,90 €",
   "die Quarz-Fußmatte"), through the German bot: customer messages whose
   de->en equals the corpus' English; replies whose English holds every fact
   and slot (an order number may come from the table's German sentence); the
   German replies equal to the reference translation; order numbers and
   amounts of the English reply in the German one. The translation models
   were trained on the customer sentences' templates (with other slot
   values), so this measures names, products and numbers through them, not
   unseen wordings.

Each dialogue model: the trained demo model (models/support-llama.parley) and,
where they were fetched, SmolLM2-135M-Instruct (samples/support-bot/
fetch_smollm2.sh) and SmolLM2-135M-Instruct with the support-bot LoRA adapter
this project trained (fetch_smollm2.sh --support); a missing model is
reported as skipped.

  python3 tests/bench/support_bot_quality.py [--bot build/bin/support-bot]
      [--smollm2 build/models/smollm2-135m-instruct.q4_1.parley]
      [--smollm2-support build/models/smollm2-135m-support.parley]
      [--only trained|smollm2|support]
      [--conversations 60] [--translation-lines 60] [--json OUT]

Not a unit test: it prints figures and does not fail on them.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "samples" / "support-bot" / "train"))
import make_corpus  # noqa: E402  (stdlib only; the held-out split is generated, byte-identical, from its seed)

ORDER = re.compile(r"(?<![\d€.,])\d{4,9}(?![\d.,:])")
AMOUNT = re.compile(r"€\s?\d+(?:[.,]\d+)?|\d+(?:[.,]\d+)?\s?(?:€|EUR)")
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def held_out(n: int) -> list[dict]:
    # make_corpus.main(): dialogue_test uses Random(seed + 3), 200 conversations, test=True.
    return make_corpus.make_dialogues(random.Random(1234 + 3), 200, True)[:n]


def bot_env(bot: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PARLEY_PLUGIN_PATH", str(Path(bot).resolve().parents[1] / "lib" / "parley" / "plugins"))
    return env


def run_bot(bot: str, lines: list[str], extra: list[str]) -> tuple[list[str], str]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        script = f.name
    try:
        r = subprocess.run([bot, "--script", script, *extra], capture_output=True, text=True, env=bot_env(bot),
                           timeout=3600, check=False)
    finally:
        os.unlink(script)
    if r.returncode != 0:
        raise SystemExit(f"support-bot failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout, r.stderr


def bot_replies(stdout: str) -> list[str]:
    return re.findall(r"^Bot: (.*)$", stdout, flags=re.M)


def invented(reply: str, known: str) -> bool:
    """A number of order-number length or an amount that the conversation never gave."""
    def digits(s: str) -> str:
        return re.sub(r"\D", "", s)
    known_digits = {digits(m) for m in AMOUNT.findall(known)} | set(re.findall(r"\d+", known))
    return any(digits(m) not in known_digits for m in ORDER.findall(reply) + AMOUNT.findall(reply))


def percent(a: int, b: int) -> str:
    return f"{a:4}/{b:<4} {100 * a / max(b, 1):5.1f} %"


# --------------------------------------------------------------------------- 1. held-out set


# A second held-out set: two wordings per intent, written on 2026-12-06 for this
# bench and not in make_corpus.py. The held-out split's own wordings have been looked
# at while the demo models were worked on (its misses are discussed in the READMEs);
# these were only ever scored, so they show how far that figure carries to wordings
# nobody tuned anything for. One turn each, no introduction, held-out slot values.
FRESH_WORDINGS = {
    "status": ["Has my parcel {order} left your warehouse yet?", "Any news on order {order}?"],
    "return": ["The {p} from order {order} is not what I expected. Can it go back?",
               "I would like my money back for the {p}, it is from order {order}. Do I ship it to you?"],
    "refund": ["Where is my money for the returned order {order}?",
               "I still have not received my refund for order {order}."],
    "damaged": ["Order {order} came with a cracked {p}.", "The {p} I received in order {order} is defective."],
    "cancel": ["Please stop order {order}, I do not need it anymore.",
               "I changed my mind about order {order}. Can you cancel it?"],
    "shipping_cost": ["What will delivery cost me for {amount}?", "Are there shipping fees on a {amount} order?"],
    "express": ["Can order {order} arrive tomorrow?", "Do you have next-day delivery?"],
    "hours": ["At what time does your hotline open?", "Can I reach you on the weekend?"],
    "payment": ["Do you take credit cards?", "Is direct debit possible for order {order}?"],
    "password": ["My password does not work anymore.", "I am locked out of my account."],
    "address": ["My address has changed. How do I update it?", "I need my email address changed."],
}


def fresh_wordings(per_wording: int = 2) -> list[dict]:
    """One-turn conversations on FRESH_WORDINGS, with held-out slot values."""
    rng = random.Random(2026_12_06)
    sampler = make_corpus.SlotSampler(rng, True)
    convs = []
    for intent, wordings in FRESH_WORDINGS.items():
        for wording in wordings:
            for _ in range(per_wording):
                s = make_corpus.dialogue_slots(sampler)
                answer, checks = make_corpus.INTENTS[intent]["answer"](s)
                convs.append({"intent": intent, "messages": [{"role": "user", "content": wording.format(**s)},
                                                             {"role": "assistant", "content": answer}],
                              "checks": [checks]})
    return convs


def held_out_table(convs: list[dict], path: Path) -> None:
    # Every order number a customer names, not only those the expected answer repeats ("Is direct debit
    # possible for order …?" needs no number in the answer, but the bot looks the order up first).
    ids = sorted({c for conv in convs for checks in conv["checks"] for c in checks if re.fullmatch(r"\d{7}", c)} |
                 {i for conv in convs for m in conv["messages"] if m["role"] == "user"
                  for i in re.findall(r"(?<!\d)\d{7}(?!\d)", m["content"])})
    rows = [f"{i},Nordwind item,49.90,shipped,2026-12-0{1 + k % 4},DHL" for k, i in enumerate(ids)]
    path.write_text("order,product,amount,status,date,carrier\n" + "\n".join(rows) + "\n", encoding="utf-8")


def name_as_given(check: str, reply: str, users: list[str]) -> bool:
    """A "Mr/Ms <surname>" check met by the name the customer introduced themselves with
    ("Hi, this is Ida Brandt." -> "Hello Ida Brandt!"), with no title of the other kind
    for that surname: the greeting a bot gives when it does not guess the customer's title."""
    if check in reply:
        return True
    surname = check[3:]
    other = ("Mr " if check.startswith("Ms ") else "Ms ") + surname
    given = [m.group(1) for u in users for m in [re.search(r"this is ([^.]+)\.", u)] if m]
    return any(g.endswith(" " + surname) and g in reply for g in given) and other not in reply


def score_held_out(bot: str, dialogue: list[str], convs: list[dict], table: Path, policy: str) -> dict:
    passed = total = made_up = 0
    passed_name_as_given = 0
    failures = []
    missing = {"order number": 0, "amount": 0, "Mr/Ms name": 0, "policy fact": 0}
    for conv in convs:
        users = [m["content"] for m in conv["messages"] if m["role"] == "user"]
        stdout, _ = run_bot(bot, users, ["--english", "--quiet", "--orders", str(table), *dialogue])
        replies = bot_replies(stdout)
        known = policy + "\n" + "\n".join(users)
        for i, checks in enumerate(conv["checks"]):
            reply = replies[i] if i < len(replies) else ""
            ok = all(c in reply for c in checks)
            passed += ok
            passed_name_as_given += all(
                name_as_given(c, reply, users) if c[:3] in ("Mr ", "Ms ") else c in reply for c in checks)
            total += 1
            made_up += invented(reply, known + "\n" + table.read_text(encoding="utf-8"))  # + the tool's results
            for c in checks:
                if c not in reply:
                    kind = ("order number" if re.fullmatch(r"\d{7}", c) else "amount" if c.startswith("€")
                            else "Mr/Ms name" if c[:3] in ("Mr ", "Ms ") else "policy fact")
                    missing[kind] += 1
            if not ok and len(failures) < 6:
                failures.append(f"    {users[i]!r}\n      -> {reply!r}\n      missing {[c for c in checks if c not in reply]}")
    return {"passed": passed, "turns": total, "invented": made_up, "missing": missing, "failures": failures,
            "passed_name_as_given": passed_name_as_given}


def model_alone(model_path: str, convs: list[dict], policy: str, lib: str) -> dict | None:
    """Teacher-forced turns through the dialogue model only (train_dialogue.py's evaluate())."""
    if not Path(lib).exists():
        return None
    os.environ.setdefault("PARLEY_LIBRARY", lib)
    sys.path.insert(0, str(ROOT / "bindings" / "python"))
    import parley  # noqa: PLC0415

    rt = parley.Runtime()
    model = parley.Model(rt, model_path)
    passed = total = 0
    for conv in convs:
        msgs = conv["messages"]
        for turn, checks in zip(range(1, len(msgs), 2), conv["checks"]):
            chat = parley.Chat(model, policy)
            for m in msgs[: turn - 1]:
                chat.append(m["role"], m["content"])
            text = chat.say(msgs[turn - 1]["content"], max_new_tokens=96)
            passed += all(c in text for c in checks)
            total += 1
            chat.close()
    model.close()
    rt.close()
    return {"passed": passed, "turns": total}


# --------------------------------------------------------------------------- 2. order table


def read_orders(path: Path) -> list[dict]:
    lines = [l for l in path.read_text(encoding="utf-8").splitlines() if l and not l.startswith("#")]
    head = lines[0].split(",")
    return [dict(zip(head, l.split(","))) for l in lines[1:]]


def english_date(iso: str) -> str:
    _, m, d = (int(x) for x in iso.split("-"))
    return f"{d} {MONTHS[m - 1]}"


ORDER_QUESTIONS = ["Where is my order {id}?", "What is the status of order {id}?", "Has order {id} been shipped yet?",
                   "Hi, can you check order {id} for me?"]


def score_orders(bot: str, dialogue: list[str], orders: list[dict], policy: str) -> dict:
    rng = random.Random(7)
    known_ids = {o["order"] for o in orders}
    unknown = []
    while len(unknown) < 8:
        i = str(rng.randint(1_000_000, 9_999_999))
        if i not in known_ids:
            unknown.append(i)
    cases = [(o["order"], o) for o in orders] + [(i, None) for i in unknown]
    passed = made_up = 0
    failures = []
    for k, (oid, row) in enumerate(cases):
        question = ORDER_QUESTIONS[k % len(ORDER_QUESTIONS)].format(id=oid)
        stdout, _ = run_bot(bot, [question], ["--english", "--quiet", *dialogue])
        reply = (bot_replies(stdout) or [""])[0]
        if row is None:
            checks = [oid, "cannot find"]
        else:
            checks = [oid, english_date(row["date"])] + ([row["carrier"]] if row["status"] in ("shipped", "delivered") else [])
        ok = all(c in reply for c in checks)
        tool = json.dumps(row or {}) + " " + (f"€{row['amount']}" if row else "")
        bad = invented(reply, policy + "\n" + question + "\n" + tool)
        passed += ok and not bad
        made_up += bad
        if (not ok or bad) and len(failures) < 6:
            failures.append(f"    {question!r}\n      -> {reply!r}")
    return {"passed": passed, "questions": len(cases), "invented": made_up, "failures": failures}


# --------------------------------------------------------------------------- 3. translation


def occurrences(text: str, span: str) -> int:
    return len(re.findall(r"(?<![\d.,])" + re.escape(span) + r"(?![\d])", text))


def kept(out: str, src: str, span: str) -> bool:
    """The span as often in the output as in the source (once, for most)."""
    return occurrences(out, span) == occurrences(src, span)


def reply_spans(text: str) -> list[str]:
    """The order numbers and amounts of a reply."""
    return re.findall(r"(?<![\d.,])\d{4,9}(?![\d])", text) + AMOUNT.findall(text)


def tally_kept(spans: list[str], out: str, src: str, tally: list[int], failures: list[str], label: str,
               limit: int) -> None:
    """Counts the spans of `src` that `out` keeps (kept()) into tally = [kept, all]."""
    for span in spans:
        good = kept(out, src, span.strip())
        tally[0] += good
        tally[1] += 1
        if not good and len(failures) < limit:
            failures.append(f"    {label} {span!r}: {src!r} -> {out!r}")


def tally_reference(german: str, english: str, ref: str, exact: list[int], similarity: list[float],
                    failures: list[str]) -> None:
    """A German reply against the reference translation of its English."""
    german = german.strip()
    exact[0] += german == ref
    exact[1] += 1
    similarity.append(difflib.SequenceMatcher(None, german, ref).ratio())
    if german != ref and len(failures) < 12:
        failures.append(f"    en->de {english!r}\n      got      {german!r}\n      expected {ref!r}")


SLOT_RE = {"order": r"(?P<order>\d{7})", "amount": r"(?P<amount>€\d+\.\d\d)", "name": r"(?P<name>(?:Mr|Ms) [\w-]+)"}


def german_references() -> list[tuple[re.Pattern, str]]:
    """(English sentence pattern, German template) for each sentence the
    dialogue models say (make_corpus.DIALOGUE_TEMPLATES, agent side) whose
    slots are an order number, an amount or a name; the product-line one
    (its German depends on the product's gender) is left out."""
    refs = []
    for role, en, de in make_corpus.DIALOGUE_TEMPLATES:
        names = re.findall(r"\{(\w+)\}", en)
        if role != "a" or any(n not in SLOT_RE for n in names):
            continue
        pattern = "".join(SLOT_RE[p] if i % 2 else re.escape(p) for i, p in enumerate(re.split(r"\{(\w+)\}", en)))
        refs.append((re.compile(pattern), de))
    return refs


def expected_german(english: str, refs) -> str | None:
    """The reference German of a reply whose every sentence has one; the bot
    keeps numbers and amounts as written, so they stay English-formatted."""
    out = []
    for sentence in re.split(r"(?<=[.!?]) +", english.strip()):
        for pattern, de in refs:
            m = pattern.fullmatch(sentence)
            if m:
                slots = m.groupdict()
                if "name" in slots:
                    slots["name"] = slots["name"].replace("Mr ", "Herr ").replace("Ms ", "Frau ")
                # the policy's own amounts too ("4,90 €" -> "€4.90")
                de = re.sub(r"(\d+)(?:,(\d\d))? €", lambda a: f"€{a[1]}" + (f".{a[2]}" if a[2] else ""), de)
                out.append(de.format(**slots))
                break
        else:
            return None
    return " ".join(out)


def score_translation(bot: str, n: int, extra: list[str] | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(ROOT / "samples/support-bot/train/make_corpus.py"), "--out", tmp,
                        "--pairs", "10", "--dialogues", "10"], check=True, capture_output=True)
        de = Path(tmp, "test.de").read_text(encoding="utf-8").splitlines()
    # customer-like sentences with an order number or an amount
    lines = [s for s in de if re.search(r"\d{7}|\d,\d\d €", s)][:n]
    lines = ["Hallo! Wo ist meine Bestellung 9019917?", "Wann bekomme ich meine Erstattung über 107,49 €?"] + lines
    inbound = [0, 0]
    outbound = [0, 0]
    german_exact = [0, 0]
    similarity = []
    refs = german_references()
    failures = []
    # two messages per conversation: the demo dialogue model was trained on one- and two-turn conversations
    for start in range(0, len(lines), 2):
        stdout, _ = run_bot(bot, lines[start : start + 2], extra or [])
        for turn in stdout.split("\nKunde: ")[1:]:
            src = turn.split("\n", 1)[0]
            en = re.search(r"^  \[de->en\] (.*)$", turn, flags=re.M)
            if en:
                tally_kept(re.findall(r"\d{7}", src) + AMOUNT.findall(src), en.group(1), src, inbound, failures,
                           "de->en", 6)
            # the model's English answer (checked) and its German translation
            model = re.search(r"^  \[grounded\] (.*)$", turn, flags=re.M) or re.search(
                r"^  \[assistant, en\] (.*)$", turn, flags=re.M)
            # the German reply's translated part ([en->de] when the table's sentence precedes it)
            german = re.search(r"^  \[en->de\] (.*)$", turn, flags=re.M) or re.search(r"^Bot: (.*)$", turn, flags=re.M)
            if model and german and "[grounding:" not in turn:  # (not when the bot asked instead)
                if ref := expected_german(model.group(1), refs):
                    tally_reference(german.group(1), model.group(1), ref, german_exact, similarity, failures)
                tally_kept(reply_spans(model.group(1)), german.group(1), model.group(1), outbound, failures,
                           "en->de", 6)
    return {"messages": len(lines), "inbound": inbound, "outbound": outbound, "german_exact": german_exact,
            "german_similarity": round(sum(similarity) / max(len(similarity), 1), 4), "failures": failures}


# --------------------------------------------------------------------------- 4. the held-out set in German

CATEGORY_RE = "|".join(sorted((re.escape(c[0]) for c in make_corpus.CATEGORIES), key=len, reverse=True))
CUSTOMER_SLOT_RE = {"order": r"(?P<order>\d{7})", "amount": r"€(?P<euros>\d+)\.(?P<cents>\d\d)",
                    "p": r"(?P<model>[A-Z][\w-]*) (?P<category>" + CATEGORY_RE + ")",
                    "fullname": r"(?P<fullname>[A-Z][\w-]* [A-Z][\w-]*)"}


def german_customer_templates() -> list[tuple[re.Pattern, str]]:
    """(English pattern, German template) of the customer sentences whose slots
    are an order number, an amount, a product or the customer's name."""
    out = [(re.compile(r"Hi, this is " + CUSTOMER_SLOT_RE["fullname"] + r"\."), "Hallo, hier ist {fullname}.")]
    for role, en, de in make_corpus.ALL_TEMPLATES:
        names = re.findall(r"\{(\w+)\}", en)
        if role != "c" or any(n not in CUSTOMER_SLOT_RE for n in names):
            continue
        parts = re.split(r"\{(\w+)\}", en)
        out.append((re.compile("".join(CUSTOMER_SLOT_RE[x] if i % 2 else re.escape(x) for i, x in enumerate(parts))),
                    de))
    return out


def german_customer(text: str, templates) -> str | None:
    """The German a customer would have written (the corpus' translation), or None."""
    out = []
    for sentence in re.split(r"(?<=[.!?]) +", text.strip()):
        for pattern, de in templates:
            m = pattern.fullmatch(sentence)
            if not m:
                continue
            g = m.groupdict()
            slots = {k: v for k, v in g.items() if v is not None}
            if "euros" in slots:
                slots["amount"] = f"{slots['euros']},{slots['cents']} €"
            if "category" in slots:
                cat = next(c for c in make_corpus.CATEGORIES if c[0] == slots["category"])
                slots.update(make_corpus.german_product(slots["model"], cat[2], cat[3], cat[4]))
            german = de.format(**slots)
            out.append(german[0].upper() + german[1:])
            break
        else:
            return None
    return " ".join(out)


def english_amounts(text: str) -> str:
    """German amounts written the English way: the customer's "117,90 €" stays
    as written through translation (protected), the checks want "€117.90"."""
    return re.sub(r"(\d+),(\d\d) €", r"€\1.\2", text)


def score_german_held_out(bot: str, dialogue: list[str], convs: list[dict], table: Path) -> dict:
    """The held-out conversations as a German customer writes them, through the German bot."""
    templates, refs = german_customer_templates(), german_references()
    inbound = [0, 0]   # customer messages whose de->en is the corpus' English
    facts = [0, 0]     # replies with every fact and slot
    exact = [0, 0]     # German replies equal to the reference German
    numbers = [0, 0]   # numbers and amounts of the English reply, as often in the German one
    similarity, failures, skipped = [], [], 0
    for conv in convs:
        users = [m["content"] for m in conv["messages"] if m["role"] == "user"]
        german = [german_customer(u, templates) for u in users]
        if any(g is None for g in german):
            skipped += 1
            continue
        stdout, _ = run_bot(bot, german, ["--orders", str(table), *dialogue])
        turns = stdout.split("\nKunde: ")[1:]
        for i, checks in enumerate(conv["checks"]):
            turn = turns[i] if i < len(turns) else ""
            en_in = re.search(r"^  \[de->en\] (.*)$", turn, flags=re.M)
            inbound[1] += 1
            inbound[0] += bool(en_in) and english_amounts(en_in.group(1).strip()) == users[i]
            model = re.search(r"^  \[grounded\] (.*)$", turn, flags=re.M) or re.search(
                r"^  \[assistant, en\] (.*)$", turn, flags=re.M)
            bot_line = re.search(r"^Bot: (.*)$", turn, flags=re.M)
            de_out = re.search(r"^  \[en->de\] (.*)$", turn, flags=re.M) or bot_line
            english = model.group(1) if model else ""
            # the order number may come from the table's German sentence, the rest from the English reply
            ok = all(c in english_amounts(english) or (re.fullmatch(r"\d{7}", c) and bot_line and c in bot_line.group(1))
                     for c in checks)
            facts[1] += 1
            facts[0] += ok
            if not ok and len(failures) < 6:
                failures.append(f"    {german[i]!r}\n      -> {english!r}\n      missing "
                                f"{[c for c in checks if c not in english_amounts(english)]}")
            asked = "[grounding:" in turn  # the bot asked for the number instead of answering
            if model and de_out and not asked:
                if ref := expected_german(english, refs):
                    tally_reference(de_out.group(1), english, ref, exact, similarity, failures)
                tally_kept(reply_spans(english), de_out.group(1), english, numbers, failures, "en->de", 12)
    return {"conversations": len(convs) - skipped, "skipped": skipped, "inbound": inbound, "facts": facts,
            "german_exact": exact, "german_similarity": round(sum(similarity) / max(len(similarity), 1), 4),
            "numbers": numbers, "failures": failures}


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bot", default=str(ROOT / "build" / "bin" / "support-bot"))
    ap.add_argument("--models", default=str(ROOT / "samples" / "support-bot" / "models"))
    ap.add_argument("--smollm2", default=str(ROOT / "build" / "models" / "smollm2-135m-instruct.q4_1.parley"))
    ap.add_argument("--smollm2-support", default=str(ROOT / "build" / "models" / "smollm2-135m-support.parley"),
                    help="SmolLM2 with the support-bot LoRA adapter merged (fetch_smollm2.sh --support)")
    ap.add_argument("--library", default=str(ROOT / "build" / "lib" / "libparley.so"),
                    help="for the model-alone figure (Python binding)")
    ap.add_argument("--conversations", type=int, default=60, help="held-out conversations (60: 89 replies)")
    ap.add_argument("--smollm2-conversations", type=int, default=30,
                    help="held-out conversations for SmolLM2 (about 10 s a reply on 2 busy cores)")
    ap.add_argument("--translation-lines", type=int, default=60)
    ap.add_argument("--only", choices=["trained", "smollm2", "support"], help="one dialogue model")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()

    models_dir = Path(args.models)
    policy = (models_dir / "policy.txt").read_text(encoding="utf-8").strip()
    convs = held_out(args.conversations)
    fresh = fresh_wordings()
    orders = read_orders(models_dir / "orders.csv")
    dialogues = {"trained (support-llama, 3.7 M)": ("trained", str(models_dir / "support-llama.parley"), [])}
    if Path(args.smollm2).exists():
        dialogues["SmolLM2-135M-Instruct (Q4_1)"] = ("smollm2", args.smollm2, ["--dialogue", args.smollm2])
    else:
        print(f"SmolLM2-135M-Instruct: skipped, {args.smollm2} is absent (samples/support-bot/fetch_smollm2.sh)")
    if Path(args.smollm2_support).exists():
        dialogues["SmolLM2-135M-Instruct + support LoRA (fine-tuned here)"] = (
            "support", args.smollm2_support, ["--dialogue", args.smollm2_support])
    else:
        print(f"SmolLM2 + support LoRA: skipped, {args.smollm2_support} is absent "
              "(samples/support-bot/fetch_smollm2.sh --support)")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp, "held_out_orders.csv")
        held_out_table(convs + fresh, table)
        for name, (key, path, extra) in dialogues.items():
            if args.only and key != args.only:
                continue
            t0 = time.perf_counter()
            subset = convs[: args.smollm2_conversations] if key == "smollm2" else convs
            h = score_held_out(args.bot, extra, subset, table, policy)
            fr = score_held_out(args.bot, extra, fresh, table, policy)
            o = score_orders(args.bot, extra, orders, policy)
            gh = score_german_held_out(args.bot, extra, subset, table)
            alone = model_alone(path, subset, policy, args.library)
            seconds = time.perf_counter() - t0
            results[key] = {"held_out": h, "fresh_wordings": fr, "orders": o, "model_alone": alone,
                            "german_held_out": gh, "seconds": round(seconds, 1)}
            print(f"\n== {name}  ({seconds:.0f} s)")
            print(f"  held-out set ({len(subset)} conversations), replies with every fact and slot: "
                  f"{percent(h['passed'], h['turns'])}")
            print(f"  (the same, a greeting by the name the customer gave accepted for \"Mr/Ms <surname>\": "
                  f"{percent(h['passed_name_as_given'], h['turns'])})")
            print(f"  held-out set, replies with an invented number or amount:        "
                  f"{percent(h['invented'], h['turns'])}")
            print("  held-out set, checks missed by kind: " + ", ".join(f"{k} {v}" for k, v in h["missing"].items()))
            print(f"  fresh wordings ({len(fresh)} questions, 2 per wording), every fact and slot: "
                  f"{percent(fr['passed'], fr['turns'])}; invented number or amount in {fr['invented']}")
            if alone:
                print(f"  (model alone, reference history, no tool or grounding:          "
                      f"{percent(alone['passed'], alone['turns'])})")
            print(f"  order table ({len(orders)} orders + 8 unknown numbers), right facts: "
                  f"{percent(o['passed'], o['questions'])}; invented numbers in {o['invented']}")
            print(f"  held-out set in German ({gh['conversations']} conversations, the corpus' German; "
                  f"{gh['skipped']} without one):")
            print(f"    customer messages translated to the corpus' English exactly: {percent(*gh['inbound'])}")
            print(f"    replies with every fact and slot:                             {percent(*gh['facts'])}")
            print(f"    German replies equal to the reference translation:            {percent(*gh['german_exact'])}"
                  f"  (mean similarity {gh['german_similarity']:.3f})")
            print(f"    order numbers and amounts of the reply, verbatim in German:   {percent(*gh['numbers'])}")
            for f in h["failures"] + o["failures"] + gh["failures"]:
                print(f)
    german_bots = {"trained": ("trained dialogue model", [])}
    if Path(args.smollm2_support).exists():
        german_bots["support"] = ("SmolLM2 + support LoRA", ["--dialogue", args.smollm2_support])
    for key, (label, extra) in german_bots.items():
        if args.only and key != args.only:
            continue
        t = score_translation(args.bot, args.translation_lines, extra)
        results.setdefault("translation", {})[key] = t
        print(f"\n== translation through the German bot ({label}, {t['messages']} customer messages)")
        print(f"  order numbers and amounts of the customer, verbatim in English:   "
              f"{percent(*t['inbound'])}")
        print(f"  order numbers and amounts of the reply, verbatim in German:       "
              f"{percent(*t['outbound'])}")
        print(f"  German replies equal to the reference translation:               "
              f"{percent(*t['german_exact'])}  (mean similarity {t['german_similarity']:.3f})")
        for f in t["failures"]:
            print(f)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
