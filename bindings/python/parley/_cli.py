"""The console scripts of the parley-runtime wheel: `parley` and `parley-convert`.

`parley` runs the command-line tool bundled in parley/_native/bin (built from
runtime/cli with the wheel) and names this interpreter in PARLEY_PYTHON, so
`parley convert` runs the converter of this same installation, never
whatever `python3` comes first on PATH. `parley-convert` is the converter
(parley_format, shipped in the same wheel); its packages (numpy, flatbuffers,
xxhash) come with the `convert` extra, and without them it says so in one line.
"""

from __future__ import annotations

import os
import sys

_NATIVE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_native")
_CONVERTER_PACKAGES = {"numpy", "flatbuffers", "xxhash", "tqdm", "parley_format"}


def main() -> None:
    exe = os.path.join(_NATIVE, "bin", "parley")
    if not os.access(exe, os.X_OK):
        sys.exit(
            f"parley: this installation has no bundled command-line tool ({exe} is missing): "
            "install the wheel (pip install parley-runtime), or build the tool from the source tree"
        )
    env = dict(os.environ)
    env.setdefault("PARLEY_PYTHON", sys.executable)
    os.execve(exe, [exe, *sys.argv[1:]], env)


def convert_main() -> int:
    try:
        from parley_format.convert.cli import main as convert
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in _CONVERTER_PACKAGES:
            raise
        print(
            f"parley-convert: the converter needs the Python package {top!r}, which is not installed: "
            "pip install 'parley-runtime[convert]' (GGUF files: 'parley-runtime[gguf]')",
            file=sys.stderr,
        )
        return 1
    return convert()
