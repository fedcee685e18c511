"""The AMI link reads text events on a short path of its own (`_Protocol`) and everything
else the way panoramisk does. Fed the same byte stream cut at random places, it must hand
over the same events, with the same headers, in the same order as panoramisk's own reader:
a text between two other events is never reordered, lost or read differently."""

from __future__ import annotations

import base64
import random
from typing import Any

import panoramisk
import panoramisk.ami_protocol
import pytest

from bridge.asterisk.ami import _Protocol
from bridge.core.texts import decode_text_event


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def text_event(seq: int, **extra: str) -> str:
    headers = {"Event": "UserEvent", "Privilege": "user,all", "UserEvent": "SlackBridgeText",
               "Version": "2", "Token": "t0k3n", "MessageId": b64(f"call-{seq}|1"),
               "From": b64(f'"Phone {seq}" <sip:{seq}@10.0.0.5>'), "To": b64("<sip:bridge@pbx>"),
               "ToExten": b64("bridge"), "BodyLength": "5", "Time": f"{1700000000 + seq}.5",
               "Body": b64(f"hi {seq}"), "Endpoint": b64(f"phone{seq}"), **extra}
    return "".join(f"{key}: {value}\r\n" for key, value in headers.items()) + "\r\n"


STREAM = "".join([
    "Asterisk Call Manager/9.0.0\r\n",
    "Response: Success\r\nActionID: login-1\r\nMessage: Authentication accepted\r\n\r\n",
    "Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n",
    *(text_event(seq) for seq in range(5)),
    ("Event: ContactStatus\r\nPrivilege: system,all\r\nAOR: phone1\r\nContactStatus: Reachable"
    "\r\n\r\n"),
    text_event(5),
    # a header twice (panoramisk makes it a list), an ActionID, a truncated text event, an
    # event that only looks like one, and a UserEvent of someone else's dialplan
    text_event(6)[:-2] + "Token: second\r\n\r\n",
    text_event(7, ActionID="x-1"),
    "Event: UserEvent\r\nUserEvent: SlackBridgeText\r\n\r\n",
    "Event: UserEvent\r\nUserEvent: SlackBridgeTextual\r\nBody: eA==\r\n\r\n",
    "Event: UserEvent\r\nUserEvent: Other\r\nBody: eA==\r\n\r\n",
    ("Event: Newexten\r\nPrivilege: dialplan,all\r\nApplication: UserEvent\r\n"
    "AppData: SlackBridgeText,Body: x\r\n\r\n"),
    *(text_event(seq) for seq in range(8, 40)),
])


class Recorder:
    """Stands in for the manager: records every event handed over, in order."""

    def __init__(self, *, fast: bool) -> None:
        self.seen: list[dict[str, Any]] = []
        self.forgetable_actions: tuple[str, ...] = ()
        self.awaiting_actions: list[Any] = []
        if fast:
            self.on_text_event = lambda event: self.seen.append(dict(event))

    def dispatch(self, message: panoramisk.Message) -> None:
        self.seen.append({key: value for key, value in message.items() if key != "content"})

    def connection_lost(self, exc: object) -> None:
        raise AssertionError(f"connection lost: {exc}")


class Transport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def read(protocol_class: type[Any], pieces: list[bytes], *, fast: bool) -> list[dict[str, Any]]:
    protocol = protocol_class()
    protocol.connection_made(Transport())
    recorder = Recorder(fast=fast)
    protocol.factory = recorder
    protocol.encoding = "utf8"
    for piece in pieces:
        protocol.data_received(piece)
    return recorder.seen


def cut(data: bytes, rng: random.Random) -> list[bytes]:
    pieces, at = [], 0
    while at < len(data):
        step = rng.choice([1, 2, 7, 40, 333, 4096])
        pieces.append(data[at:at + step])
        at += step
    return pieces


@pytest.mark.parametrize("seed", range(20))
def test_the_text_path_reads_the_stream_as_panoramisk_does(seed: int) -> None:
    pieces = cut(STREAM.encode(), random.Random(seed))
    ours = read(_Protocol, pieces, fast=True)
    theirs = read(panoramisk.ami_protocol.AMIProtocol, pieces, fast=False)
    assert ours == theirs
    texts = [event for event in ours if event.get("UserEvent") == "SlackBridgeText"
             and "Endpoint" in event]
    assert [decode_text_event(event).body for event in texts] == \
        [f"hi {seq}" for seq in range(40)]


def test_a_text_event_takes_the_short_path_and_odd_ones_do_not() -> None:
    protocol = _Protocol()
    protocol.connection_made(Transport())
    recorder = Recorder(fast=True)
    slow: list[str] = []
    recorder.dispatch = lambda message: slow.append(message.get("UserEvent", message.event))
    protocol.factory = recorder
    protocol.encoding = "utf8"
    banner, _, rest = STREAM.partition("\r\n")
    protocol.data_received(f"{banner}\r\n".encode())  # read alone, as Asterisk sends it
    protocol.data_received(rest.encode())
    assert len(recorder.seen) == 38  # every text event the dialplan writes
    assert slow == ["FullyBooted", "ContactStatus",
                    "SlackBridgeText", "SlackBridgeText", "SlackBridgeText",  # twice, ActionID
                    "SlackBridgeTextual", "Other", "Newexten"]
