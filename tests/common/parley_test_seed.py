"""Seeds of the randomised Python tests: the Python side of
tests/common/test_seed.h (ENGINEERING.md: a fixed, printed seed that an
environment variable may override; CI must be deterministic).

The base seed is DEFAULT_TEST_SEED, or $PARLEY_TEST_SEED (a decimal number;
"random" draws one). Each test gets its own seed, derived from the base seed
and the test's name with the same mixing as the C++ helper, so a test's
inputs do not depend on which other tests ran.

A conftest.py enables it with
    from parley_test_seed import (case_seed, pytest_report_header,  # noqa: F401
        pytest_terminal_summary, rng)
which prints the base seed in pytest's header and summary and gives tests the fixtures
`case_seed` (an int, printed into the test's captured output, so a failure
report shows it) and `rng` (a numpy Generator seeded with it).
"""

from __future__ import annotations

import os
import secrets

import pytest

DEFAULT_TEST_SEED = 20240611
_M64 = (1 << 64) - 1


def mix64(z: int) -> int:
    """splitmix64's finaliser (as mix64 in test_seed.h)."""
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def hash_label(label: str) -> int:
    """FNV-1a over the UTF-8 bytes (as hash_label in test_seed.h)."""
    h = 0xCBF29CE484222325
    for b in label.encode():
        h = ((h ^ b) * 0x100000001B3) & _M64
    return h


def _read_base_seed() -> tuple[int, str]:
    s = os.environ.get("PARLEY_TEST_SEED", "")
    if not s:
        return DEFAULT_TEST_SEED, "default"
    if s == "random":
        return secrets.randbits(32), "PARLEY_TEST_SEED=random"
    if not (s.isascii() and s.isdigit()) or int(s) >= 1 << 32:
        raise pytest.UsageError(f"PARLEY_TEST_SEED={s!r} is not a decimal number in [0, 2^32) or 'random'")
    return int(s), "PARLEY_TEST_SEED"


_BASE: tuple[int, str] | None = None


def base_seed() -> int:
    global _BASE
    if _BASE is None:
        _BASE = _read_base_seed()
    return _BASE[0]


def derive_seed(label: str, index: int = 0) -> int:
    """A case seed from the base seed and a label (as derive_seed in test_seed.h)."""
    return mix64((mix64(base_seed() ^ mix64(hash_label(label))) + index) & _M64) >> 32


def pytest_report_header(config):
    base_seed()
    return f"base seed {_BASE[0]} ({_BASE[1]}); replay with PARLEY_TEST_SEED={_BASE[0]}"


def pytest_terminal_summary(terminalreporter):
    # Also under -q, where pytest leaves out the header.
    terminalreporter.write_line(pytest_report_header(None))


@pytest.fixture
def case_seed(request) -> int:
    label = f"{os.path.basename(request.node.path)}::{request.node.name}"
    seed = derive_seed(label)
    print(f"case seed {seed} from base seed {base_seed()} "
          f"(replay: PARLEY_TEST_SEED={base_seed()} pytest -k '{request.node.name}')")
    return seed


@pytest.fixture
def rng(case_seed):
    import numpy as np

    return np.random.default_rng(case_seed)
