"""The test suite's real Asterisk: the package's sandbox launcher, set up for tests.

`bridge/sandbox/launcher.py` is the one implementation (start/stop/restart/kill/cli/log_text,
extra AMI users, AMI over TLS, free ports kept across restarts); see its docstring.
`tests/asterisk/build-sandbox.sh` builds (once) the chroot it runs Asterisk from. What the tests
add here:

* the shipped snippets are the package's own (`bridge/asterisk/templates/`), exactly as
  `bridge asterisk-config` prints them;
* run folders are `<chroot>/run/bridge-test-XXXX/`, and kept for debugging when a start is
  cancelled (e.g. by a test timeout), a test fails inside `async with`, or Asterisk dies;
* `ami_secret` has a default, and `make_test_pki()` makes a throwaway CA on its own, e.g. a
  "wrong" CA for negative tests;
* `require_sandbox()` turns a missing sandbox into a skip locally and a failure in CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.sandbox import launcher
from bridge.sandbox.launcher import (
    ASTERISK_BINARY,
    DEFAULT_SANDBOX_DIR,
    MODULES,
    READY_LINE,
    STOP_GRACE_SECONDS,
    TAIL_LINES,
    AmiUser,
    SipPeer,
    default_sandbox_dir,
    free_port,
)
from bridge.sandbox.launcher import ThrowawayPki as TestPki

__all__ = [
    "ASTERISK_BINARY", "DEFAULT_SANDBOX_DIR", "MODULES", "READY_LINE", "REPO_ROOT",
    "SHIPPED_CONFIG_DIR", "STOP_GRACE_SECONDS", "TAIL_LINES", "AmiUser", "AsteriskSandbox",
    "SipPeer", "TestPki", "default_sandbox_dir", "free_port", "make_test_pki",
    "require_sandbox", "sandbox_problem",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG_DIR = REPO_ROOT / "bridge" / "asterisk" / "templates"


def make_test_pki(names: Sequence[str] = ("127.0.0.1", "localhost"),
                  ca_name: str = "bridge test CA") -> TestPki:
    """A new CA and a server certificate for `names` (IPs and DNS names), via `openssl`."""
    return launcher.make_throwaway_pki(names, ca_name)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def sandbox_problem(sandbox_dir: str | None = None) -> str | None:
    """Why the real-Asterisk tests cannot run here, or None when they can."""
    directory = Path(sandbox_dir or default_sandbox_dir())
    if not launcher.sandbox_exists(directory):
        return (
            f"no Asterisk sandbox at {directory} "
            "(build it with: sudo tests/asterisk/build-sandbox.sh, or set ASTERISK_SANDBOX)"
        )
    if os.geteuid() != 0:
        return "the Asterisk sandbox runs through chroot, which needs root"
    if shutil.which("chroot") is None:
        return "the chroot command is missing"
    return None


def require_sandbox(sandbox_dir: str | None = None) -> None:
    """Skip the calling test when the sandbox is unusable, but fail it when CI is set.

    CI builds the sandbox first (.ci/run), so a missing one there is a broken pipeline, and a
    skipped real-Asterisk suite would look green while testing nothing.
    """
    problem = sandbox_problem(sandbox_dir)
    if problem is None:
        return
    if _in_ci():
        pytest.fail(f"CI is set but the Asterisk sandbox is unusable: {problem}", pytrace=False)
    pytest.skip(problem)


class AsteriskSandbox(launcher.AsteriskSandbox):
    """One Asterisk process from the chroot, configured with the checkout's shipped snippets.

    Use as `async with AsteriskSandbox(peers=[...]) as asterisk:` or call start()/stop().
    """

    run_prefix = "bridge-test-"
    keep_cancelled_start = True  # a test timed out while Asterisk booted: worth a look

    def __init__(
        self,
        *,
        sandbox_dir: str | None = None,
        peers: Sequence[SipPeer],
        ami_port: int | None = None,
        sip_port: int | None = None,
        ami_secret: str = "test-ami-secret",
        extra_ami_users: Sequence[AmiUser] = (),
        ami_tls: bool = False,
        dialplan: str = "",
        event_token: str = "",
    ) -> None:
        super().__init__(sandbox_dir=sandbox_dir, peers=peers, ami_port=ami_port,
                         sip_port=sip_port, ami_secret=ami_secret,
                         extra_ami_users=extra_ami_users, ami_tls=ami_tls, dialplan=dialplan,
                         event_token=event_token)

    def _sandbox_problem(self) -> str | None:
        return sandbox_problem(str(self.sandbox_dir))

    def _shipped_snippet(self, name: str) -> str:
        return (SHIPPED_CONFIG_DIR / name).read_text()
