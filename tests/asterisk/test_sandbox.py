"""The shipped Asterisk snippets (bridge/asterisk/templates/) work on a real Asterisk.

These tests talk to Asterisk the way the bridge will: AMI through panoramisk, and SIP MESSAGE
through a test phone (tests/sip_ua.py). They pin down exactly what the bridge receives: the
UserEvent headers for a text from a phone, the 1,024-byte body limit, what MessageSend delivers,
and that the least-privilege AMI user sees only the events it needs.

panoramisk.testing is deliberately not imported: it sets a global EOL that breaks parsing of
real AMI traffic in the same process.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from asterisk.harness import (
    AmiUser,
    AsteriskSandbox,
    SipPeer,
    free_port,
    require_sandbox,
)
from panoramisk import Manager
from panoramisk.message import Message
from sip_ua import SipPhone

from bridge.core.texts import derive_event_token

# An AMI user that sees everything: it proves that the events kept from `slackbridge` exist.
OBSERVER = AmiUser(name="observer", secret="observer-secret", read="all", write="all")
# An AMI user without write=message: MessageSend must be refused.
READ_ONLY = AmiUser(name="readonly", secret="readonly-secret", read="system,user", write="")

ACTION_TIMEOUT = 5.0


# --------------------------------------------------------------------------- AMI client


@dataclass
class AmiSession:
    """A logged-in panoramisk Manager plus every event it received, in order."""

    manager: Any
    events: list[Message]
    arrived: asyncio.Event

    async def action(self, action: dict[str, str]) -> Message:
        # panoramisk's futures never resolve if the link drops: always bound the wait.
        response: Message = await asyncio.wait_for(self.manager.send_action(action), ACTION_TIMEOUT)
        return response

    def names(self) -> set[str]:
        return {event.event for event in self.events}

    def texts(self) -> list[Message]:
        """The SlackBridgeText UserEvents received so far."""
        return [
            e
            for e in self.events
            if e.event == "UserEvent" and e.get("UserEvent") == "SlackBridgeText"
        ]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self.arrived.clear()
                    await self.arrived.wait()
        except TimeoutError:
            seen = [(e.event, e.get("UserEvent")) for e in self.events]
            raise AssertionError(
                f"AMI condition not met within {timeout} s; events: {seen}"
            ) from None

    async def wait_for_texts(self, n: int, timeout: float = 5.0) -> list[Message]:
        await self.wait_for(lambda: len(self.texts()) >= n, timeout)
        return self.texts()


async def ami_login(asterisk: AsteriskSandbox, username: str, secret: str) -> AmiSession:
    session = AmiSession(manager=None, events=[], arrived=asyncio.Event())

    def on_event(_manager: Any, event: Message) -> None:
        session.events.append(event)
        session.arrived.set()

    # Built inside the running loop, as panoramisk needs.
    manager = Manager(
        loop=asyncio.get_running_loop(),
        host=asterisk.ami_host,
        port=asterisk.ami_port,
        username=username,
        secret=secret,
        ping_delay=60,
        reconnect_timeout=1,
    )
    manager.register_event("*", on_event)
    session.manager = manager
    await asyncio.wait_for(manager.connect(), ACTION_TIMEOUT)
    response = await asyncio.wait_for(manager.authenticated_future, ACTION_TIMEOUT)
    if not response.success:
        manager.close()
        raise AssertionError(f"AMI login as {username!r} failed: {dict(response)}")
    return session


# --------------------------------------------------------------------------- fixtures


@dataclass
class Pbx:
    asterisk: AsteriskSandbox
    alice: SipPhone
    bob: SipPhone


@pytest.fixture
async def pbx() -> AsyncIterator[Pbx]:
    """A fresh Asterisk with two phones, alice and bob, configured as endpoints."""
    require_sandbox()
    sip_port = free_port("udp")
    async with (
        SipPhone("alice", asterisk_port=sip_port) as alice,
        SipPhone("bob", asterisk_port=sip_port) as bob,
    ):
        sandbox = AsteriskSandbox(
            peers=[SipPeer("alice", alice.port), SipPeer("bob", bob.port)],
            sip_port=sip_port,
            extra_ami_users=[OBSERVER, READ_ONLY],
        )
        async with sandbox as asterisk:
            yield Pbx(asterisk, alice, bob)
        assert not asterisk.running


@pytest.fixture
async def bridge_ami(pbx: Pbx) -> AsyncIterator[AmiSession]:
    """An AMI session as the shipped `slackbridge` user."""
    session = await ami_login(pbx.asterisk, pbx.asterisk.ami_username, pbx.asterisk.ami_secret)
    yield session
    session.manager.close()


@pytest.fixture
async def observer_ami(pbx: Pbx) -> AsyncIterator[AmiSession]:
    session = await ami_login(pbx.asterisk, OBSERVER.name, OBSERVER.secret)
    yield session
    session.manager.close()


def b64(event: Message, key: str) -> str:
    value = event[key]
    assert isinstance(value, str), f"{key} appears more than once in the event: {value!r}"
    return base64.b64decode(value, validate=True).decode("utf-8")


# --------------------------------------------------------------------------- inbound texts

TRICKY_BODY = (
    'Grüße, "world" & <friends>!\n'
    "second line 😀 with, commas\r\n"
    "third: 日本語 ${EXTEN} $[1+1] ) ' \\ end"
)
TRICKY_NAME = 'Smith, "JJ" John'


@pytest.mark.asterisk
async def test_text_from_phone_becomes_exactly_one_user_event(
    pbx: Pbx, bridge_ami: AmiSession
) -> None:
    status = await pbx.alice.send_message(TRICKY_BODY, display_name=TRICKY_NAME)
    assert status == 202

    [text] = await bridge_ami.wait_for_texts(1)
    await asyncio.sleep(0.5)  # any duplicate would have arrived by now
    assert len(bridge_ami.texts()) == 1, pbx.asterisk.log_text()

    # Display name quotes come back SIP-escaped, and the From URI loses its port.
    assert b64(text, "From") == '"Smith, \\"JJ\\" John" <sip:alice@127.0.0.1>'
    # MESSAGE(to) is the Request-URI with a pjsip: prefix and without the port.
    assert b64(text, "To") == "pjsip:bridge@127.0.0.1"
    assert b64(text, "ToExten") == "bridge"
    assert b64(text, "Body") == TRICKY_BODY
    assert text["BodyLength"] == str(len(TRICKY_BODY.encode("utf-8")))
    assert text["Version"] == "2"
    # Who sent it, as the sandbox's per-endpoint context records it, and this install's token.
    assert b64(text, "Endpoint") == "alice"
    assert text["Token"] == derive_event_token(pbx.asterisk.ami_secret)
    # Channel headers every UserEvent carries: the fixed extension the dialplan jumps to.
    assert text["Channel"] == "Message/ast_msg_queue"
    assert text["Context"] == "slack-bridge-inbound-text"
    assert text["Exten"] == "text"


@pytest.mark.asterisk
async def test_from_without_display_name(pbx: Pbx, bridge_ami: AmiSession) -> None:
    assert await pbx.bob.send_message("hi") == 202
    [text] = await bridge_ami.wait_for_texts(1)
    assert b64(text, "From") == "<sip:bob@127.0.0.1>"
    assert b64(text, "Body") == "hi"


@pytest.mark.asterisk
async def test_message_id_differs_per_text_while_uniqueid_repeats(
    pbx: Pbx, bridge_ami: AmiSession
) -> None:
    assert await pbx.bob.send_message("one") == 202
    assert await pbx.bob.send_message("two") == 202
    first, second = await bridge_ami.wait_for_texts(2)
    assert first["Uniqueid"] == second["Uniqueid"]  # why the bridge cannot dedupe on it
    ids = [b64(first, "MessageId"), b64(second, "MessageId")]
    assert ids[0] != ids[1]
    assert all(i.endswith(" MESSAGE") and "@" in i for i in ids), ids


@pytest.mark.asterisk
@pytest.mark.parametrize(
    ("to_user", "to_exten"),
    [
        ("bridge", "bridge"),
        ("+15551234", "+15551234"),
        ("1", "1"),
        ("*98#", "*98#"),
        ("Ab-c.d_e", "Ab-c.d_e"),
        ("x%20y", "x y"),  # EXTEN is the %-decoded user part
        ("s", "s"),
    ],
)
async def test_extension_pattern_takes_any_user_part(
    pbx: Pbx, bridge_ami: AmiSession, to_user: str, to_exten: str
) -> None:
    assert await pbx.alice.send_message("ping", to_user=to_user) == 202
    [text] = await bridge_ami.wait_for_texts(1)
    assert b64(text, "ToExten") == to_exten
    assert b64(text, "Body") == "ping"


@pytest.mark.asterisk
async def test_user_part_cannot_inject_ami_headers(pbx: Pbx, bridge_ami: AmiSession) -> None:
    # %-decoded, this user part ends the event and starts a forged one. AMI writes a channel's
    # extension unescaped in every event, so the dialplan must not emit from that extension.
    forged = base64.b64encode(b"<sip:boss@127.0.0.1>").decode()
    evil = (
        "y%0D%0A%0D%0AEvent%3A%20UserEvent%0D%0AUserEvent%3A%20SlackBridgeText"
        f"%0D%0AFrom%3A%20{forged.replace('=', '%3D')}%0D%0ABody%3A%20ZXZpbA%3D%3D"
    )
    assert await pbx.alice.send_message("real", to_user=evil) == 202
    [text] = await bridge_ami.wait_for_texts(1)
    await asyncio.sleep(0.5)
    assert len(bridge_ami.texts()) == 1
    assert b64(text, "From") == "<sip:alice@127.0.0.1>"
    assert b64(text, "Body") == "real"
    assert b64(text, "ToExten").startswith("y\r\n\r\nEvent: UserEvent")
    assert text["Exten"] == "text"


@pytest.mark.asterisk
async def test_unknown_sender_is_refused(pbx: Pbx, bridge_ami: AmiSession) -> None:
    # No endpoint "mallory" and no anonymous endpoint: PJSIP challenges, nothing is relayed.
    assert await pbx.alice.send_message("hi", from_user="mallory") == 401
    await asyncio.sleep(0.5)
    assert bridge_ami.texts() == []


@pytest.mark.asterisk
@pytest.mark.parametrize(
    ("body", "arrives_whole"),
    [
        ("", True),
        ("x" * 1023, True),
        ("é" * 511 + "x", True),  # 1,023 bytes in 512 characters
        ("x" * 1024, False),
        ("é" * 512, False),  # 1,024 bytes
        ("y" * 5000, False),
    ],
    ids=["empty", "1023-ascii", "1023-bytes-utf8", "1024-ascii", "1024-bytes-utf8", "5000"],
)
async def test_body_size_limit(
    pbx: Pbx, bridge_ami: AmiSession, body: str, arrives_whole: bool
) -> None:
    size = len(body.encode("utf-8"))
    assert await pbx.alice.send_message(body) == 202
    [text] = await bridge_ami.wait_for_texts(1)
    assert text["BodyLength"] == str(size)
    if arrives_whole and body:
        assert b64(text, "Body") == body
    else:
        # Asterisk sends "Body: " (empty, the event's last line); panoramisk strips the event
        # before parsing, so the empty last header vanishes: read it with .get().
        assert text.get("Body", "") == ""
    # No "BASE64_ENCODE ... missing argument" warning for empty bodies.
    assert "WARNING" not in pbx.asterisk.log_text()


# --------------------------------------------------------------------------- outbound texts


@pytest.mark.asterisk
async def test_message_send_reaches_the_phone(pbx: Pbx, bridge_ami: AmiSession) -> None:
    text = 'Hello from Slack: Grüße 😀, "quotes" & <tags>\nline two'
    response = await bridge_ami.action(
        {
            "Action": "MessageSend",
            "Destination": "pjsip:alice",
            "Base64Body": base64.b64encode(text.encode("utf-8")).decode(),
        }
    )
    assert response.success, dict(response)
    assert response["Message"] == "Message successfully sent"
    [received] = await pbx.alice.wait_for_messages(1)
    assert received.body == text
    assert received.raw_body == text.encode("utf-8")
    assert received.content_type == "text/plain"
    assert pbx.bob.received == []


@pytest.mark.asterisk
async def test_message_send_with_plain_body_and_from(pbx: Pbx, bridge_ami: AmiSession) -> None:
    response = await bridge_ami.action(
        {
            "Action": "MessageSend",
            "Destination": "pjsip:bob",
            "From": '"Slack: Ann" <sip:ann@127.0.0.1>',
            "Body": "plain, simple",
        }
    )
    assert response.success, dict(response)
    [received] = await pbx.bob.wait_for_messages(1)
    assert received.body == "plain, simple"
    assert "sip:ann@127.0.0.1" in received.from_header


@pytest.mark.asterisk
async def test_message_send_to_unknown_endpoint_fails(pbx: Pbx, bridge_ami: AmiSession) -> None:
    response = await bridge_ami.action(
        {"Action": "MessageSend", "Destination": "pjsip:nobody", "Body": "hi"}
    )
    assert not response.success
    assert response["Response"] == "Error"
    assert response["Message"] == "Message failed to send."


# --------------------------------------------------------------------------- AMI user


@pytest.mark.asterisk
async def test_shipped_ami_user_sees_only_its_events(
    pbx: Pbx, bridge_ami: AmiSession, observer_ami: AmiSession
) -> None:
    assert await pbx.alice.send_message("filtered?") == 202
    await bridge_ami.wait_for_texts(1)
    await observer_ami.wait_for_texts(1)
    await asyncio.sleep(0.5)

    # The same text makes plenty of other events, which an unfiltered user does see ...
    assert {"Newchannel", "Newexten", "UserEvent"} <= observer_ami.names()
    # ... but the shipped user gets the FullyBooted sent at login and the UserEvent, no more.
    assert bridge_ami.names() == {"FullyBooted", "UserEvent"}
    assert [e["Status"] for e in bridge_ami.events if e.event == "FullyBooted"] == ["Fully Booted"]


@pytest.mark.asterisk
async def test_shipped_ami_user_cannot_do_more_than_send(pbx: Pbx, bridge_ami: AmiSession) -> None:
    for action in (
        {"Action": "Command", "Command": "core show version"},
        {"Action": "Originate", "Channel": "PJSIP/alice", "Application": "Hangup"},
        {"Action": "GetConfig", "Filename": "manager.conf"},
    ):
        response = await bridge_ami.action(action)
        assert not response.success, (action, dict(response))
        assert response["Message"] == "Permission denied", dict(response)


@pytest.mark.asterisk
async def test_ami_user_without_write_message_cannot_send(pbx: Pbx) -> None:
    session = await ami_login(pbx.asterisk, READ_ONLY.name, READ_ONLY.secret)
    try:
        response = await session.action(
            {"Action": "MessageSend", "Destination": "pjsip:alice", "Body": "hi"}
        )
    finally:
        session.manager.close()
    assert response["Message"] == "Permission denied"
    await asyncio.sleep(0.3)
    assert pbx.alice.received == []


@pytest.mark.asterisk
async def test_wrong_secret_is_refused(pbx: Pbx) -> None:
    with pytest.raises(AssertionError, match="login as 'slackbridge' failed"):
        await ami_login(pbx.asterisk, pbx.asterisk.ami_username, "wrong")


# --------------------------------------------------------------------------- the harness


@pytest.mark.asterisk
async def test_start_time_restart_and_cli(capsys: pytest.CaptureFixture[str]) -> None:
    require_sandbox()
    async with SipPhone("alice", asterisk_port=free_port("udp")) as alice:
        sandbox = AsteriskSandbox(
            peers=[SipPeer("alice", alice.port)], sip_port=alice.asterisk_port
        )
        began = time.monotonic()
        await sandbox.start()
        first_start = time.monotonic() - began
        try:
            ports = (sandbox.ami_port, sandbox.sip_port)
            assert "Asterisk Ready." in sandbox.log_text()
            endpoints = await sandbox.cli("pjsip show endpoints")
            assert "alice" in endpoints and f"127.0.0.1:{alice.port}" in endpoints
            pid = sandbox.pid

            began = time.monotonic()
            await sandbox.restart()
            restart = time.monotonic() - began
            assert (sandbox.ami_port, sandbox.sip_port) == ports
            assert pid is not None and not os.path.exists(f"/proc/{pid}")

            # A crash, then back again: kill() is not a failure, so no folder is kept.
            killed_dir = sandbox.run_dir
            await sandbox.kill()
            assert not sandbox.running
            await sandbox.restart()
            assert killed_dir is not None and not killed_dir.exists()
            assert (sandbox.ami_port, sandbox.sip_port) == ports

            # Everything works again on the same ports.
            session = await ami_login(sandbox, sandbox.ami_username, sandbox.ami_secret)
            try:
                assert await alice.send_message("after restart") == 202
                [text] = await session.wait_for_texts(1)
                assert b64(text, "Body") == "after restart"
            finally:
                session.manager.close()
        finally:
            run_dir = sandbox.run_dir
            await sandbox.stop()
    assert not sandbox.running
    assert run_dir is not None and not run_dir.exists()  # removed after a clean stop
    with capsys.disabled():
        print(f"\n[asterisk sandbox] start() {first_start:.2f} s, restart() {restart:.2f} s")


@pytest.mark.asterisk
async def test_start_failure_reports_the_log() -> None:
    require_sandbox()
    taken = free_port("tcp")
    sandbox = AsteriskSandbox(peers=[], ami_port=taken)
    # Something else holds the AMI port and never speaks AMI.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        with pytest.raises(RuntimeError) as failure:
            await sandbox.start(timeout=15)
    assert not sandbox.running
    message = str(failure.value)
    assert "AMI does not answer" in message and "Asterisk Ready." in message
    # A failed start keeps its folder for debugging and names it; this one was on purpose.
    kept = re.search(r"config folder: (\S+)\)", message)
    assert kept is not None and os.path.isdir(kept.group(1))
    shutil.rmtree(kept.group(1))


def test_require_sandbox_fails_in_ci_and_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASTERISK_SANDBOX", "/nonexistent/sandbox")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_sandbox()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no Asterisk sandbox"):
        require_sandbox()
