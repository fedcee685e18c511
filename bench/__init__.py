"""Benchmarks of the bridge against a real Asterisk, sipp phones and the fake Slack.

Run with `.venv/bin/python -m bench` (see bench/__main__.py for the options). Importing this
package puts tests/ on sys.path, so the test helpers (the Asterisk harness, the fake Slack,
the bridge runner, the SIP phone) are reused as they are rather than copied.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
SCENARIO_DIR = BENCH_DIR / "scenarios"
RESULTS_DIR = BENCH_DIR / "results"

_TESTS = str(REPO / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
