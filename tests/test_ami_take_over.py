"""A bridge that starts taking a PBX's texts (at login, or as the replica taking over from one
that died) reads Asterisk's spool from the newest text its store has. A live text arriving
in the moment it asks for the events must wait until that read is done: stored first, it
would move the store's newest text past everything the spool holds for the gap, and the
gap's texts would be skipped as "already had" -- lost without a word.

Seen at a SIGKILL failover under load (bench/replicas.py, 200 texts/s): the survivor took
over, read "0 texts handed over, 1591 older ones already had", and 544 texts never reached
Slack. Here a fake AMI sends the live text right after the login or the Events action and
answers the spool reads a little late, as a busy Asterisk does."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from fake_ami import FakeAmi
from test_ami_encoding import ami_settings
from test_ami_text_path import b64, text_event

from bridge.asterisk.ami import SPOOL_FAMILY, AmiLink, spool_hour
from bridge.core.texts import InboundText, MalformedEvent
from bridge.settings.config import Secret

TOKEN = "t0k3n"  # text_event's
NOW = time.time()
GAP = [NOW - 2.0, NOW - 1.0]  # spooled while no bridge took the texts
LIVE = NOW  # arrives the moment the bridge asks for the events
STORED_BEFORE = NOW - 10.0  # the newest text the store had


def spool_value(seq: int, at: float) -> str:
    fields = [f"{at:.6f}", b64(f'"Phone {seq}" <sip:{seq}@10.0.0.5>'), b64("<sip:bridge@pbx>"),
              b64("bridge"), b64(f"call-{seq}|1"), "5", b64(f"hi {seq}"), b64(f"phone{seq}")]
    return "2|" + "|".join(fields)


class BusyAsterisk(FakeAmi):
    """Sends one live text as soon as a session asks for events (at its login or with
    Events), and answers the spool's DBGet/DBGetTree after 0.2 s, holding the gap's texts."""

    async def _answer(self, action: dict[str, str], writer: asyncio.StreamWriter) -> None:
        name = action.get("Action", "").lower()
        action_id = action.get("ActionID", "")
        if name == "dbget":
            await asyncio.sleep(0.2)
            writer.write(f"Response: Success\r\nActionID: {action_id}\r\nEventList: start\r\n"
                         f"Message: Result will follow\r\n\r\n"
                         f"Event: DBGetResponse\r\nFamily: {action.get('Family')}\r\n"
                         f"Key: {action.get('Key')}\r\nVal: {spool_hour(NOW)}\r\n"
                         f"ActionID: {action_id}\r\n\r\n"
                         f"Event: DBGetComplete\r\nActionID: {action_id}\r\n"
                         f"EventList: Complete\r\nListItems: 1\r\n\r\n".encode())
        elif name == "dbgettree":
            await asyncio.sleep(0.2)
            entries = "".join(
                f"Event: DBGetTreeResponse\r\nKey: /{SPOOL_FAMILY}/{spool_hour(at)}/"
                f"{at:.6f}-{seq:040x}\r\nVal: {spool_value(seq, at)}\r\n"
                f"ActionID: {action_id}\r\n\r\n" for seq, at in enumerate(GAP, start=1))
            writer.write(f"Response: Success\r\nActionID: {action_id}\r\nEventList: start\r\n"
                         f"Message: Result will follow\r\n\r\n{entries}"
                         f"Event: DBGetTreeComplete\r\nActionID: {action_id}\r\n"
                         f"EventList: Complete\r\nListItems: {len(GAP)}\r\n\r\n".encode())
        else:
            await super()._answer(action, writer)
        wants = (name == "login" and action.get("Events", "on").lower() != "off"
                 and "system" not in action.get("Events", "").lower()) or (
            name == "events" and action.get("EventMask", "").lower() == "on")
        if wants:
            writer.write(text_event(9, Time=f"{LIVE:.6f}").encode())
        await writer.drain()


class Store:
    """What the link hands over, and the newest Asterisk time among it (the store's mark)."""

    def __init__(self) -> None:
        self.texts: list[InboundText | MalformedEvent] = []

    def take(self, text: InboundText | MalformedEvent) -> None:
        self.texts.append(text)

    async def mark(self) -> float:
        times = [t.asterisk_time for t in self.texts if isinstance(t, InboundText)]
        return max([STORED_BEFORE, *(t for t in times if t is not None)])

    def bodies(self) -> list[str]:
        return [t.body for t in self.texts if isinstance(t, InboundText)]


async def wait_for(store: Store, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(store.texts) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def test_a_text_arriving_at_login_waits_for_the_spool_read_and_none_is_skipped() -> None:
    server = BusyAsterisk()
    await server.start()
    store = Store()
    settings = dataclasses.replace(ami_settings(server.port), event_token=Secret(TOKEN))
    link = AmiLink(settings, on_text=store.take, spool_mark=store.mark)
    try:
        await link.start()
        assert await link.wait_ready(5)
        await wait_for(store, 3)
        await asyncio.sleep(0.3)
        # The gap's texts first (the spool, in time order), then the live one.
        assert store.bodies() == ["hi 1", "hi 2", "hi 9"], store.texts
    finally:
        await link.stop()
        await server.stop()


async def test_a_replica_taking_over_reads_the_gap_before_the_live_text_it_asked_for() -> None:
    server = BusyAsterisk()
    await server.start()
    store = Store()
    consuming = False
    settings = dataclasses.replace(ami_settings(server.port), event_token=Secret(TOKEN))
    link = AmiLink(settings, on_text=store.take, spool_mark=store.mark,
                   consuming=lambda: consuming)
    try:
        await link.start()
        assert await link.wait_ready(5)
        await asyncio.sleep(0.3)
        assert store.texts == []  # standing by: neither events nor the spool
        consuming = True  # the events lease is this replica's now
        link.take_over()
        await wait_for(store, 3)
        await asyncio.sleep(0.3)
        assert store.bodies() == ["hi 1", "hi 2", "hi 9"], store.texts
    finally:
        await link.stop()
        await server.stop()
