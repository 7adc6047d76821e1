"""`parley translate` and `parley chat` on crafted stdin: every good line is
translated, each bad line (invalid UTF-8, a NUL byte, too long for the model)
is reported on stderr by its input line number, the output stays aligned with
the input (a bad line gives an empty output line), and the exit status says
that something failed. Then the tool's conventions: --version, --json,
exit status 2 for usage errors, config enums by name, the chat's commands and
line editing on a terminal, the progress bar on a terminal only, "Runnable:
NO" after a checksum failure, and `parley convert` finding its interpreter.
Run through ctest (PARLEY_CLI, PARLEY_DEMO_MODELS, PARLEY_PLUGIN_BUILD_DIR)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

CLI = os.environ.get("PARLEY_CLI", "")
MODELS = Path(os.environ.get("PARLEY_DEMO_MODELS", ""))
DE_EN = str(MODELS / "opus-mt-de-en.parley")
LLM = str(MODELS / "support-llama.parley")
PARITY = Path(os.environ.get("PARLEY_PARITY_DIR", ""))

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
    assert "Hello!" not in text and "opening hours" not in text, f"piped input is not echoed: {text!r}"
    assert len([line for line in text.split("\n") if line]) == 2, f"two replies: {text!r}"
    # One output line per input line: an empty one for each refused line (the replies here have no newline).
    assert text.split("\n")[1] == text.split("\n")[3] == "" and text.count("\n") == 4, f"aligned: {text!r}"
    assert re.search(r"line 2: .*NUL byte at byte offset 8", err), err
    assert re.search(r"line 4: .*UTF-8", err), err
    assert out.returncode == 1
    # --json: one object per line of input, the refused ones included; nothing else on stdout.
    out = run(["chat", LLM, "--max-tokens", "8", "--json"], stdin)
    got = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert [g["line"] for g in got] == [1, 2, 3, 4], got
    assert isinstance(got[0]["reply"], str) and got[0]["generated_tokens"] > 0 and "error" not in got[0], got[0]
    assert got[1]["error"]["status"] == "PARLEY_ERROR_INVALID_ARGUMENT" and "NUL byte" in got[1]["error"]["message"]
    assert "reply" in got[2] and "UTF-8" in got[3]["error"]["message"], got
    assert out.returncode == 1


def test_chat_context_option_drops_the_oldest_turns():
    # Four long turns: past the demo model's 1,024 positions from the second on.
    line = ("Where is my order number 9019917 please " * 45).strip().encode()
    stdin = (line + b"\n") * 4
    out = run(["chat", LLM, "--max-tokens", "4"], stdin)
    err = out.stderr.decode()
    assert out.returncode == 1 and "line 2:" in err and "--context drop-oldest drops the oldest turns" in err, err
    assert "PARLEY_CHAT_CONTEXT" not in err, err  # the advice names this tool's option, not the C constant
    out = run(["chat", LLM, "--max-tokens", "4", "--context", "drop-oldest"], stdin)
    assert out.returncode == 0, out.stderr.decode()
    assert len([r for r in out.stdout.decode().split("\n") if r]) == 4, out.stdout


def test_chat_json_schema_file(tmp_path):
    """--json-schema-file: every reply is a JSON object of the schema; a reply
    cut by --max-tokens is flagged incomplete on stderr."""
    schema = tmp_path / "order.json"
    schema.write_text(
        '{"type":"object","properties":{"status":{"enum":["shipped","pending"]},"refund":{"type":"boolean"}},'
        '"required":["status","refund"],"additionalProperties":false}'
    )
    out = run(["chat", LLM, "--json-schema-file", str(schema), "--max-tokens", "60"], b"Where is my order?\nAnd now?\n")
    assert out.returncode == 0, out.stderr
    replies = [line for line in out.stdout.decode().splitlines() if line]
    assert len(replies) == 2, replies
    for reply in replies:
        doc = json.loads(reply)
        assert set(doc) == {"status", "refund"} and doc["status"] in ("shipped", "pending"), doc
        assert isinstance(doc["refund"], bool), doc
    cut = run(["chat", LLM, "--json-schema-file", str(schema), "--max-tokens", "3"], b"Hi\n")
    assert "[incomplete:" in cut.stderr.decode(), cut.stderr
    bad = run(["chat", LLM, "--grammar-file", str(schema)], b"Hi\n")  # a JSON file is no GBNF grammar
    assert re.search(r"grammar: line 1, column \d+", bad.stderr.decode()), bad.stderr


# ----------------------------------------------------------------- conventions


def cli(args: list[str], stdin: bytes = b"", env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The tool with exactly these arguments (no --threads appended)."""
    e = dict(os.environ)
    e["PARLEY_PLUGIN_PATH"] = os.environ.get("PARLEY_PLUGIN_BUILD_DIR", "")
    e.update(env or {})
    return subprocess.run([CLI, *args], input=stdin, capture_output=True, timeout=timeout, env=e, check=False)


