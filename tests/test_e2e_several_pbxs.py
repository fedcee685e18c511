"""Several Asterisk servers behind one bridge, against two real Asterisks (PBX "hq" and PBX
"branch", each a sandbox on its own ports with its own AMI secret and phones).

Each phone is registered with one Asterisk only (its SIP port), so the phone that got a text
says which Asterisk sent it. Both PBXs have a phone `alice`: two different directory entries.

To take branch's AMI away while branch's phones can still text it (so their texts wait in
branch's spool), the bridge reaches branch's AMI through a TCP relay the test closes and opens
again: a connection refused, exactly what a PBX that went away gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asterisk.harness import AsteriskSandbox, free_port
from bridge_runner import BridgeProcess, ack_text, taken
from conftest import AMI_SECRET, BOT_TOKEN, SIGNING_SECRET, own_pbx
from fake_slack import FakeSlack
from ops_view import health
from sip_ua import SipPhone
from slack_view import shown_senders, shown_texts, wait_phone_posts

pytestmark = pytest.mark.asterisk

BRANCH_SECRET = "branch-ami-secret-91d2"
ALICE_HQ = "C0ALICEHQ"
ALICE_BRANCH = "C0ALICEBR"
BOB_CHANNEL = "C0BOBHQ00"
CAROL_CHANNEL = "C0CAROLBR"


class AmiRelay:
    """A TCP relay in front of an AMI port that the test can close (refusing connections and
    cutting the open ones) and open again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update({writer, up_writer})

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


def config_text(*, hq_port: int, branch_port: int, store: Path) -> str:
    return f"""
[[pbx]]
name = "hq"
host = "127.0.0.1"
port = {hq_port}
username = "slackbridge"

[[pbx]]
name = "branch"
host = "127.0.0.1"
port = {branch_port}
username = "slackbridge"
action_timeout = 2

[slack]
command = "/sip"
default_channel = "C0DEFAULT0"

[store]
path = "{store}"

[[endpoints]]
name = "alice-hq"
pbx = "hq"
destination = "pjsip:alice"
channel = "{ALICE_HQ}"

[[endpoints]]
name = "bob"
pbx = "hq"
destination = "pjsip:bob"
channel = "{BOB_CHANNEL}"

[[endpoints]]
name = "alice-branch"
pbx = "branch"
destination = "pjsip:alice"
channel = "{ALICE_BRANCH}"

[[endpoints]]
name = "carol"
pbx = "branch"
destination = "pjsip:carol"
channel = "{CAROL_CHANNEL}"
"""


@pytest.fixture
async def pbxs() -> AsyncIterator[tuple[tuple[AsteriskSandbox, dict[str, SipPhone]],
                                        tuple[AsteriskSandbox, dict[str, SipPhone]]]]:
    async with own_pbx("alice", "bob") as hq, \
            own_pbx("alice", "carol", ami_secret=BRANCH_SECRET) as branch:
        yield hq, branch


async def start(tmp: Path, slack: FakeSlack, hq_port: int, branch_port: int) -> BridgeProcess:
    path = tmp / "bridge.toml"
    path.write_text(config_text(hq_port=hq_port, branch_port=branch_port,
                                store=tmp / "store.sqlite3"))
    env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_API_URL": slack.api_url,
           "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "AMI_SECRET_HQ": AMI_SECRET, "AMI_SECRET_BRANCH": BRANCH_SECRET}
    process = BridgeProcess(path, env, port=free_port())
    await process.start()
    await process.wait_for_log(r"AMI: connected .*\(PBX hq\)")
    await process.wait_for_log(r"AMI: connected .*\(PBX branch\)")
    return process


async def slash(bridge: BridgeProcess, slack: FakeSlack, text: str) -> str:
    body, headers = slack.signed_slash_command(slack.slash_command_payload(text=text))
    status, answer = await bridge.post_signed(body, headers)
    assert status == 200
    return ack_text(answer)


