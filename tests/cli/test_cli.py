"""`parley translate` and `parley chat` on crafted stdin: every good line is
translated, each bad line (invalid UTF-8, a NUL byte, too long for the model)
is reported on stderr by its input line number, the output stays aligned with
the input (a bad line gives an empty output line), and the exit status says
that something failed. Run through ctest (PARLEY_CLI, PARLEY_DEMO_MODELS,
PARLEY_PLUGIN_BUILD_DIR)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

CLI = os.environ.get("PARLEY_CLI", "")
MODELS = Path(os.environ.get("PARLEY_DEMO_MODELS", ""))
DE_EN = str(MODELS / "opus-mt-de-en.parley")
LLM = str(MODELS / "support-llama.parley")

pytestmark = pytest.mark.skipif(not CLI, reason="PARLEY_CLI is not set (run through ctest)")


def run(args: list[str], stdin: bytes, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PARLEY_PLUGIN_PATH"] = os.environ.get("PARLEY_PLUGIN_BUILD_DIR", "")
    return subprocess.run(
        [CLI, *args, "--threads", "1"], input=stdin, capture_output=True, timeout=timeout, env=env, check=False
    )


GOOD = [f"Hallo! Wo ist meine Bestellung {9019900 + i}?".encode() for i in range(50)]
TOO_LONG = b"wort " * 600  # > 256 source tokens: the model's limit


def crafted() -> tuple[list[bytes], dict[int, str]]:
    """45 input lines; the bad ones (1-based line number -> what stderr must say)."""
    lines = list(GOOD[:45])
    bad = {
        7: r"line 7: .*UTF-8.*byte offset 6",
        12: r"line 12: .*tokens, the model accepts 256",
        20: r"line 20: .*NUL byte at byte offset 5",
        41: r"line 41: .*tokens, the model accepts 256",
    }
    lines[6] = b"Hallo \xff Welt!"
    lines[11] = TOO_LONG
    lines[19] = b"Guten\0 Morgen!"
    lines[40] = TOO_LONG
    lines[24] = b""  # an empty line is no error: an empty output line
    return lines, bad


def test_translate_reports_bad_lines_and_keeps_every_good_one():
    lines, bad = crafted()
    # --long-text error: a line over the model's positions is refused (the default splits it).
    out = run(["translate", DE_EN, "--long-text", "error"], b"\n".join(lines) + b"\n")
    got = out.stdout.decode().split("\n")
    assert got[-1] == "", "output ends with a newline"
    got = got[:-1]
    assert len(got) == len(lines), f"{len(got)} output lines for {len(lines)} input lines; stderr: {out.stderr!r}"
    # The good lines translate exactly as they do in a run without the bad ones.
    good = [i for i, l in enumerate(lines) if l and (i + 1) not in bad]
    ref = run(["translate", DE_EN], b"\n".join(lines[i] for i in good) + b"\n")
    assert ref.returncode == 0, ref.stderr
    ref_lines = ref.stdout.decode().split("\n")[:-1]
    assert len(ref_lines) == len(good)
    for i, want in zip(good, ref_lines):
        assert want and got[i] == want, f"line {i + 1}"
    for n in list(bad) + [25]:
        assert got[n - 1] == "", f"line {n}: a bad or empty line gives an empty output line"
    err = out.stderr.decode()
    for n, pattern in bad.items():
        assert re.search(pattern, err), f"stderr does not report line {n}: {err!r}"
    reported = sorted(int(m) for m in re.findall(r"line (\d+):", err))
    assert reported == sorted(bad), err
    assert "text #" not in err, "the batch position means nothing to the user"
    assert out.returncode == 1


def test_translate_splits_long_lines_and_documents_and_protects_numbers(tmp_path):
    # By default a line over the model's 256 positions is split into sentences and translated.
    long_line = b" ".join(GOOD[:40])  # 40 sentences, about 400 tokens
    out = run(["translate", DE_EN, "--protect", "numbers", "--show-protected"], GOOD[0] + b"\n" + long_line + b"\n")
    assert out.returncode == 0, out.stderr
    got = out.stdout.decode().split("\n")
    assert len(got) == 3 and got[2] == ""
    for i in range(40):
        assert got[1].count(str(9019900 + i)) == 1, f"order {9019900 + i} in {got[1]!r}"
    assert re.search(r"line 2: 40 protected span\(s\)", out.stderr.decode())
    # A file of paragraphs: each is translated sentence by sentence; blank lines and line breaks stay.
    doc = tmp_path / "doc.txt"
    paragraphs = [b" ".join(GOOD[k:k + 3]) + b"\n" + GOOD[k + 3] for k in range(0, 20, 4)]
    doc.write_bytes(b"\n\n".join(paragraphs) + b"\n")
    for unit in ("paragraph", "document"):
        out = run(["translate", DE_EN, "--input", str(doc), "--unit", unit, "--protect", "numbers"], b"")
        assert out.returncode == 0, out.stderr
        text = out.stdout.decode()
        assert text.count("\n\n") == 4 and text.count("\n") == 14 and text.endswith("\n"), repr(text)
        for i in range(20):
            assert text.count(str(9019900 + i)) == 1, f"{unit}: order {9019900 + i}"
    # A caller pattern that does not compile is reported with its offset.
    out = run(["translate", DE_EN, "--protect-pattern", "ab(c"], GOOD[0] + b"\n")
    assert out.returncode == 1 and re.search(r"does not compile at offset 4", out.stderr.decode()), out.stderr


def test_translate_all_good_exits_zero_and_nbest_stays_aligned():
    lines = [GOOD[0], b"", GOOD[1]]
    out = run(["translate", DE_EN], b"\n".join(lines) + b"\n")
    assert out.returncode == 0 and out.stderr == b""
    assert len(out.stdout.decode().split("\n")[:-1]) == 3
    # --nbest 2: two lines per input line, bad and empty lines included.
    lines = [GOOD[0], b"Hallo \xc3\x28", b"", GOOD[1]]
    out = run(["translate", DE_EN, "--nbest", "2"], b"\n".join(lines) + b"\n")
    got = out.stdout.decode().split("\n")[:-1]
    assert len(got) == 8, got
    assert all("\t" in g for g in got[0:2] + got[6:8])
    assert got[2:6] == ["", "", "", ""]
    assert re.search(r"line 2: .*UTF-8", out.stderr.decode())
    assert out.returncode == 1
    # The last line without a newline, with a CR (CRLF input): still one line each.
    out = run(["translate", DE_EN], GOOD[0] + b"\r\n" + GOOD[1])
    assert out.returncode == 0 and len(out.stdout.decode().split("\n")[:-1]) == 2


def test_chat_reports_a_bad_line_and_goes_on():
    stdin = b"Hello!\nWhere is\0 my order?\nWhat are your opening hours?\n\xff\xfe\n"
    out = run(["chat", LLM, "--max-tokens", "8"], stdin)
    text = out.stdout.decode(errors="replace")
    err = out.stderr.decode(errors="replace")
    assert "> Hello!" in text and "> What are your opening hours?" in text, text
    assert re.search(r"line 2: .*NUL byte at byte offset 8", err), err
    assert re.search(r"line 4: .*UTF-8", err), err
    assert "Where is" not in text, "a line with a NUL is refused, not cut short and sent"
    assert out.returncode == 1


def test_chat_json_schema_file(tmp_path):
    """--json-schema-file: every reply is a JSON object of the schema; a reply
    cut by --max-tokens is flagged incomplete on stderr."""
    import json

    schema = tmp_path / "order.json"
    schema.write_text(
        '{"type":"object","properties":{"status":{"enum":["shipped","pending"]},"refund":{"type":"boolean"}},'
        '"required":["status","refund"],"additionalProperties":false}'
    )
    out = run(["chat", LLM, "--json-schema-file", str(schema), "--max-tokens", "60"], b"Where is my order?\nAnd now?\n")
    assert out.returncode == 0, out.stderr
    replies = [line for line in out.stdout.decode().splitlines() if line and not line.startswith(">")]
    assert len(replies) == 2, replies
    for reply in replies:
        doc = json.loads(reply)
        assert set(doc) == {"status", "refund"} and doc["status"] in ("shipped", "pending"), doc
        assert isinstance(doc["refund"], bool), doc
    cut = run(["chat", LLM, "--json-schema-file", str(schema), "--max-tokens", "3"], b"Hi\n")
    assert "[incomplete:" in cut.stderr.decode(), cut.stderr
    bad = run(["chat", LLM, "--grammar-file", str(schema)], b"Hi\n")  # a JSON file is no GBNF grammar
    assert re.search(r"grammar: line 1, column \d+", bad.stderr.decode()), bad.stderr


def test_score_prints_sums_and_reports_bad_lines():
    """`parley score`: "source<TAB>target" lines of a translation model, a bad line reported by number."""
    r = run(["score", DE_EN, "--per-token"], b"Hallo Welt!\tHello world!\nHallo \xff Welt\tHi\nnur Quelle\n")
    out = r.stdout.decode().split("\n")
    assert r.returncode == 1
    total, count, per_token = out[0].split("\t")
    values = [float(v) for v in per_token.split()]
    assert int(count) == len(values) >= 2 and float(total) < 0
    assert abs(sum(values) - float(total)) <= 1e-4 * len(values)
    assert out[1] == "" and out[2] == ""
    err = r.stderr.decode()
    assert re.search(r"line 2: .*UTF-8", err) and re.search(r"line 3: .*sources is NULL", err)
    # A dialogue model: a whole line, or an unscored prompt before a tab.
    r = run(["score", LLM], b"Where is my order?\nWhere is my\t order?\n")
    assert r.returncode == 0, r.stderr.decode()
    whole, cont = [line.split("\t") for line in r.stdout.decode().splitlines()]
    assert float(whole[0]) < 0 and float(cont[0]) < 0 and int(cont[1]) < int(whole[1])