def test_version_help_and_usage_errors_exit_2():
    out = cli(["--version"])
    assert out.returncode == 0 and re.fullmatch(rb"parley \d+\.\d+\.\d+\n", out.stdout), out
    assert cli(["--help"]).returncode == 0
    assert cli(["translate", "--help"]).returncode == 0
    usage = [
        [],  # no subcommand
        ["frobnicate"],
        ["translate"],  # the model is required
        ["translate", DE_EN, "--beam", "0"],  # out of range
        ["translate", DE_EN, "--no-such-option"],
        ["inspect", DE_EN, "--kv-cache", "fp8"],  # not one of the choices
        ["inspect", DE_EN, "--activations", "fp8"],
        ["translate", DE_EN, "--nbest", "2", "--unit", "paragraph"],
        ["translate", DE_EN, "--protect", "numbers,phones"],
        ["translate", DE_EN, "--beam", "2", "--nbest", "5"],  # 5 beams were run without a word
    ]
    for args in usage:
        out = cli(args, b"Hallo\n")
        assert out.returncode == 2, f"{args}: exit {out.returncode}, stderr {out.stderr!r}"
        assert out.stderr and not out.stdout, args
    # An unknown first word is named, with the commands there are.
    for word, kind in (("frobnicate", b"command"), ("--frobnicate", b"option")):
        out = cli([word])
        assert b"unknown " + kind + b" '" + word.encode() + b"'" in out.stderr, out.stderr
        assert b"translate" in out.stderr, out.stderr
    # A failure that is no usage error stays 1.
    out = cli(["inspect", str(MODELS / "no-such-file.parley")])
    assert out.returncode == 1 and b"no-such-file" in out.stderr, out


def test_inspect_names_config_enums_and_has_json():
    out = cli(["inspect", LLM, "--no-verify"])
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    for key, name in [("kind", "decoder-only"), ("decoder.activation", "silu"), ("decoder.norm", "rms_norm"),
                      ("decoder.norm_placement", "pre"), ("decoder.position", "rotary"), ("decoder.rope_scaling", "none")]:
        assert re.search(rf"^  {re.escape(key)} +{name}$", text, re.M), f"{key} -> {name} in\n{text}"
    assert re.search(r"^  decoder\.num_layers +4$", text, re.M), "plain integers stay numbers"
    marian = cli(["inspect", DE_EN, "--no-verify"]).stdout.decode()
    assert re.search(r"^  kind +encoder-decoder$", marian, re.M) and re.search(r"^  encoder\.position +sinusoidal$", marian, re.M)

    doc = json.loads(cli(["inspect", LLM, "--json"]).stdout)
    assert doc["runnable"] is True and doc["architecture"] == "LlamaForCausalLM" and doc["kind"] == "decoder-only"
    assert doc["config"]["decoder.activation"] == "silu" and doc["config"]["decoder.num_layers"] == 4
    assert len(doc["tensors"]) == int(re.search(r"(\d+) tensors", text).group(1))
    assert all(t["checksum"] == "ok" for t in doc["tensors"]) and doc["tokenizers"][0]["checksum"] == "ok"
    assert doc["memory"]["kv_bytes_per_token"] > 0 and doc["kernel_plan"], doc.keys()
    assert 0 <= doc["memory"]["released_bytes"] <= doc["memory"]["file_bytes"], doc["memory"]

    plugins = json.loads(cli(["plugins", "--json"]).stdout)
    cpu = [p for p in plugins["plugins"] if p["name"] == "cpu"]
    assert cpu and cpu[0]["kernels"] > 0 and cpu[0]["path"].endswith(".so"), plugins["plugins"]
    assert any(d["name"] == "cpu" and d["available"] for d in plugins["devices"])
    assert sum(1 for k in plugins["kernels"] if k["plugin"] == "cpu") == cpu[0]["kernels"]


