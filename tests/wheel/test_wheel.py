"""The installed parley-runtime wheel, in a fresh virtualenv that has nothing
else (tests/wheel/build_and_test.sh makes it): the package finds its own
libparley and CPU plugin with PARLEY_LIBRARY and PARLEY_PLUGIN_PATH unset,
translates and chats with the demo models, and its console scripts run
(`parley`, `parley-convert`, `parley convert` through the same interpreter).
Every check runs the venv's own interpreter in a folder outside the source
tree, so nothing of the checkout can be imported by accident."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

VENV = Path(os.environ.get("PARLEY_WHEEL_VENV", ""))
WHEEL = os.environ.get("PARLEY_WHEEL", "")
MODELS = Path(os.environ.get("PARLEY_DEMO_MODELS", ""))
pytestmark = pytest.mark.skipif(not os.environ.get("PARLEY_WHEEL_VENV"), reason="run by tests/wheel/build_and_test.sh")


def venv_run(args: list[str], tmp_path: Path, stdin: bytes = b"", env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("PARLEY_LIBRARY", "PARLEY_PLUGIN_PATH", "PYTHONPATH", "PARLEY_PYTHON")}
    e["PATH"] = f"{VENV / 'bin'}:/usr/bin:/bin"
    e.update(env or {})
    return subprocess.run(args, input=stdin, capture_output=True, cwd=tmp_path, env=e, timeout=300, check=False)


def test_wheel_contents():
    names = zipfile.ZipFile(WHEEL).namelist()
    for want in ["parley/__init__.py", "parley/py.typed", "parley/_native/libparley.so.0",
                 "parley/_native/parley/plugins/libparley_cpu.so", "parley/_native/bin/parley",
                 "parley_format/convert/cli.py"]:
        assert want in names, f"{want} not in the wheel"
    assert not [n for n in names if n.endswith((".pyc", ".a", ".h"))], "no byte code, archives or headers"
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(WHEEL).read(meta).decode()
    assert "Name: parley-runtime" in text and "Provides-Extra: convert" in text
    assert "Requires-Dist: numpy" in text and 'extra == "convert"' in text
    entry = zipfile.ZipFile(WHEEL).read(meta.replace("METADATA", "entry_points.txt")).decode()
    assert "parley = parley._cli:main" in entry and "parley-convert = parley._cli:convert_main" in entry


SCRIPT = r'''
import json, sys, parley
from typing import get_overloads
rt = parley.Runtime(threads=1)
mt = parley.Model(rt, sys.argv[1])
one = mt.translate("Guten Morgen!")
many = mt.translate(["Guten Morgen!", "Hallo Welt!"], generation=parley.GenerationOptions(num_beams=2))
old = mt.translate("Guten Morgen!", beam_size=2, repetition_penalty=1.0)
bot = parley.Model(rt, sys.argv[2])
chat = parley.Chat(bot, system_prompt="You help customers.")
pieces = list(chat.stream("Where is my order?", generation=parley.GenerationOptions(max_new_tokens=6)))
reply = chat.say("Thanks!", max_new_tokens=4)
print(json.dumps({
    "library_path": parley.library_path,
    "plugins": [(p.name, p.path) for p in rt.plugins()],
    "one": [type(one).__name__, one.text],
    "many": [type(t).__name__ for t in many] + [many[0].text],
    "old": old.text,
    "stream": "".join(pieces),
    "reply": reply,
    "overloads": [str(f.__annotations__["return"]) for f in get_overloads(parley.Model.translate)],
    "typed": __import__("importlib.resources").resources.files("parley").joinpath("py.typed").is_file(),
}))
'''


def test_import_translate_and_chat_with_the_bundled_library(tmp_path):
    out = venv_run([str(VENV / "bin" / "python"), "-c", SCRIPT, str(MODELS / "opus-mt-de-en.parley"),
                    str(MODELS / "support-llama.parley")], tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    r = json.loads(out.stdout)
    site = str(VENV.resolve())
    assert r["library_path"].startswith(site) and r["library_path"].endswith("parley/_native/libparley.so.0"), r
    cpu = [path for name, path in r["plugins"] if name == "cpu"]
    assert cpu and cpu[0].startswith(site), f"the CPU plugin beside the bundled library: {r['plugins']}"
    assert r["one"][0] == "Translation" and r["one"][1], r
    assert r["many"][:2] == ["Translation", "Translation"] and r["many"][2], r
    assert r["old"], "keyword options still work"
    assert r["stream"] and isinstance(r["reply"], str), r
    assert r["overloads"] == ["Translation", "list[Translation]"], r["overloads"]
    assert r["typed"] is True


def test_console_scripts(tmp_path):
    parley = str(VENV / "bin" / "parley")
    out = venv_run([parley, "--version"], tmp_path)
    assert out.returncode == 0 and out.stdout.startswith(b"parley "), out
    out = venv_run([parley, "plugins", "--json"], tmp_path)
    assert out.returncode == 0, out.stderr
    plugins = json.loads(out.stdout)["plugins"]
    assert [p["path"] for p in plugins if p["name"] == "cpu"][0].startswith(str(VENV.resolve()))
    out = venv_run([parley, "translate", str(MODELS / "opus-mt-de-en.parley"), "--threads", "1"], tmp_path,
                   b"Guten Morgen!\n")
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    # The converter's packages are an extra: without them, one clear line (exit 1), no traceback.
    for args in ([str(VENV / "bin" / "parley-convert"), "--help"], [parley, "convert", "--help"]):
        out = venv_run(args, tmp_path)
        err = out.stderr.decode()
        assert out.returncode == 1 and "Traceback" not in err and "parley-runtime[convert]" in err, (args, err)
        assert "numpy" in err, err
    # `parley convert` asked this venv's interpreter (the console script names it), not a python3 on PATH.
    assert f"PARLEY_PYTHON={VENV / 'bin' / 'python'}" in err, err
    # With them (the CI venv's numpy, flatbuffers and xxhash on this venv's path,
    # standing in for `pip install 'parley-runtime[convert]'` without an index):
    ci_site = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "numpy").is_dir())
    venv_site = next((VENV / "lib").glob("python3*/site-packages"))
    (venv_site / "ci-deps.pth").write_text(ci_site + "\n")
    try:
        for args in ([str(VENV / "bin" / "parley-convert"), "--help"], [parley, "convert", "--help"]):
            out = venv_run(args, tmp_path)
            assert out.returncode == 0 and b"usage: parley-convert" in out.stdout, (args, out.stderr)
        # The converter imported is the wheel's.
        out = venv_run([str(VENV / "bin" / "python"), "-c", "import parley_format; print(parley_format.__file__)"],
                       tmp_path)
        assert out.stdout.decode().startswith(str(VENV)), out
    finally:
        (venv_site / "ci-deps.pth").unlink()
