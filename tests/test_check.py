"""`bridge check` as an admin runs it: against a real Asterisk and a fake Slack, it prints a
checklist that names each problem and its fix, exits non-zero when something must be fixed,
and answers within 10 seconds even when a host never answers."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from asterisk.harness import AmiUser, AsteriskSandbox, free_port
from bridge_runner import REPO, BridgeConfig, EndpointSpec, write_config
from conftest import own_pbx
from fake_slack import BOT_SCOPES, FakeSlack
from sip_ua import SipPhone

from bridge.ops.check import TEST_TEXT

AMI_SECRET = "check-ami-secret-91d2"
BOT_TOKEN = "xoxb-check-token-5521"
APP_TOKEN = "xapp-check-token-7730"
SIGNING_SECRET = "check-signing-secret-0a7e"
ALICE_CHANNEL = "C0ALICE00"
BOB_CHANNEL = "C0BOB0000"
DEFAULT_CHANNEL = "C0DEFAULT0"
# A user that may log in and read, but not send texts (no write=message).
NO_MESSAGE = AmiUser(name="nomessage", secret="nomessage-secret-3f", read="system,user", write="")
# A user that may send, but reads no system events.
NO_SYSTEM = AmiUser(name="nosystem", secret="nosystem-secret-8c", read="user", write="message")
# A user an admin widened: reads everything, no event filters.
WIDE = AmiUser(name="wide", secret="wide-secret-5a", read="all", write="message,reporting")

SECRETS = (AMI_SECRET, BOT_TOKEN, APP_TOKEN, SIGNING_SECRET, NO_MESSAGE.secret, NO_SYSTEM.secret,
           WIDE.secret)
# What the admin waits for at most; the brief for `bridge check` is "under 10 seconds".
MAX_SECONDS = 10.0


@dataclass
class CheckRun:
    code: int
    out: str
    err: str
    seconds: float

    def line(self, start: str) -> str:
        """The first checklist line starting with `start`, plus its detail/fix lines."""
        lines = self.out.splitlines()
        for i, text in enumerate(lines):
            if text.startswith(start):
                block = [text]
                for more in lines[i + 1:]:
                    if not more.startswith("    "):
                        break
                    block.append(more)
                return "\n".join(block)
        raise AssertionError(f"no line starting with {start!r} in:\n{self.out}\n{self.err}")


async def run_check(config: Path, env: dict[str, str], *args: str) -> CheckRun:
    """`python -m bridge check --config ...` as a subprocess, without blocking the loop that
    serves the fake Slack."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "AMI_"))}
    base.pop("BRIDGE_CONFIG", None)
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "check", "--config", str(config), *args,
        cwd=REPO, env={**base, **env}, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    result = CheckRun(code=process.returncode or 0, out=out.decode(), err=err.decode(),
                      seconds=time.monotonic() - began)
    for secret in SECRETS:
        assert secret not in result.out + result.err, "bridge check printed a secret"
    assert "Traceback" not in result.err, result.err
    return result


def endpoints() -> list[EndpointSpec]:
    return [EndpointSpec("alice", "pjsip:alice", ALICE_CHANNEL, aliases=("front-desk",)),
            EndpointSpec("bob", "pjsip:bob", BOB_CHANNEL),
            EndpointSpec("ghost", "pjsip:ghost", BOB_CHANNEL)]  # not in Asterisk


def config_for(tmp: Path, ami_port: int, *, username: str = "slackbridge") -> Path:
    return write_config(tmp, BridgeConfig(ami_port=ami_port, endpoints=endpoints(),
                                          default_channel=DEFAULT_CHANNEL,
                                          ami_username=username))


def env_for(slack: FakeSlack | str, *, ami_secret: str = AMI_SECRET,
            socket_mode: bool = False) -> dict[str, str]:
    api_url = slack if isinstance(slack, str) else slack.api_url
    env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_API_URL": api_url, "AMI_SECRET": ami_secret,
           "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    if socket_mode:
        env["SLACK_APP_TOKEN"] = APP_TOKEN
    return env


@pytest.fixture(scope="module")
async def check_pbx() -> AsyncIterator[tuple[AsteriskSandbox, dict[str, SipPhone]]]:
    async with own_pbx("alice", "bob", ami_secret=AMI_SECRET,
                       extra_ami_users=[NO_MESSAGE, NO_SYSTEM, WIDE]) as started:
        yield started


