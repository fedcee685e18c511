"""`bridge asterisk-config` prints snippets an admin can paste, and a real Asterisk takes them:
the rendered AMI user logs in with the right permissions, and the rendered pjsip.conf lines
give the directory's endpoints the bridge's message_context."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from asterisk.harness import AsteriskSandbox, SipPeer, require_sandbox
from bridge_runner import REPO, BridgeConfig, EndpointSpec, write_config

from bridge.asterisk.ami import probe_ami
from bridge.asterisk.snippets import INBOUND_CONTEXT, template
from bridge.settings.config import load_settings

REAL_SECRET = "file-ami-secret-6b1e"


@dataclass
class Printed:
    code: int
    out: str
    err: str

    def snippets(self) -> dict[str, str]:
        """The output split at its `; ===== <file> =====` headers (after a blank line)."""
        parts = re.split(r"(?:^|\n); ===== (\S+\.conf) =====\n", self.out)
        assert parts[0] == "", f"text before the first header: {parts[0]!r}"
        return dict(zip(parts[1::2], parts[2::2], strict=True))


async def asterisk_config(config: Path, *args: str, env: dict[str, str] | None = None) -> Printed:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "AMI_"))}
    base.pop("BRIDGE_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "asterisk-config", "--config", str(config), *args,
        cwd=REPO, env={**base, **(env or {})}, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    return Printed(process.returncode or 0, out.decode(), err.decode())


def directory_config(tmp: Path, *, username: str = "pbxbridge", host: str = "127.0.0.1") -> Path:
    config = BridgeConfig(ami_port=5038, ami_username=username, extra_ami={"secret": REAL_SECRET},
                          endpoints=[
                              EndpointSpec("alice", "pjsip:alice", "C0ALICE00",
                                           aliases=("front-desk",)),
                              EndpointSpec("bob", "pjsip:bob", "C0BOB0000"),
                              EndpointSpec("bobby", "pjsip:bob", "C0BOB0001"),
                              EndpointSpec("mobile", "pjsip:PJSIP/+15551234@trunk", "C0MOB0000"),
                              EndpointSpec("desk", "pjsip:alice/sip:desk@10.0.0.9", "C0DESK000"),
                              EndpointSpec("chat", "xmpp:chat@example.com", "C0CHAT000"),
                          ])
    path = write_config(tmp, config)
    if host != "127.0.0.1":
        path.write_text(path.read_text().replace('host = "127.0.0.1"', f'host = "{host}"'))
    return path


async def test_prints_every_snippet_for_the_directory(tmp_path: Path) -> None:
    # No Slack token or AMI secret in the environment: the admin may run it on the PBX.
    printed = await asterisk_config(directory_config(tmp_path))
    assert printed.code == 0, printed.err
    snippets = printed.snippets()
    assert list(snippets) == ["extensions.conf", "manager.conf", "pjsip.conf"]
    assert snippets["extensions.conf"] == template("extensions.conf")

    manager = snippets["manager.conf"]
    assert re.search(r"^\[pbxbridge\]$", manager, re.MULTILINE)
    assert "[slackbridge]" not in manager
    assert "secret = change-me-to-a-long-random-string" in manager
    assert REAL_SECRET not in printed.out
    # Otherwise the shipped least-privilege user as it is (read/write/eventfilter lines).
    assert manager.endswith(template("manager.conf").replace("[slackbridge]", "[pbxbridge]"))
    assert re.search(r"^write = message\b", manager, re.MULTILINE)
    assert "another machine" not in manager

    pjsip = snippets["pjsip.conf"]
    sections = re.findall(r"^\[([^\]]+)\]\(\+type=endpoint\)\nmessage_context = (\S+)$", pjsip,
                          re.MULTILINE)
    assert sections == [("alice", INBOUND_CONTEXT), ("bob", INBOUND_CONTEXT)]
    assert "; bob: texts posted to C0BOB0000; bobby: texts posted to C0BOB0001" in pjsip
    assert "; alice (also front-desk): texts posted to C0ALICE00" in pjsip
    skipped = {name: why for name, _dest, why in
               re.findall(r"^; skipped (\S+) \(([^)]*)\): (.+)$", pjsip, re.MULTILINE)}
    assert set(skipped) == {"mobile", "desk", "chat"}
    assert "trunk" in skipped["mobile"]
    assert "URI" in skipped["desk"]
    assert "not a PJSIP endpoint" in skipped["chat"]


async def test_only_one_snippet_and_remote_bridge_note(tmp_path: Path) -> None:
    config = directory_config(tmp_path, host="10.0.0.5")
    printed = await asterisk_config(config, "--only", "manager.conf")
    assert printed.code == 0, printed.err
    assert "=====" not in printed.out
    assert "[pbxbridge]" in printed.out
    assert "The bridge connects to 10.0.0.5" in printed.out and "permit" in printed.out


async def test_config_problems_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, BridgeConfig(
        ami_port=5038, endpoints=[EndpointSpec("alice", "alice", "C0ALICE00")]))
    printed = await asterisk_config(config)
    assert printed.code == 2
    assert "endpoints[0].destination" in printed.err
    assert "SLACK_BOT_TOKEN" not in printed.err  # secrets are not needed here
    assert printed.out == ""


@pytest.mark.asterisk
async def test_a_real_asterisk_takes_the_rendered_snippets(tmp_path: Path) -> None:
    require_sandbox()
    printed = await asterisk_config(directory_config(tmp_path))
    assert printed.code == 0, printed.err
    snippets = printed.snippets()
    async with AsteriskSandbox(peers=[SipPeer("alice", 5990), SipPeer("bob", 5991)],
                               ami_secret="unused-here") as pbx:
        assert pbx.run_dir is not None
        etc = pbx.run_dir / "etc"
        # The admin's endpoints, as they were before the bridge: no message_context.
        pjsip = (etc / "pjsip.conf").read_text()
        pjsip = pjsip.replace(f"message_context = {INBOUND_CONTEXT}\n", "")
        (etc / "pjsip.conf").write_text(pjsip + "\n" + snippets["pjsip.conf"])
        manager = snippets["manager.conf"].replace("change-me-to-a-long-random-string",
                                                   REAL_SECRET)
        (etc / "rendered-manager.conf").write_text(manager)
        with (etc / "manager.conf").open("a") as conf:
            conf.write('\n#include "rendered-manager.conf"\n')
        await pbx.cli("module reload res_pjsip.so")
        await pbx.cli("manager reload")

        for name in ("alice", "bob"):
            shown = await pbx.cli(f"pjsip show endpoint {name}")
            assert re.search(rf"^\s*message_context\s*:\s*{INBOUND_CONTEXT}\s*$", shown,
                             re.MULTILINE), shown

        settings = load_settings(directory_config(tmp_path), {
            "SLACK_BOT_TOKEN": "xoxb-unused", "SLACK_SIGNING_SECRET": "unused"})
        ami = replace(settings.ami, port=pbx.ami_port)
        probe = await probe_ami(ami, timeout=5)
        assert probe.may_send and probe.reads_system
        assert "originate" not in probe.actions and "command" not in probe.actions