def posts_in(slack: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [p for p in slack.calls_of("chat.postMessage") if p.get("channel") == channel]


async def test_each_pbx_texts_its_own_phones_and_their_texts_land_in_their_channels(
        tmp_path: Path, slack: FakeSlack, pbxs: Any) -> None:
    (hq, hq_phones), (branch, branch_phones) = pbxs
    bridge = await start(tmp_path, slack, hq.ami_port, branch.ami_port)
    try:
        # The same PJSIP endpoint name on both PBXs: each directory entry reaches its own.
        assert taken(await slash(bridge, slack, "alice-hq hello hq alice"))
        assert taken(await slash(bridge, slack, "alice-branch hello branch alice"))
        assert taken(await slash(bridge, slack, "carol hello carol"))
        [got_hq] = await hq_phones["alice"].wait_for_messages(1)
        [got_branch] = await branch_phones["alice"].wait_for_messages(1)
        [got_carol] = await branch_phones["carol"].wait_for_messages(1)
        assert (got_hq.body, got_branch.body, got_carol.body) == (
            "hello hq alice", "hello branch alice", "hello carol")
        await asyncio.sleep(0.5)
        assert len(hq_phones["alice"].received) == 1 == len(branch_phones["alice"].received)
        assert not hq_phones["bob"].received

        # Texts from the two alices: each lands in its own entry's channel, naming its PBX.
        slack.reset()
        assert await hq_phones["alice"].send_message("from alice at hq") == 202
        assert await branch_phones["alice"].send_message("from alice at branch") == 202
        posts = await wait_phone_posts(slack, 2)
        by_channel = {p["channel"]: p for p in posts}
        assert shown_texts([by_channel[ALICE_HQ]]) == ["from alice at hq"]
        assert shown_texts([by_channel[ALICE_BRANCH]]) == ["from alice at branch"]
        assert "via PBX *hq*" in shown_senders([by_channel[ALICE_HQ]])[0]
        assert "via PBX *branch*" in shown_senders([by_channel[ALICE_BRANCH]])[0]

        # A reply in branch alice's thread goes back to branch's alice, not hq's.
        hq_phones["alice"].received.clear()
        branch_phones["alice"].received.clear()
        thread = by_channel[ALICE_BRANCH].get("thread_ts") or by_channel[ALICE_BRANCH]["ts"]
        payload = slack.message_event_payload(text="reply to branch", user_id="U0HUMAN1",
                                              channel_id=ALICE_BRANCH, thread_ts=thread,
                                              escaped=True)
        status, _ = await bridge.post_signed(*slack.signed_event(payload))
        assert status == 200
        [reply] = await branch_phones["alice"].wait_for_messages(1)
        assert reply.body == "reply to branch"
        await asyncio.sleep(0.5)
        assert not hq_phones["alice"].received

        status_text = await slash(bridge, slack, "status")
        assert "*hq*" in status_text and "*branch*" in status_text
        assert status_text.count(":large_green_circle: connected") == 2, status_text
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_a_pbx_away_delays_only_its_own_texts_and_its_backlog_arrives_once(
        tmp_path: Path, slack: FakeSlack, pbxs: Any) -> None:
    (hq, hq_phones), (branch, branch_phones) = pbxs
    relay = AmiRelay(branch.ami_port)
    await relay.open()
    bridge = await start(tmp_path, slack, hq.ami_port, relay.port)
    try:
        began = time.monotonic()
        assert taken(await slash(bridge, slack, "bob before"))
        await hq_phones["bob"].wait_for_messages(1)
        with_both = time.monotonic() - began

        mark = len(bridge.lines)
        await relay.close()
        await bridge.wait_for_log(r"AMI: disconnected from .*\(PBX branch\)", after=mark)

        # A text to a branch phone waits, and its sender is told which PBX is unreachable.
        answer = await slash(bridge, slack, "carol queued for branch")
        assert "Queued for *carol*" in answer and "PBX *branch*" in answer, answer
        status_text = await slash(bridge, slack, "status")
        assert "*branch*" in status_text and "not connected" in status_text

        # hq keeps going behind the queued branch text, as fast as with both PBXs up.
        began = time.monotonic()
        assert taken(await slash(bridge, slack, "bob while branch is away"))
        await hq_phones["bob"].wait_for_messages(2)
        with_branch_away = time.monotonic() - began
        print(f"/sip to an hq phone: {with_both * 1000:.0f} ms with both PBXs, "
              f"{with_branch_away * 1000:.0f} ms with branch away")
        assert with_branch_away < max(1.0, 3 * with_both)

        # branch's phones text meanwhile: their texts wait in branch's spool. hq's texts that
        # arrive after them must not make the bridge skip them later.
        slack.reset()
        assert await branch_phones["carol"].send_message("carol while away 1") == 202
        assert await branch_phones["carol"].send_message("carol while away 2") == 202
        await asyncio.sleep(0.2)
        assert await hq_phones["alice"].send_message("alice at hq meanwhile") == 202
        [post] = await wait_phone_posts(slack, 1)
        assert post["channel"] == ALICE_HQ
        await asyncio.sleep(0.5)
        assert not branch_phones["carol"].received

        mark = len(bridge.lines)
        await relay.open()
        await bridge.wait_for_log(r"AMI: connected .*\(PBX branch\)", after=mark, timeout=30)
        [queued] = await branch_phones["carol"].wait_for_messages(1, timeout=15)
        assert queued.body == "queued for branch"
        await wait_phone_posts(slack, 2, timeout=15)
        await asyncio.sleep(1.5)
        carol_texts = shown_texts(posts_in(slack, CAROL_CHANNEL))
        assert carol_texts == ["carol while away 1", "carol while away 2"], carol_texts
        assert len(branch_phones["carol"].received) == 1, "the queued text went out twice"
    finally:
        code = await bridge.stop()
        await relay.close()
    assert code == 0, bridge.log


async def test_a_stopped_pbx_gets_its_queued_text_once_when_it_is_started_again(
        tmp_path: Path, slack: FakeSlack, pbxs: Any) -> None:
    """Asterisk branch itself stopped (not only its AMI): the same from the user's side, and
    /healthz names the PBX that is down."""
    (hq, hq_phones), (branch, branch_phones) = pbxs
    bridge = await start(tmp_path, slack, hq.ami_port, branch.ami_port)
    try:
        mark = len(bridge.lines)
        await branch.stop()
        await bridge.wait_for_log(r"AMI: disconnected from .*\(PBX branch\)", after=mark)
        answer = await slash(bridge, slack, "carol while branch is stopped")
        assert "Queued for *carol*" in answer and "PBX *branch*" in answer, answer
        assert taken(await slash(bridge, slack, "bob meanwhile"))
        [got] = await hq_phones["bob"].wait_for_messages(1, timeout=3)
        assert got.body == "meanwhile"
        code, report = await health(bridge.port)
        assert code == 503 and any(r.startswith("PBX branch: AMI not connected")
                                   for r in report["reasons"]), report
        assert report["pbxs"]["hq"]["connected"] is True
        assert report["pbxs"]["branch"]["connected"] is False

        mark = len(bridge.lines)
        await branch.restart()
        await bridge.wait_for_log(r"AMI: connected .*\(PBX branch\)", after=mark, timeout=40)
        [queued] = await branch_phones["carol"].wait_for_messages(1, timeout=15)
        assert queued.body == "while branch is stopped"
        assert await branch_phones["carol"].send_message("carol after the restart") == 202
        posts = await wait_phone_posts(slack, 1)
        assert posts[0]["channel"] == CAROL_CHANNEL
        await asyncio.sleep(1)
        assert len(branch_phones["carol"].received) == 1, "the queued text went out twice"
    finally:
        assert await bridge.stop() == 0, bridge.log
