"""`bridge asterisk-config` prints snippets an admin can paste, and a real Asterisk takes them:
the rendered AMI user logs in with the right permissions, and the rendered pjsip.conf lines
give the directory's endpoints the bridge's message_context."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from asterisk.harness import AsteriskSandbox, SipPeer, require_sandbox
from bridge_runner import REPO, BridgeConfig, EndpointSpec, write_config

from bridge.asterisk.ami import probe_ami
from bridge.asterisk.snippets import template
from bridge.core.texts import EVENT_TOKEN_PLACEHOLDER, derive_event_token
from bridge.settings.config import load_settings

REAL_SECRET = "file-ami-secret-6b1e"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


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
    # The shipped dialplan, with this install's event token (derived from the file's AMI
    # secret, which itself is never printed), then one context per PJSIP endpoint.
    token = derive_event_token(REAL_SECRET)
    extensions = snippets["extensions.conf"]
    assert template("extensions.conf").replace(EVENT_TOKEN_PLACEHOLDER, token) in extensions
    assert EVENT_TOKEN_PLACEHOLDER not in extensions
    assert re.findall(r"^\[(slack-bridge-from-[^\]]+)\]$", extensions, re.MULTILINE) == [
        "slack-bridge-from-alice", "slack-bridge-from-bob"]
    assert f"Set(SLACK_BRIDGE_ENDPOINT={b64('alice')})" in extensions

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
    assert sections == [("alice", "slack-bridge-from-alice"), ("bob", "slack-bridge-from-bob")]
    assert "; bob: texts posted to C0BOB0000; bobby: texts posted to C0BOB0001" in pjsip
    assert "; alice (also front-desk): texts posted to C0ALICE00" in pjsip
    skipped = {name: why for name, _dest, why in
               re.findall(r"^; skipped (\S+) \(([^)]*)\): (.+)$", pjsip, re.MULTILINE)}
    assert set(skipped) == {"mobile", "desk", "chat"}
    assert "trunk" in skipped["mobile"]
    assert "URI" in skipped["desk"]
    assert "not a PJSIP endpoint" in skipped["chat"]


async def test_without_a_secret_the_token_stays_a_placeholder_and_extra_endpoints(
        tmp_path: Path) -> None:
    config = tmp_path / "no-secret.toml"
    config.write_text(directory_config(tmp_path).read_text().replace(
        f'secret = "{REAL_SECRET}"\n', ""))
    printed = await asterisk_config(config, "--endpoint", "carol")
    assert printed.code == 0, printed.err
    snippets = printed.snippets()
    assert EVENT_TOKEN_PLACEHOLDER in snippets["extensions.conf"]
    assert "placeholder" in snippets["extensions.conf"].splitlines()[0]
    assert "[slack-bridge-from-carol]" in snippets["extensions.conf"]
    assert "[carol](+type=endpoint)\nmessage_context = slack-bridge-from-carol" in \
        snippets["pjsip.conf"]
    # With AMI_EVENT_TOKEN set, that token is written.
    printed = await asterisk_config(config, "--only", "extensions.conf",
                                    env={"AMI_EVENT_TOKEN": "tok-0123456789abcdef"})
    assert "SLACK_BRIDGE_EVENT_TOKEN = tok-0123456789abcdef" in printed.out
    bad = await asterisk_config(config, "--endpoint", "x,y")
    assert bad.code == 2 and "--endpoint" in bad.err


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
        pjsip = pjsip.replace("message_context = slack-bridge-inbound\n", "")
        (etc / "pjsip.conf").write_text(pjsip + "\n" + snippets["pjsip.conf"])
        # The rendered dialplan replaces the shipped one (it contains it).
        (etc / "slack-bridge-extensions.conf").write_text(snippets["extensions.conf"])
        manager = snippets["manager.conf"].replace("change-me-to-a-long-random-string",
                                                   REAL_SECRET)
        (etc / "rendered-manager.conf").write_text(manager)
        with (etc / "manager.conf").open("a") as conf:
            conf.write('\n#include "rendered-manager.conf"\n')
        await pbx.cli("module reload res_pjsip.so")
        await pbx.cli("manager reload")
        await pbx.cli("dialplan reload")

        for name in ("alice", "bob"):
            shown = await pbx.cli(f"pjsip show endpoint {name}")
            assert re.search(rf"^\s*message_context\s*:\s*slack-bridge-from-{name}\s*$",
                             shown, re.MULTILINE), shown
            context = await pbx.cli(f"dialplan show slack-bridge-from-{name}")
            assert f"SLACK_BRIDGE_ENDPOINT={b64(name)}" in context, context
        token = await pbx.cli("dialplan show globals")
        assert derive_event_token(REAL_SECRET) in token, token

        settings = load_settings(directory_config(tmp_path), {
            "SLACK_BOT_TOKEN": "xoxb-unused", "SLACK_SIGNING_SECRET": "unused"})
        ami = replace(settings.ami, port=pbx.ami_port)
        probe = await probe_ami(ami, timeout=5)
        assert probe.may_send and probe.reads_system
        assert "originate" not in probe.actions and "command" not in probe.actions
