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