def test_marian_with_separate_vocabularies_is_runnable_and_translates():
    """The text parity model (tests/parity/make_text_goldens.py): inspect says
    runnable with working tokenizers, and translate gives transformers'
    greedy texts (the file's defaults: greedy, no_repeat_ngram_size 1)."""
    model = str(PARITY / "models" / "marian_separate_text.parley")
    gold = json.loads((PARITY / "goldens" / "text" / "marian_separate_text.json").read_text())
    out = cli(["inspect", model])
    text = out.stdout.decode()
    assert out.returncode == 0, out
    assert re.search(r"^Runnable: yes", text, re.M) and re.search(r"^Text: yes", text, re.M), text
    assert re.search(r"^Tokenizer 0: sentencepiece, source, ", text, re.M), text
    assert re.search(r"^Tokenizer 1: sentencepiece, target, ", text, re.M), text
    doc = json.loads(cli(["inspect", model, "--json"]).stdout)
    assert doc["runnable"] is True and doc["text"] is True
    assert (doc["config"]["vocab_size"], doc["config"]["decoder_vocab_size"]) == (gold["vocab_size"],
                                                                                  gold["decoder_vocab_size"])
    sources = "".join(s["text"] + "\n" for s in gold["source"]).encode()
    out = run(["translate", model, "--max-length", str(gold["greedy"]["settings"]["max_new_tokens"])], sources)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split("\n")[:-1] == gold["greedy"]["texts"]