@pytest.fixture(scope="module")
def pbx(check_pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> AsteriskSandbox:
    return check_pbx[0]


@pytest.fixture(scope="module")
def check_phones(check_pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> dict[str, SipPhone]:
    return check_pbx[1]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(bot_token=BOT_TOKEN, app_token=APP_TOKEN, signing_secret=SIGNING_SECRET)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung service)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


# --------------------------------------------------------------------------- a good setup


@pytest.mark.asterisk
async def test_good_setup_passes_and_the_test_text_reaches_the_phone(
        tmp_path: Path, pbx: AsteriskSandbox, slack: FakeSlack,
        check_phones: dict[str, SipPhone]) -> None:
    check_phones["alice"].received.clear()
    result = await run_check(config_for(tmp_path, pbx.ami_port), env_for(slack),
                             "--send-test", "front-desk")
    assert result.code == 0, result.out + result.err
    assert "✗" not in result.out
    assert result.line("✓ config:")
    assert result.line(f"✓ AMI: logged in to 127.0.0.1:{pbx.ami_port} as 'slackbridge'")
    assert result.line("✓ AMI: 'slackbridge' may send texts")
    assert result.line("✓ AMI: 'slackbridge' gets system events")
    assert "read=user" in result.line("! AMI: not verifiable here")
    assert result.line("✓ test text: Asterisk accepted it for delivery to alice (pjsip:alice)")
    assert result.line("✓ Slack: bot token works (@bridge in Fake)")
    assert result.line("✓ Slack: scopes commands, chat:write")
    assert result.line("✓ Slack: scope chat:write.public")
    for channel in (ALICE_CHANNEL, BOB_CHANNEL, DEFAULT_CHANNEL):
        assert result.line(f"✓ Slack: @bridge is in #{channel.lower()} ({channel})")
    assert result.out.rstrip().splitlines()[-1].startswith("Ready")
    received = await check_phones["alice"].wait_for_messages(1)
    assert [m.body for m in received] == [TEST_TEXT]
    assert result.seconds < MAX_SECONDS


@pytest.mark.asterisk
async def test_socket_mode_checks_the_app_token(tmp_path: Path, pbx: AsteriskSandbox,
                                                slack: FakeSlack) -> None:
    config = config_for(tmp_path, pbx.ami_port)
    good = await run_check(config, env_for(slack, socket_mode=True))
    assert good.code == 0, good.out
    assert good.line("✓ Slack: app-level token works (Socket Mode)")
    env = env_for(slack, socket_mode=True) | {"SLACK_APP_TOKEN": "xapp-someone-elses"}
    bad = await run_check(config, env)
    assert bad.code == 1
    block = bad.line("✗ Slack: the app-level token does not work")
    assert "invalid_auth" in block and "fix: set SLACK_APP_TOKEN" in block


# --------------------------------------------------------------------------- AMI problems


@pytest.mark.asterisk
async def test_wrong_ami_secret(tmp_path: Path, pbx: AsteriskSandbox, slack: FakeSlack) -> None:
    result = await run_check(config_for(tmp_path, pbx.ami_port),
                             env_for(slack, ami_secret="not-the-secret"))
    assert result.code == 1
    block = result.line("✗ AMI: login as 'slackbridge' refused")
    assert "Authentication failed" in block
    assert "fix: make [ami] username and AMI_SECRET match a [slackbridge] section" in block
    assert result.line("✓ Slack: bot token works")  # Slack was still checked
    assert result.seconds < MAX_SECONDS


@pytest.mark.asterisk
async def test_ami_user_without_write_message(tmp_path: Path, pbx: AsteriskSandbox,
                                              slack: FakeSlack) -> None:
    result = await run_check(config_for(tmp_path, pbx.ami_port, username=NO_MESSAGE.name),
                             env_for(slack, ami_secret=NO_MESSAGE.secret),
                             "--send-test", "alice")
    assert result.code == 1
    block = result.line("✗ AMI: 'nomessage' may not send texts")
    assert "fix: in manager.conf [nomessage] set `write = message`" in block
    assert result.line("✓ AMI: 'nomessage' gets system events")
    test_block = result.line("✗ test text to alice (pjsip:alice) not sent")
    assert "Permission denied" in test_block and "`write = message`" in test_block


@pytest.mark.asterisk
async def test_ami_user_without_read_system(tmp_path: Path, pbx: AsteriskSandbox,
                                            slack: FakeSlack) -> None:
    result = await run_check(config_for(tmp_path, pbx.ami_port, username=NO_SYSTEM.name),
                             env_for(slack, ami_secret=NO_SYSTEM.secret))
    assert result.code == 1
    assert result.line("✓ AMI: 'nosystem' may send texts")
    block = result.line("✗ AMI: 'nosystem' gets no system events")
    assert "fix: in manager.conf [nosystem] set `read = system,user`" in block


@pytest.mark.asterisk
async def test_ami_user_reading_more_than_it_needs_is_warned_about(
        tmp_path: Path, pbx: AsteriskSandbox, slack: FakeSlack) -> None:
    result = await run_check(config_for(tmp_path, pbx.ami_port, username=WIDE.name),
                             env_for(slack, ami_secret=WIDE.secret))
    assert result.code == 0, result.out  # it works; it is a risk, not a failure
    block = result.line("! AMI: 'wide' reads more than it needs")
    assert "SuccessfulAuth" in block
    assert "fix: in manager.conf [wide] set `read = system,user` and the eventfilter" in block
    # The shipped user, with its name filters, gets no such warning.
    good = await run_check(config_for(tmp_path, pbx.ami_port), env_for(slack))
    assert "reads more than it needs" not in good.out


@pytest.mark.asterisk
async def test_send_test_to_an_endpoint_asterisk_does_not_know(
        tmp_path: Path, pbx: AsteriskSandbox, slack: FakeSlack) -> None:
    config = config_for(tmp_path, pbx.ami_port)
    result = await run_check(config, env_for(slack), "--send-test", "ghost")
    assert result.code == 1
    block = result.line("✗ test text to ghost (pjsip:ghost) not sent")
    assert "Message failed to send" in block and 'pjsip show endpoint ghost' in block
    unknown = await run_check(config, env_for(slack), "--send-test", "alcie")
    assert unknown.code == 1
    assert "did you mean alice" in unknown.line(
        "✗ test text: no endpoint called 'alcie' in the directory")


async def test_unreachable_ami_host(tmp_path: Path, slack: FakeSlack) -> None:
    closed_port = free_port()
    result = await run_check(config_for(tmp_path, closed_port), env_for(slack))
    assert result.code == 1
    block = result.line(f"✗ AMI: cannot log in at 127.0.0.1:{closed_port}")
    assert "cannot connect" in block and "enabled = yes" in block
    assert result.seconds < MAX_SECONDS


async def test_ami_port_that_never_answers(tmp_path: Path, slack: FakeSlack,
                                           silent_listener: int) -> None:
    result = await run_check(config_for(tmp_path, silent_listener), env_for(slack))
    assert result.code == 1
    assert "is it really AMI?" in result.line(f"✗ AMI: cannot log in at 127.0.0.1:{silent_listener}")
    assert result.seconds < MAX_SECONDS


# --------------------------------------------------------------------------- Slack problems


@pytest.mark.asterisk
async def test_slack_token_without_chat_write(tmp_path: Path, pbx: AsteriskSandbox,
                                              slack: FakeSlack) -> None:
    slack.scopes = [s for s in BOT_SCOPES.split(",") if s != "chat:write"]
    result = await run_check(config_for(tmp_path, pbx.ami_port), env_for(slack))
    assert result.code == 1
    block = result.line("✗ Slack: the bot token lacks chat:write")
    assert "fix: add chat:write under OAuth & Permissions > Bot Token Scopes" in block
    assert "reinstall the app" in block
    assert result.line("✓ AMI: 'slackbridge' may send texts")


@pytest.mark.asterisk
async def test_bot_not_in_a_channel(tmp_path: Path, pbx: AsteriskSandbox,
                                    slack: FakeSlack) -> None:
    slack.channels_without_bot = {BOB_CHANNEL, ALICE_CHANNEL}
    slack.private_channels = {ALICE_CHANNEL}
    config = config_for(tmp_path, pbx.ami_port)
    # With chat:write.public the public channel is fine (with a note); the private one is not.
    result = await run_check(config, env_for(slack))
    assert result.code == 1
    assert "posts with chat:write.public" in result.line(
        f"✓ Slack: @bridge may post in #c0bob0000 ({BOB_CHANNEL})")
    private = result.line(f"✗ Slack: channel {ALICE_CHANNEL} not found")
    assert "texts from alice" in private and "/invite @bridge" in private
    # Without chat:write.public the bot must be invited into the public channel too.
    slack.scopes = [s for s in BOT_SCOPES.split(",") if s != "chat:write.public"]
    result = await run_check(config, env_for(slack))
    assert result.code == 1
    assert result.line("! Slack: no chat:write.public scope")
    block = result.line(f"✗ Slack: @bridge is not in #c0bob0000 ({BOB_CHANNEL})")
    assert "texts from bob, ghost" in block
    assert f"fix: in #c0bob0000 ({BOB_CHANNEL}) type /invite @bridge" in block


@pytest.mark.asterisk
async def test_membership_unknown_without_channels_read_is_a_warning(
        tmp_path: Path, pbx: AsteriskSandbox, slack: FakeSlack) -> None:
    # The scopes the shipped manifest grants: conversations.info answers missing_scope.
    slack.scopes = ["commands", "chat:write", "chat:write.public"]
    result = await run_check(config_for(tmp_path, pbx.ami_port), env_for(slack))
    assert result.code == 0, result.out
    block = result.line("! Slack: cannot see whether @bridge is in")
    assert all(c in block for c in (ALICE_CHANNEL, BOB_CHANNEL, DEFAULT_CHANNEL))
    assert "channels:read" in block


async def test_wrong_bot_token(tmp_path: Path, slack: FakeSlack) -> None:
    env = env_for(slack) | {"SLACK_BOT_TOKEN": "xoxb-revoked-0000"}
    result = await run_check(config_for(tmp_path, free_port()), env)
    assert result.code == 1
    block = result.line("✗ Slack: the bot token does not work")
    assert "invalid_auth" in block and "fix: set SLACK_BOT_TOKEN" in block


async def test_slack_unreachable_or_hanging(tmp_path: Path, slack: FakeSlack,
                                            silent_listener: int) -> None:
    config = config_for(tmp_path, free_port())
    closed = await run_check(config, env_for(f"http://127.0.0.1:{free_port()}/api/"))
    assert closed.code == 1
    assert "fix: check this machine's network" in closed.line(
        "✗ Slack: cannot reach the Web API")
    assert closed.seconds < MAX_SECONDS
    hung = await run_check(config, env_for(f"http://127.0.0.1:{silent_listener}/api/"))
    assert hung.code == 1
    assert "no answer" in hung.line("✗ Slack: cannot reach the Web API")
    assert hung.seconds < MAX_SECONDS


# --------------------------------------------------------------------------- config


async def test_invalid_config_is_reported_like_run(tmp_path: Path) -> None:
    config = write_config(tmp_path, BridgeConfig(
        ami_port=free_port(), endpoints=[EndpointSpec("alice", "alice", "#alice")]))
    result = await run_check(config, {"SLACK_BOT_TOKEN": BOT_TOKEN})
    assert result.code == 2
    assert "endpoints[0].destination: 'alice' is not a MessageSend destination" in result.err
    assert "AMI_SECRET" in result.err
    assert result.out == ""


@pytest.mark.asterisk
async def test_several_pbxs_are_each_checked_and_named(
        tmp_path: Path, pbx: AsteriskSandbox, slack: FakeSlack,
        check_phones: dict[str, SipPhone]) -> None:
    """hq is the real Asterisk, branch is down: each item says which PBX it is about, and
    the test text goes through the PBX of its endpoint."""
    check_phones["alice"].received.clear()
    closed_port = free_port()
    config = tmp_path / "bridge.toml"
    config.write_text(f"""
[[pbx]]
name = "hq"
port = {pbx.ami_port}
username = "slackbridge"

[[pbx]]
name = "branch"
port = {closed_port}
username = "slackbridge"

[slack]
default_channel = "{DEFAULT_CHANNEL}"

[[endpoints]]
name = "alice"
pbx = "hq"
destination = "pjsip:alice"
channel = "{ALICE_CHANNEL}"

[[endpoints]]
name = "carol"
pbx = "branch"
destination = "pjsip:carol"
channel = "{BOB_CHANNEL}"
""")
    env = {**env_for(slack), "AMI_SECRET_HQ": AMI_SECRET, "AMI_SECRET_BRANCH": "unused-2"}
    del env["AMI_SECRET"]
    result = await run_check(config, env, "--send-test", "alice")
    assert result.code == 1, result.out + result.err
    assert result.line(f"✓ AMI (PBX hq): logged in to 127.0.0.1:{pbx.ami_port}")
    assert result.line("✓ AMI (PBX hq): 'slackbridge' may send texts")
    block = result.line(f"✗ AMI (PBX branch): cannot log in at 127.0.0.1:{closed_port}")
    assert "[[pbx]] 'branch' (pbx[1]) host and port" in block
    assert result.line("✓ test text: Asterisk accepted it for delivery to alice (pjsip:alice "
                       "on PBX hq)")
    received = await check_phones["alice"].wait_for_messages(1)
    assert [m.body for m in received] == [TEST_TEXT]
    assert result.seconds < MAX_SECONDS

    to_branch = await run_check(config, env, "--send-test", "carol")
    assert to_branch.line("✗ test text to carol (pjsip:carol on PBX branch) not sent")
