"""The Procfile starts one bridge (honcho/foreman start every line: two lines on one store
would send texts twice), with an interpreter that has the package, the transport left to the
environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What honcho and foreman take as a process line: `name: command`.
PROCESS_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


def process_lines() -> list[tuple[str, str]]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return [(m[1], m[2]) for line in lines if (m := PROCESS_LINE.match(line))]


def test_the_procfile_starts_exactly_one_bridge_that_picks_its_transport() -> None:
    [(name, command)] = process_lines()
    assert name == "web"  # gets $PORT (/slack/events, or /healthz in Socket Mode)
    assert "--mode http" not in command and "--mode socket" not in command


def test_the_procfile_command_runs_the_bridge(tmp_path: Path) -> None:
    [(_, command)] = process_lines()
    # This checkout has no .venv of its own: the test's interpreter's venv is "activated".
    env = {**os.environ, "BRIDGE_CONFIG": str(tmp_path / "missing.toml"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # As honcho runs it: through a shell, from the checkout.
    result = subprocess.run(["sh", "-c", command], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "the config file does not exist" in result.stderr