def test_inspect_checksum_failure_says_not_runnable(tmp_path):
    data = bytearray(Path(LLM).read_bytes())
    data[len(data) // 2] ^= 0x10  # the middle of the file: weights (7 MB of the 7.2 MB)
    bad = tmp_path / "flipped.parley"
    bad.write_bytes(bytes(data))
    out = cli(["inspect", str(bad)])
    text = out.stdout.decode()
    assert out.returncode == 1, out
    assert text.count("CHECKSUM MISMATCH") == 1, text
    assert re.search(r"^Runnable: NO — 1 tensor\(s\) and 0 tokenizer blob\(s\) failed checksum verification$", text, re.M), text
    assert "Runnable: yes" not in text
    doc = json.loads(cli(["inspect", str(bad), "--json"]).stdout)
    assert doc["runnable"] is False and "checksum" in doc["not_runnable_because"]
    assert [t["checksum"] for t in doc["tensors"]].count("mismatch") == 1
    # What the verdict promises: the loader refuses the file.
    assert cli(["chat", str(bad)], b"Hi\n").returncode == 1


def test_translate_json_lines():
    lines = [GOOD[0], b"", b"Hallo \xff", GOOD[1]]
    out = run(["translate", DE_EN, "--json", "--nbest", "2"], b"\n".join(lines) + b"\n")
    got = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert [g["line"] for g in got] == [1, 2, 3, 4], got
    assert len(got[0]["hypotheses"]) == 2 and got[0]["hypotheses"][0]["score"] >= got[0]["hypotheses"][1]["score"]
    assert got[1]["hypotheses"] == [] and "error" not in got[1]
    assert got[2]["hypotheses"] == [] and "UTF-8" in got[2]["error"]["message"]
    # The same best text as the plain output.
    plain = run(["translate", DE_EN], GOOD[0] + b"\n").stdout.decode().strip()
    assert got[0]["hypotheses"][0]["text"] == plain
    assert out.returncode == 1
    assert got[0]["hypotheses"][0]["cut_by_length"] is False
    # A translation that used up --max-length is flagged: in the JSON, and on stderr.
    cut = run(["translate", DE_EN, "--json", "--max-length", "2"], GOOD[0] + b"\n")
    assert json.loads(cut.stdout)["hypotheses"][0]["cut_by_length"] is True, cut.stdout
    cut = run(["translate", DE_EN, "--max-length", "2"], GOOD[0] + b"\n")
    assert cut.returncode == 0 and b"line 1: the translation used up its token limit" in cut.stderr, cut.stderr
    assert b"cut short" not in run(["translate", DE_EN], GOOD[0] + b"\n").stderr



def test_translate_json_paragraphs(tmp_path):
    doc = tmp_path / "doc.txt"
    paragraphs = [b" ".join(GOOD[k:k + 3]) for k in range(0, 9, 3)]
    data = b"\n\n".join(paragraphs) + b"\n"
    doc.write_bytes(data)
    out = run(["translate", DE_EN, "--input", str(doc), "--unit", "paragraph", "--json"], b"")
    assert out.returncode == 0, out.stderr
    got = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert [g["paragraph"] for g in got] == [1, 2, 3], got
    for g, para in zip(got, paragraphs):
        assert data[g["source_offset"]:g["source_offset"] + g["source_length"]] == para
    plain = run(["translate", DE_EN, "--input", str(doc), "--unit", "paragraph"], b"").stdout.decode()
    assert plain == "\n\n".join(g["text"] for g in got) + "\n"


def _read_pty(fd: int, proc: subprocess.Popen, until: bytes | None = None, timeout: float = 120) -> bytes:
    buf, end = b"", time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            buf += chunk
            if until is not None and buf.endswith(until):
                return buf
        elif until is None and proc.poll() is not None:
            break
    return buf


def _translate_on_a_terminal(args: list[str], feed) -> tuple[int, bytes, bytes]:
    """`parley translate ARGS` with stderr on a terminal (a pty) and stdout on a pipe;
    feed(stdin) writes the input. Returns (exit status, stdout, what the terminal got)."""
    env = dict(os.environ, PARLEY_PLUGIN_PATH=os.environ.get("PARLEY_PLUGIN_BUILD_DIR", ""))
    master, slave = pty.openpty()
    proc = subprocess.Popen([CLI, "translate", DE_EN, "--threads", "1", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    writer = threading.Thread(target=lambda: (feed(proc.stdin), proc.stdin.close()))
    writer.start()
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()))
    reader.start()
    try:
        err = _read_pty(master, proc)
        proc.wait(timeout=240)
    finally:
        writer.join()
        reader.join()
        os.close(master)
    return proc.returncode, out[0], err


def test_progress_bar_on_a_terminal_only(tmp_path):
    text = b"\n".join(GOOD[:24]) + b"\n"

    def slowly(stdin):  # the first batch, then the rest after 1.3 s: the run takes longer than the bar's 1 s
        stdin.write(text[: text.index(GOOD[4])])
        stdin.flush()
        time.sleep(1.3)
        stdin.write(text[text.index(GOOD[4]):])

    rc, out, err = _translate_on_a_terminal(["--batch", "4"], slowly)
    assert rc == 0 and len(out.decode().splitlines()) == 24, (rc, out)
    # A pipe has no size: lines so far, the rate and the time.
    assert re.search(rb"\r\x1b\[K(8|12|16|20|24) lines  [\d.]+/s  \d+ s", err), err[:300]
    assert err.endswith(b"\r\x1b[K"), "the bar is erased at the end"
    assert out.decode().splitlines() == run(["translate", DE_EN, "--batch", "4"], text).stdout.decode().splitlines()
    # A file has a size: a bar with a percentage (when the run lasts over a second; it is 24 lines here).
    src = tmp_path / "in.txt"
    src.write_bytes(text * 3)
    start = time.monotonic()
    rc, out, err = _translate_on_a_terminal(["--batch", "4", "--input", str(src)], lambda stdin: None)
    assert rc == 0 and len(out.decode().splitlines()) == 72
    if time.monotonic() - start > 1.5:
        assert re.search(rb"\r\x1b\[K\[#*-*\] +\d+%  \d+ lines", err), err[:300]
    # stderr on a pipe: no bar (test_translate_all_good_exits_zero_and_nbest_stays_aligned: stderr stays empty).
    assert run(["translate", DE_EN, "--batch", "4", "--input", str(src)], b"").stderr == b""


@pytest.mark.skipif(os.environ.get("PARLEY_CLI_LINE_EDITING") != "1",
                    reason="parley was built without libedit (no line editing to test)")
def test_chat_on_a_terminal_edits_lines_and_knows_help():
    master, slave = pty.openpty()
    env = dict(os.environ, PARLEY_PLUGIN_PATH=os.environ.get("PARLEY_PLUGIN_BUILD_DIR", ""), TERM="xterm")
    proc = subprocess.Popen([CLI, "chat", LLM, "--threads", "1", "--max-tokens", "4"], stdin=slave, stdout=slave,
                            stderr=slave, env=env, close_fds=True)
    os.close(slave)

    def type_keys(keys: bytes) -> None:
        # As a person types: after the prompt. Keys that arrive before libedit
        # has put the terminal in raw mode go through the kernel's line
        # discipline instead: a Ctrl-D typed ahead is then not seen as end of
        # input (another Ctrl-D is needed), and the chat would wait on.
        time.sleep(0.3)
        os.write(master, keys)

    try:
        assert b"/help" in _read_pty(master, proc, until=b"> ")
        # Typed "stats", Ctrl-A (start of line), "/": only line editing makes that "/stats".
        type_keys(b"stats\x01/\r")
        assert re.search(rb"prompt \d+ tokens, \d+ reused", _read_pty(master, proc, until=b"> "))
        type_keys(b"/help\r")
        shown = _read_pty(master, proc, until=b"> ")
        assert b"/reset" in shown and b"/stats" in shown, shown
        type_keys(b"Hello!\r")  # a reply, then the prompt again
        assert _read_pty(master, proc, until=b"> ").count(b"\n") >= 2
        type_keys(b"\x1b[A\x1b[A\r")  # up, up: the history's "/help" again
        shown = _read_pty(master, proc, until=b"> ")
        assert b"/reset" in shown, shown
        type_keys(b"\x04")  # Ctrl-D: end of input
        proc.wait(timeout=60)
    finally:
        proc.kill()
        os.close(master)
    assert proc.returncode == 0


def test_chat_help_is_a_command_when_piped():
    out = run(["chat", LLM, "--max-tokens", "4", "--json"], b"/help\nHello!\n")
    text = out.stdout.decode()
    assert "/reset" in text and "/stats" in text, text
    replies = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert [r["line"] for r in replies] == [2], "/help is no message to the model"


def test_convert_runs_the_converter_or_says_what_is_missing(tmp_path):
    # A build tree's parley: the interpreter the build was configured with, and this tree's converter.
    out = cli(["convert", "--help"])
    assert out.returncode == 0 and b"parley-convert" in out.stdout, out.stderr
    # An interpreter without the converter's packages: one clear line, no traceback.
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    out = cli(["convert", "--help"], env={"PARLEY_PYTHON": str(bare / "bin" / "python")})
    err = out.stderr.decode()
    assert out.returncode == 1 and "Traceback" not in err, err
    assert "cannot import the converter" in err and "No module named" in err and "pip install" in err, err


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
    assert re.search(r"line 2: .*UTF-8", err) and "line 3: has no TAB: a translation model scores lines" in err, err
    # A dialogue model: a whole line, or an unscored prompt before a tab.
    r = run(["score", LLM], b"Where is my order?\nWhere is my\t order?\n")
    assert r.returncode == 0, r.stderr.decode()
    whole, cont = [line.split("\t") for line in r.stdout.decode().splitlines()]
    assert float(whole[0]) < 0 and float(cont[0]) < 0 and int(cont[1]) < int(whole[1])
    # --json (accepted and ignored before): one object per line, errors included, the same figures.
    text = b"Hallo Welt!\tHello world!\nnur Quelle\n"
    plain = run(["score", DE_EN, "--per-token"], text).stdout.decode().split("\n")
    r = run(["score", DE_EN, "--per-token", "--json"], text)
    assert r.returncode == 1
    good, bad = [json.loads(line) for line in r.stdout.decode().splitlines()]
    total, count, per_token = plain[0].split("\t")
    assert good["line"] == 1 and abs(good["score"] - float(total)) < 1e-5 and len(good["tokens"]) == int(count)
    plain_values = [float(v) for v in per_token.split()]  # printed with 6 decimals
    assert len(good["logprobs"]) == len(plain_values)
    assert all(abs(a - b) <= 1e-6 for a, b in zip(good["logprobs"], plain_values))
    assert bad["line"] == 2 and bad["error"]["status"] == "PARLEY_ERROR_INVALID_ARGUMENT"


def test_unwritable_output_folders_and_endless_lines_are_errors(tmp_path):
    # Results written to a full disk are lost: that is an error, not exit 0.
    with open("/dev/full", "wb") as full:
        r = subprocess.run([CLI, "translate", DE_EN], input=b"Hallo!\n", stdout=full, stderr=subprocess.PIPE,
                           timeout=120, env={**os.environ, "PARLEY_PLUGIN_PATH": os.environ.get("PARLEY_PLUGIN_BUILD_DIR", "")})
    assert r.returncode == 1 and b"writing the output failed" in r.stderr, r.stderr
    # A folder given as a file was read as an empty file.
    for args in (["translate", DE_EN, "-i", str(tmp_path)], ["translate", DE_EN, "--glossary", str(tmp_path)],
                 ["score", DE_EN, "-i", str(tmp_path)], ["chat", LLM, "--system-file", str(tmp_path)]):
        r = cli(args)
        assert r.returncode == 1 and b"it is a folder" in r.stderr, (args, r.stderr)
    # A folder as standard input read as empty input (exit 0, nothing printed).
    folder = os.open(tmp_path, os.O_RDONLY)
    try:
        for args in (["translate", DE_EN], ["score", DE_EN], ["chat", LLM]):
            r = subprocess.run([CLI, *args], stdin=folder, capture_output=True, timeout=120,
                               env={**os.environ, "PARLEY_PLUGIN_PATH": os.environ.get("PARLEY_PLUGIN_BUILD_DIR", "")})
            assert r.returncode == 1 and b"standard input: it is a folder" in r.stderr, (args, r.stderr)
    finally:
        os.close(folder)
    # A repeatable option takes one value per use: it left "model is required" when an option followed the model.
    lines = tmp_path / "lines.txt"
    lines.write_bytes(b"Hallo Welt\n")
    r = cli(["translate", "--keep", "Welt", DE_EN, "-i", str(lines), "--show-protected"])
    assert r.returncode == 0 and b"Welt" in r.stdout and b'glossary "Welt"' in r.stderr, r.stderr
    # A --plugin-dir that is no folder is named (it was skipped without a word).
    r = cli(["plugins", "--plugin-dir", str(tmp_path / "none")])
    assert r.returncode == 0 and b"--plugin-dir" in r.stderr and b"not searched" in r.stderr, r.stderr
    # A glossary term with a NUL byte would be cut there by the C API: refused, naming the line.
    glossary = tmp_path / "glossary.txt"
    glossary.write_bytes(b"Nordwind\nSaale\x00Monitor\n")
    r = cli(["translate", DE_EN, "--glossary", str(glossary)], stdin=b"Hallo!\n")
    assert r.returncode == 2 and b"line 2 holds a NUL byte" in r.stderr and not r.stdout, r.stderr
    # A line with no end (here just over 64 MiB) is reported, not read into memory without limit;
    # the lines before it are translated.
    r = cli(["translate", DE_EN], stdin=b"Hallo!\n" + b"a" * ((64 << 20) + 10))
    assert r.returncode == 1 and b"line 2 is longer than 64 MiB" in r.stderr, r.stderr
    assert len(r.stdout.splitlines()) == 1, r.stdout
    # Sampling settings that are no settings are refused by name, not replaced by the model's defaults.
    for args, message in ((["--temperature", "-5"], b"--temperature"), (["--temperature", "nan"], b"--temperature"),
                          (["--top-p", "nan"], b"--top-p"), (["--top-p", "1.5"], b"--top-p"),
                          # a float rounds these to 0, which meant the model's default
                          (["--temperature", "1e-300"], b"--temperature"), (["--top-p", "1e-300"], b"--top-p"),
                          (["--temperature", "1e7"], b"1e6")):
        r = cli(["chat", LLM, *args])
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
    # Counts and seeds that are no whole numbers in range (CLI11 wrapped -1 and 2^64 into unsigned options; the
    # library then said "a count is absurdly large" without naming the option, or used the wrapped seed).
    for cmd, args in ((["chat", LLM], ["--seed", "18446744073709551616"]), (["chat", LLM], ["--seed", "-1"]),
                      (["chat", LLM], ["--max-tokens", "-1"]), (["chat", LLM], ["--top-k", "-5"]),
                      (["translate", DE_EN], ["--max-length", "-1"]),
                      (["translate", DE_EN], ["--max-batch-tokens", "99999999999999999999"]),
                      (["translate", DE_EN], ["--max-source-tokens", "1.5"]),
                      (["translate", DE_EN], ["--length-penalty", "nan"])):
        r = cli([*cmd, *args], stdin=b"Hallo!\n")
        assert r.returncode == 2 and args[0].encode() + b": must be" in r.stderr, (args, r.stderr)
    r = cli(["chat", LLM, "--seed", "18446744073709551615", "--max-tokens", "2"], stdin=b"hi\n")
    assert r.returncode == 0, r.stderr
