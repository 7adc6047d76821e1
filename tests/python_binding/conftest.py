"""Test setup for the Python binding (bindings/python).

The binding is imported from the source tree (no install needed). libparley
comes from $PARLEY_LIBRARY, else from <repo>/build/lib/libparley.so (the test
module skips itself when neither exists).

Text-level tests use model files with a tokenizer: $PARLEY_TEST_CHAT_MODEL /
$PARLEY_TEST_TRANSLATION_MODEL when set, else the first suitable file in
samples/support-bot/models/ and tests/tokenizers/files/.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bindings" / "python"))

_BUILT = REPO / "build" / "lib" / "libparley.so"
if not os.environ.get("PARLEY_LIBRARY") and _BUILT.exists():
    os.environ["PARLEY_LIBRARY"] = str(_BUILT)
