"""The command line as an admin meets it: config mistakes stop the bridge before it connects
anywhere, with every problem named; SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

from asterisk.harness import free_port
from bridge_runner import REPO, BridgeConfig, BridgeProcess, EndpointSpec, write_config


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "AMI_"))}
    base.pop("BRIDGE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "bridge", *args], cwd=REPO, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=30, check=False)


def test_config_errors_exit_2_before_connecting(tmp_path: Path) -> None:
    # An AMI "server" that records whether anyone connects.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    config = write_config(tmp_path, BridgeConfig(
        ami_port=port, endpoints=[EndpointSpec("alice", "alice", "#alice")]))
    result = run_cli("run", "--config", str(config), env={"SLACK_BOT_TOKEN": "xoxb-1"})
    assert result.returncode == 2
    assert "endpoints[0].destination: 'alice' is not a MessageSend destination" in result.stderr
    assert "endpoints[0].channel: '#alice' is not a Slack channel ID" in result.stderr
    assert "AMI_SECRET" in result.stderr and "SLACK_SIGNING_SECRET" in result.stderr
    try:
        connection, _ = listener.accept()
    except TimeoutError:
        pass
    else:
        connection.close()
        raise AssertionError("the bridge connected to AMI despite a broken config")
    finally:
        listener.close()


def test_config_path_from_environment_and_missing_config(tmp_path: Path) -> None:
    result = run_cli("run")
    assert result.returncode == 2 and "--config" in result.stderr
    result = run_cli("run", env={"BRIDGE_CONFIG": str(tmp_path / "missing.toml")})
    assert result.returncode == 2 and "does not exist" in result.stderr


async def test_sigterm_stops_cleanly_even_while_asterisk_is_unreachable(tmp_path: Path) -> None:
    config = write_config(tmp_path, BridgeConfig(
        ami_port=free_port(), endpoints=[EndpointSpec("alice", "pjsip:alice", "C0ALICE00")]))
    process = BridgeProcess(config, {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s3cr3t-x",
                                     "AMI_SECRET": "am1-s3cr3t", "SLACK_API_URL": "http://127.0.0.1:9/api/"},
                            port=free_port())
    await process.start()
    await process.wait_for_log("AMI: cannot connect")
    await asyncio.sleep(0.2)
    assert await process.stop() == 0
    assert "stopped" in process.lines[-1]
    assert "am1-s3cr3t" not in process.log and "s3cr3t-x" not in process.log
