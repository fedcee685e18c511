"""The benchmark's smoke run, so `python -m bench` cannot rot: tiny loads through every
section (real Asterisk, sipp, the real bridge), and no text may be lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from asterisk.harness import require_sandbox
from bridge_runner import REPO

pytestmark = pytest.mark.asterisk


def test_bench_smoke_runs_every_section_and_loses_nothing(tmp_path: Path) -> None:
    require_sandbox()
    out = tmp_path / "smoke.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out)], cwd=REPO,
        capture_output=True, text=True, timeout=300, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "AMI_"))})
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report, "the smoke run wrote an empty report"
