"""An AMI user without `write = reporting`: Asterisk answers DBGet and DBGetTree with `Response: Error`
(`Permission denied`, measured on Asterisk 22). The bridge must warn once and keep its link,
not wait for an answer that panoramisk never delivers and reconnect in a loop."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest
from fake_ami import FakeAmi
from test_ami_encoding import DESTINATION, FROM, ami_settings

from bridge.asterisk.ami import AmiLink


class NoReportingAmi(FakeAmi):
    async def _answer(self, action: dict[str, str], writer: asyncio.StreamWriter) -> None:
        if action.get("Action", "").lower() in ("dbget", "dbgettree"):
            writer.write(f"Response: Error\r\nActionID: {action.get('ActionID', '')}\r\n"
                         f"Message: Permission denied\r\n\r\n".encode())
            await writer.drain()
            return
        await super()._answer(action, writer)


async def test_denied_spool_read_warns_once_and_keeps_the_link(
        caplog: pytest.LogCaptureFixture) -> None:
    server = NoReportingAmi()
    await server.start()
    settings = dataclasses.replace(ami_settings(server.port), action_timeout=1.0)
    link = AmiLink(settings, on_text=lambda _text: None)
    caplog.set_level(logging.INFO, logger="bridge.asterisk.ami")
    try:
        await link.start()
        assert await link.wait_ready(5)
        await asyncio.sleep(2.5)  # over two action timeouts
        assert link.ready and link.reconnects == 0
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "add `reporting`" in warnings[0], warnings
        await link.message_send(destination=DESTINATION, body="still works", from_=FROM)
        assert len(server.actions_named("MessageSend")) == 1
    finally:
        await link.stop()
        await server.stop()
