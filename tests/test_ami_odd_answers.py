"""Odd answers from AMI (or whatever listens on its port) are ordinary failures: a MessageSend
answered without `Response`, with bytes that are not UTF-8, with a made-up response, and text
events with missing or mangled fields never crash the link or lose the next text; each
becomes an AmiError for the sender or a notice (MalformedEvent), and the link stays up."""

from __future__ import annotations

import asyncio
import base64
import dataclasses

import pytest
from fake_ami import FakeAmi
from test_ami_encoding import DESTINATION, FROM, ami_settings

from bridge.asterisk.ami import AmiLink
from bridge.core.errors import AmiError
from bridge.core.texts import InboundText, MalformedEvent

ODD_SEND_ANSWERS = {
    "no-response-header": b"ActionID: {id}\r\nMessage: what?\r\n\r\n",
    "not-utf8": b"Response: \xff\xfe\xfd\r\nActionID: {id}\r\nMessage: \xc3\x28\r\n\r\n",
    "made-up-response": b"Response: Maybe\r\nActionID: {id}\r\n\r\n",
    "goodbye": b"Response: Goodbye\r\nActionID: {id}\r\nMessage: Thanks for all the fish.\r\n\r\n",
    "header-without-colon": b"Response Success\r\nActionID: {id}\r\n\r\n",
}


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


ODD_EVENTS = [
    b"Event: UserEvent\r\nUserEvent: SlackBridgeText\r\n\r\n",  # nothing else
    b"Event: UserEvent\r\nUserEvent: SlackBridgeText\r\nMessageId: x\r\nFrom: %%%\r\n\r\n",
    ("Event: UserEvent\r\nUserEvent: SlackBridgeText\r\nMessageId: y\r\nFrom: "
     + b64("<sip:alice@h>") + "\r\nBody: " + b64("ok body")
     + "\r\nBodyLength: lots\r\nTime: yesterday\r\n\r\n").encode(),
    b"Event: UserEvent\r\nUserEvent: SlackBridgeText\r\nFrom: \xff\xfe\r\nBody: \x00\r\n\r\n",
]


class OddAmi(FakeAmi):
    def __init__(self, send_answer: bytes) -> None:
        super().__init__()
        self.send_answer = send_answer
        self.writer: asyncio.StreamWriter | None = None

    async def _answer(self, action: dict[str, str], writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        if action.get("Action", "").lower() == "messagesend" and \
                action.get("Base64Body") == b64("odd"):
            writer.write(self.send_answer.replace(b"{id}", action["ActionID"].encode()))
            await writer.drain()
            return
        await super()._answer(action, writer)


@pytest.mark.parametrize("answer", list(ODD_SEND_ANSWERS), ids=list(ODD_SEND_ANSWERS))
async def test_an_odd_answer_to_messagesend_is_an_ami_error_and_the_link_goes_on(
        answer: str) -> None:
    server = OddAmi(ODD_SEND_ANSWERS[answer])
    await server.start()
    texts: list[InboundText | MalformedEvent] = []
    link = AmiLink(dataclasses.replace(ami_settings(server.port), action_timeout=1.0),
                   on_text=texts.append)
    try:
        await link.start()
        assert await link.wait_ready(5)
        with pytest.raises(AmiError):
            await link.message_send(destination=DESTINATION, body="odd", from_=FROM)
        assert await link.wait_ready(5), "the link did not come back"
        await link.message_send(destination=DESTINATION, body="the next one", from_=FROM)
        # Text events with missing, non-base64 or mistyped fields become notices.
        assert server.writer is not None
        for event in ODD_EVENTS:
            server.writer.write(event)
        await server.writer.drain()
        deadline = asyncio.get_running_loop().time() + 5
        while len(texts) < len(ODD_EVENTS):
            assert asyncio.get_running_loop().time() < deadline, texts
            await asyncio.sleep(0.05)
        assert sum(isinstance(t, MalformedEvent) for t in texts) == 3
        [readable] = [t for t in texts if isinstance(t, InboundText)]
        assert readable.body == "ok body" and readable.declared_bytes is None
    finally:
        await link.stop()
        await server.stop()
