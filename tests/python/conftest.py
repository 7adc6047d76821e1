import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

try:
    import parley_format  # noqa: F401  (installed: pip install -e formats/python)
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "formats", "python"))

# tests/data/make_test_models.py is imported as a module by the tests.
sys.path.insert(0, os.path.join(ROOT, "tests", "data"))

# Seeds of the randomised tests: fixtures `case_seed` and `rng`, base seed in the header.
sys.path.insert(0, os.path.join(ROOT, "tests", "common"))
from parley_test_seed import case_seed, pytest_report_header, pytest_terminal_summary, rng  # noqa: E402,F401
