"""A tiny SIP user agent over asyncio UDP: a phone that texts (SIP MESSAGE).

The demo's simulated phones, and the test suite's and bench's (tests/sip_ua.py re-exports it;
it lives in the package because a pip-installed bridge has no tests/). Just enough of
RFC 3261 / RFC 3428 for a local Asterisk, with no dependencies:

* as UAS it answers every MESSAGE with `200 OK` (Via, From, To + tag, Call-ID and CSeq copied)
  and records it once, however often it is retransmitted; OPTIONS also get 200, anything else
  501, so Asterisk never waits on us;
* as UAC it sends MESSAGE requests, retransmits them on the non-INVITE client timer (500 ms
  doubling, capped at 4 s) until a final response, and returns its status code; it can also
  REGISTER its contact (and unregister it), for endpoints that learn where a phone is that way.

* with `password` set it answers a 401/407 digest challenge (MD5, `qop=auth` or none) once,
  as `auth_user` (default: its name), so it can be an endpoint with `identify_by =
  auth_username`; `host` picks the 127.x.y.z address it sends from (`identify_by = ip`).

Not handled: TCP/TLS, header folding, multipart bodies.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)

T1 = 0.5  # RFC 3261 round-trip estimate: first retransmission interval
T2 = 4.0  # RFC 3261 cap on the non-INVITE retransmission interval

# RFC 3261 7.3.3 compact header names.
_COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "c": "content-type",
    "l": "content-length",
    "m": "contact",
    "s": "subject",
    "k": "supported",
}


@dataclass(frozen=True)
class ReceivedMessage:
    """One SIP MESSAGE the phone received (retransmissions recorded once)."""

    body: str  # raw_body decoded as UTF-8 (undecodable bytes replaced)
    raw_body: bytes
    from_header: str
    to_header: str
    content_type: str
    call_id: str
    at: float = field(default_factory=time.time)  # unix time it arrived


@dataclass
class _SipMessage:
    """A parsed SIP request or response. Header names are lower-case, long forms."""

    start_line: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def is_response(self) -> bool:
        return self.start_line.startswith("SIP/2.0 ")

    def header(self, name: str, default: str = "") -> str:
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def all_headers(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


def _parse(data: bytes) -> _SipMessage:
    head, separator, rest = data.partition(b"\r\n\r\n")
    if not separator:
        raise ValueError("no blank line after the SIP headers")
    lines = head.decode("utf-8", errors="replace").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"malformed SIP header line {line!r}")
        key = name.strip().lower()
        headers.append((_COMPACT.get(key, key), value.strip()))
    message = _SipMessage(lines[0], headers, rest)
    length = message.header("content-length")
    if length:
        message.body = rest[: int(length)]
    return message


def _token() -> str:
    return secrets.token_hex(8)


class SipPhone(asyncio.DatagramProtocol):
    """A phone on UDP 127.0.0.1:`port` that texts Asterisk at 127.0.0.1:`asterisk_port`.

    Create it with port 0 and start() it to learn its port, then configure the matching
    endpoint (`SipPeer(phone.name, phone.port)`) in Asterisk.
    """

    def __init__(
        self,
        name: str,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        asterisk_host: str = "127.0.0.1",
        asterisk_port: int,
        auth_user: str | None = None,
        password: str | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.host = host
        self.auth_user = auth_user or name
        self.password = password
        self.asterisk_host = asterisk_host
        self.asterisk_port = asterisk_port
        self.received: list[ReceivedMessage] = []
        # Called with every MESSAGE recorded (the demo's page updates from it).
        self.on_message: Callable[[ReceivedMessage], None] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        # Set whenever a MESSAGE is recorded; waiters re-check their count.
        self._arrived = asyncio.Event()
        # Responses we sent, by (Call-ID, CSeq), resent as-is when a request is retransmitted.
        self._answered: dict[tuple[str, str], bytes] = {}
        # Our outstanding client transactions, by (Call-ID, CSeq), and their responses.
        self._pending: dict[tuple[str, str], asyncio.Queue[_SipMessage]] = {}
        self._cseq = 0
        self._register_call_id = f"{_token()}@127.0.0.1"

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.host, self.port)
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ----------------------------------------------------------------- receiving

    async def wait_for_messages(self, n: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Wait until at least `n` MESSAGEs have arrived; return all received so far.

        Raises AssertionError naming what did arrive when `timeout` passes first.
        """
        try:
            async with asyncio.timeout(timeout):
                while len(self.received) < n:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            got = "\n".join(f"  {m.from_header}: {m.body!r}" for m in self.received)
            raise AssertionError(
                f"phone {self.name!r} expected {n} MESSAGE(s) within {timeout} s, "
                f"got {len(self.received)}:\n{got}"
            ) from None
        return list(self.received)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # keep-alive CRLFs
        try:
            message = _parse(data)
        except ValueError as exc:
            log.warning("phone %s: unparsable datagram from %s: %s", self.name, addr, exc)
            return
        if message.is_response:
            self._on_response(message)
        else:
            self._on_request(message, addr)

    def _on_request(self, request: _SipMessage, addr: tuple[str, int]) -> None:
        method = request.start_line.split(" ", 1)[0]
        key = (request.header("call-id"), request.header("cseq"))
        if key in self._answered:  # a retransmission: our 200 was lost or is late
            self._send(self._answered[key], addr)
            return
        if method == "MESSAGE":
            code = "200 OK"
            self.received.append(
                ReceivedMessage(
                    body=request.body.decode("utf-8", errors="replace"),
                    raw_body=request.body,
                    from_header=request.header("from"),
                    to_header=request.header("to"),
                    content_type=request.header("content-type"),
                    call_id=request.header("call-id"),
                )
            )
            self._arrived.set()
            if self.on_message is not None:
                self.on_message(self.received[-1])
        elif method in ("OPTIONS",):
            code = "200 OK"
        elif method == "ACK":
            return  # never answered
        else:
            code = "501 Not Implemented"
        to = request.header("to")
        if ";tag=" not in to:
            to = f"{to};tag={_token()}"
        lines = [f"SIP/2.0 {code}"]
        lines += [f"Via: {via}" for via in request.all_headers("via")]
        lines += [
            f"From: {request.header('from')}",
            f"To: {to}",
            f"Call-ID: {request.header('call-id')}",
            f"CSeq: {request.header('cseq')}",
            "Content-Length: 0",
        ]
        response = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self._answered[key] = response
        self._send(response, addr)

    # ----------------------------------------------------------------- sending

    async def send_message(
        self,
        body: str | bytes,
        *,
        to_user: str = "bridge",
        display_name: str | None = None,
        from_user: str | None = None,
        content_type: str = "text/plain;charset=UTF-8",
        timeout: float = 5.0,
        call_id: str | None = None,
        cseq: int | None = None,
    ) -> int:
        """Send one SIP MESSAGE to sip:`to_user`@Asterisk; return the final status code.

        `call_id` and `cseq` replace the fresh ones (a test can reuse another phone's).

        Asterisk answers 202 Accepted once it has queued the text for its dialplan. A digest
        challenge is answered once when the phone has a password. Raises TimeoutError when no
        final response arrives within `timeout`.
        """
        if self._transport is None:
            raise RuntimeError("start() the phone first")
        raw = body.encode("utf-8") if isinstance(body, str) else body
        user = from_user if from_user is not None else self.name
        here = f"{self.host}:{self.port}"
        there = f"{self.asterisk_host}:{self.asterisk_port}"
        from_uri = f"<sip:{user}@{here}>"
        if display_name is not None:
            # A quoted-string: backslash-escape backslashes and quotes (RFC 3261 25.1).
            quoted = display_name.replace("\\", "\\\\").replace('"', '\\"')
            from_uri = f'"{quoted}" {from_uri}'
        call_id = call_id or f"{_token()}@{self.host}"
        request_uri = f"sip:{to_user}@{there}"
        headers = [
            f"From: {from_uri};tag={_token()}",
            f"To: <{request_uri}>",
            f"Call-ID: {call_id}",
        ]
        tail = [f"Content-Type: {content_type}",
                f"Content-Length: {len(raw)}"]  # bytes, not characters
        authorization: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._cseq += 1
                    number = cseq if cseq is not None and not authorization else self._cseq
                    sequence = f"{number} MESSAGE"
                    head = "\r\n".join([
                        f"MESSAGE {request_uri} SIP/2.0",
                        f"Via: SIP/2.0/UDP {here};branch=z9hG4bK{_token()};rport",
                        "Max-Forwards: 70", *headers, f"CSeq: {sequence}", *authorization,
                        *tail])
                    response = await self._transact(
                        head.encode("utf-8") + b"\r\n\r\n" + raw, (call_id, sequence))
                    status = int(response.start_line.split(" ", 2)[1])
                    if status in (401, 407) and self.password is not None \
                            and not authorization:
                        authorization = [self._authorization(response, status, request_uri)]
                        continue
                    return status
        except TimeoutError:
            raise TimeoutError(
                f"phone {self.name!r}: no final response to MESSAGE within {timeout} s"
            ) from None

    async def register(self, *, expires: int = 3600, timeout: float = 5.0) -> int:
        """REGISTER this phone's contact with Asterisk for `expires` seconds (0: unregister);
        return the final status code (200 when Asterisk took it).

        Registers sip:`name`@Asterisk with Contact sip:`name`@`host`:`port`, without
        authentication (an endpoint without `auth`). One Call-ID for all of this phone's
        registrations, as RFC 3261 10.2 asks, so an unregister removes the same binding.
        """
        if self._transport is None:
            raise RuntimeError("start() the phone first")
        here = f"{self.host}:{self.port}"
        there = f"{self.asterisk_host}:{self.asterisk_port}"
        self._cseq += 1
        cseq = f"{self._cseq} REGISTER"
        head = "\r\n".join(
            [
                f"REGISTER sip:{there} SIP/2.0",
                f"Via: SIP/2.0/UDP {here};branch=z9hG4bK{_token()};rport",
                "Max-Forwards: 70",
                f"From: <sip:{self.name}@{there}>;tag={_token()}",
                f"To: <sip:{self.name}@{there}>",
                f"Call-ID: {self._register_call_id}",
                f"CSeq: {cseq}",
                f"Contact: <sip:{self.name}@{here}>",
                f"Expires: {expires}",
                "Content-Length: 0",
            ]
        )
        request = head.encode("utf-8") + b"\r\n\r\n"
        try:
            async with asyncio.timeout(timeout):
                response = await self._transact(request, (self._register_call_id, cseq))
        except TimeoutError:
            raise TimeoutError(
                f"phone {self.name!r}: no final response to REGISTER within {timeout} s"
            ) from None
        return int(response.start_line.split(" ", 2)[1])

    def _authorization(self, challenge: _SipMessage, status: int, uri: str) -> str:
        """The Authorization (or Proxy-Authorization) header answering a digest challenge."""
        assert self.password is not None
        header = challenge.header("www-authenticate" if status == 401 else "proxy-authenticate")
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', header))
        realm, nonce = params.get("realm", ""), params.get("nonce", "")

        def md5(text: str) -> str:
            return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

        ha1 = md5(f"{self.auth_user}:{realm}:{self.password}")
        ha2 = md5(f"MESSAGE:{uri}")
        fields = [f'username="{self.auth_user}"', f'realm="{realm}"', f'nonce="{nonce}"',
                  f'uri="{uri}"', "algorithm=MD5"]
        if "auth" in params.get("qop", "").split(","):
            cnonce = _token()
            answer = md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
            fields += ["qop=auth", "nc=00000001", f'cnonce="{cnonce}"']
        else:
            answer = md5(f"{ha1}:{nonce}:{ha2}")
        fields.append(f'response="{answer}"')
        if "opaque" in params:
            fields.append(f'opaque="{params["opaque"]}"')
        name = "Authorization" if status == 401 else "Proxy-Authorization"
        return f"{name}: Digest {', '.join(fields)}"

    async def _transact(self, request: bytes, key: tuple[str, str]) -> _SipMessage:
        """Send a request, retransmitting on timer E; return its final response."""
        responses: asyncio.Queue[_SipMessage] = asyncio.Queue()
        self._pending[key] = responses
        interval = T1
        try:
            self._send(request, (self.asterisk_host, self.asterisk_port))
            while True:
                try:
                    response = await asyncio.wait_for(responses.get(), interval)
                except TimeoutError:
                    # Timer E: retransmit, doubling up to T2.
                    self._send(request, (self.asterisk_host, self.asterisk_port))
                    interval = min(interval * 2, T2)
                    continue
                if int(response.start_line.split(" ", 2)[1]) >= 200:
                    return response
                interval = T2  # provisional: the server has it, retransmit slowly
        finally:
            del self._pending[key]

    def _on_response(self, response: _SipMessage) -> None:
        key = (response.header("call-id"), response.header("cseq"))
        responses = self._pending.get(key)
        if responses is None:
            return  # a retransmitted final response for a finished transaction
        responses.put_nowait(response)

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)
