"""A tiny fake AMI server on 127.0.0.1 that records the exact bytes a client writes.

It reads actions the way Asterisk's manager does (a line ends at LF, a CR before it is
dropped, a blank line ends the action), so a header value carrying CR/LF would show up here
as an extra header or an extra action, exactly as Asterisk would see it. It answers Login
with success, sends `FullyBooted`, answers `DBGet` and `DBGetTree` with an empty spool and every
other action with `Response: Success` and the action's ActionID.
"""

from __future__ import annotations

import asyncio
import contextlib

BANNER = b"Asterisk Call Manager/9.0.0\r\n"


class FakeAmi:
    def __init__(self) -> None:
        self.raw = bytearray()  # every byte every client wrote, in order
        self.actions: list[list[tuple[str, str]]] = []  # as Asterisk would parse them
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()

    def clear(self) -> None:
        self.raw.clear()
        self.actions.clear()

    def actions_named(self, name: str) -> list[dict[str, str]]:
        return [dict(a) for a in self.actions
                if dict(a).get("Action", "").lower() == name.lower()]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        writer.write(BANNER)
        current: list[tuple[str, str]] = []
        try:
            while line := await reader.readline():  # up to and including LF
                self.raw += line
                text = line.decode("utf-8", "replace").rstrip("\n").removesuffix("\r")
                if text:
                    key, _, value = text.partition(":")
                    current.append((key.strip(), value.strip()))
                    continue
                if not current:
                    continue
                self.actions.append(current)
                await self._answer(dict(current), writer)
                current = []
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, action: dict[str, str], writer: asyncio.StreamWriter) -> None:
        name = action.get("Action", "").lower()
        action_id = action.get("ActionID", "")
        if name == "login":
            writer.write(f"Response: Success\r\nActionID: {action_id}\r\n"
                         f"Message: Authentication accepted\r\n\r\n".encode())
            writer.write(b"Event: FullyBooted\r\nPrivilege: system,all\r\n"
                         b"Status: Fully Booted\r\n\r\n")
        elif name == "dbget":  # the spool's list of hours: none yet
            writer.write(f"Response: Error\r\nActionID: {action_id}\r\n"
                         f"Message: Database entry not found\r\n\r\n".encode())
        elif name == "dbgettree":
            writer.write(f"Response: Success\r\nActionID: {action_id}\r\nEventList: start\r\n"
                         f"Message: Result will follow\r\n\r\n"
                         f"Event: DBGetTreeComplete\r\nActionID: {action_id}\r\n"
                         f"EventList: Complete\r\nListItems: 0\r\n\r\n".encode())
        else:
            writer.write(f"Response: Success\r\nActionID: {action_id}\r\n"
                         f"Message: Message successfully sent\r\n\r\n".encode())
        await writer.drain()
