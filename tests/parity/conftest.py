import os
import sys

# Seeds of the randomised tests: fixtures `case_seed` and `rng`, base seed in the header.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from parley_test_seed import case_seed, pytest_report_header, pytest_terminal_summary, rng  # noqa: E402,F401
