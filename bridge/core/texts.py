"""The bridge's own values for texts, and the translation of the dialplan's AMI event into them.

The dialplan in `bridge/asterisk/templates/extensions.conf` emits, for each SIP MESSAGE a phone sends:

    Event: UserEvent
    UserEvent: SlackBridgeText
    Uniqueid: the message channel's; the SAME for every text, so useless as a text ID
    MessageId: base64(Call-ID CSeq)  identifies one SIP MESSAGE transaction of one sender
    Time: unix time with microseconds when Asterisk handled it
    Version: 2
    Token: the per-install event token (checked by bridge.asterisk.ami, never stored or logged)
    Endpoint: base64(the PJSIP endpoint Asterisk identified), written by that endpoint's own
              context; absent when the text came through the shared one (not identified)
    From: base64(MESSAGE(from))      e.g. "Smith, John" <sip:bob@10.0.0.5>; what the phone
                                     CLAIMS: shown, never used to route
    To: base64(MESSAGE(to))
    ToExten: base64(EXTEN)           the Request-URI user part
    BodyLength: Content-Length of the SIP request
    Body: base64(MESSAGE(body))

Everything SIP-derived is base64 in the event (display names and bodies may contain commas,
CR/LF, anything), and decoding is strict: a value that is not valid base64 or UTF-8 becomes
a `MalformedEvent` that the bridge reports, never a crash or a silently mangled text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.core.directory import DEFAULT_PBX, normalize_uri

TEXT_EVENT = "SlackBridgeText"
EVENT_TOKEN_GLOBAL = "SLACK_BRIDGE_EVENT_TOKEN"  # the dialplan global holding the token
EVENT_TOKEN_PLACEHOLDER = "change-me-to-the-bridge-event-token"  # as shipped


def derive_event_token(ami_secret: str) -> str:
    """The default per-install event token: a one-way function of the AMI secret.

    The dialplan puts it in every text event, so the bridge can tell its events from ones a
    phone shaped; deriving it means an install has one secret less to manage, and the
    dialplan holding it reveals nothing about the AMI secret.
    """
    digest = hmac.new(ami_secret.encode("utf-8"), b"slack-bridge event token v1",
                      hashlib.sha256).hexdigest()
    return digest[:32]

# PJSIP hands the dialplan an empty body when the SIP body is this long or longer.
ASTERISK_MAX_INBOUND_BYTES = 1024

_NAME_ADDR = re.compile(r"^\s*(?P<display>.*?)\s*<(?P<uri>[^<>]*)>\s*$", re.DOTALL)


@dataclass(frozen=True)
class InboundText:
    """A text a phone sent, as Asterisk reported it."""

    # One SIP MESSAGE of one sender: its endpoint (or, unidentified, its From) and the
    # base64 of its Call-ID and CSeq, so one phone cannot reuse another's Call-ID to
    # suppress its text. Version-1 events (no endpoint) keep the bare MessageId.
    event_id: str
    sender_uri: str  # sip:bob@10.0.0.5
    display_name: str  # as the sender chose it; may be empty
    body: str
    declared_bytes: int | None  # the SIP Content-Length, when the dialplan reported it
    to_uri: str
    exten: str
    problem: str = ""  # set when the event could not be read; then body is empty
    asterisk_time: float | None = None  # unix time Asterisk handled it (the dialplan's Time)
    # The PJSIP endpoint Asterisk identified (and authenticated) as the sender, from the
    # dialplan; "" when the text came through the shared context and nobody knows.
    asterisk_endpoint: str = ""
    # The PBX (its `[[pbx]]` name) whose AMI link reported the text; set by that link.
    pbx: str = DEFAULT_PBX

    @property
    def dropped_by_asterisk(self) -> bool:
        """Asterisk emptied the body because it was too long to relay."""
        return (not self.body and self.declared_bytes is not None
                and self.declared_bytes >= ASTERISK_MAX_INBOUND_BYTES)


@dataclass(frozen=True)
class EchoText:
    """A text someone sent from Slack with /sip, shown in the phone's conversation thread."""

    body: str
    slack_user: str  # user ID
    slack_user_name: str  # shown instead of a mention, which would notify them
    endpoint: str
    outbound_id: int


@dataclass(frozen=True)
class MalformedEvent:
    """A text event the bridge could not decode; reported rather than dropped."""

    event_id: str
    problem: str
    sender_hint: str  # whatever of the sender could be decoded, for the notice

    def as_notice(self) -> InboundText:
        """The event as a text-shaped notice, so it is stored and posted like any text."""
        return InboundText(event_id=self.event_id, sender_uri="", display_name=self.sender_hint,
                           body="", declared_bytes=None, to_uri="", exten="",
                           problem=self.problem)


def text_json(text: InboundText | EchoText) -> str:
    """A text as the store keeps it (read back with `kind(**json.loads(...))`). Both kinds
    are flat dataclasses of strings and numbers, so their fields are their __dict__:
    `dataclasses.asdict` (a deep copy) cost a tenth of the store's time per text."""
    return json.dumps(vars(text))


def split_name_addr(value: str) -> tuple[str, str]:
    """`"Smith, John" <sip:bob@h>` -> ("Smith, John", "sip:bob@h"); bare URIs -> ("", uri)."""
    match = _NAME_ADDR.match(value)
    if not match:
        return "", value.strip()
    display = match.group("display").strip()
    if len(display) >= 2 and display[0] == display[-1] == '"':
        display = display[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return display, match.group("uri").strip()


def _b64(event: Mapping[str, str], key: str) -> str:
    raw = event.get(key)
    if raw is None:
        raise ValueError(f"the event has no {key} header (is the dialplan snippet current?)")
    raw = str(raw).strip()
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{key} is not valid base64") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{key} is not valid UTF-8") from None


def decode_text_event(event: Mapping[str, str]) -> InboundText | MalformedEvent:
    """Translate one `UserEvent: SlackBridgeText` AMI event into an InboundText."""
    # Not the channel's Uniqueid: every text is run on the same Message/ast_msg_queue
    # channel, whose Uniqueid repeats for every message (measured on Asterisk 22.10).
    message_id = str(event.get("MessageId", "")).strip()
    event_id = message_id
    hint = ""
    try:
        # An empty header value ("Endpoint: ") is dropped by the AMI parser: not identified.
        endpoint = _b64(event, "Endpoint") if "Endpoint" in event else ""
        from_value = _b64(event, "From")
        display, uri = split_name_addr(from_value)
        hint = display or uri
        # An empty header value ("Body: ") is dropped by the AMI parser: no Body is empty.
        body = _b64(event, "Body") if "Body" in event else ""
        to_value = _b64(event, "To") if "To" in event else ""
        # Not "Exten": that header is the channel's own, written unescaped by Asterisk.
        exten = _b64(event, "ToExten") if "ToExten" in event else ""
    except ValueError as exc:
        return MalformedEvent(event_id=event_id, problem=str(exc), sender_hint=hint)
    if str(event.get("Version", "")).strip() != "1":
        event_id = (f"{endpoint}|{message_id}" if endpoint
                    else f"?{normalize_uri(uri)}|{message_id}")
    length_text = str(event.get("BodyLength", "")).strip()
    declared = int(length_text) if length_text.isdigit() else None
    try:
        asterisk_time: float | None = float(str(event.get("Time", "")).strip())
    except ValueError:
        asterisk_time = None
    return InboundText(
        event_id=event_id,
        sender_uri=uri,
        display_name=display,
        body=body,
        declared_bytes=declared,
        to_uri=split_name_addr(to_value)[1],
        exten=exten,
        asterisk_time=asterisk_time,
        asterisk_endpoint=endpoint,
    )


# The spool value the dialplan writes to AstDB: the version, then these fields, "|"-separated
# (version 2 added the endpoint at the end).
_SPOOL_FIELDS = {
    "1": ("Time", "From", "To", "ToExten", "MessageId", "BodyLength", "Body"),
    "2": ("Time", "From", "To", "ToExten", "MessageId", "BodyLength", "Body", "Endpoint"),
}


def decode_spool_entry(value: str) -> InboundText | MalformedEvent:
    """Translate one AstDB spool value (see extensions.conf) like a live text event."""
    version, _, rest = value.partition("|")
    fields = rest.split("|")
    names = _SPOOL_FIELDS.get(version)
    if names is None or len(fields) != len(names):
        return MalformedEvent(event_id="", problem=f"a spooled text has an unknown layout "
                              f"(version {version[:10]!r}, {len(fields)} fields)",
                              sender_hint="")
    event = {key: field for key, field in zip(names, fields, strict=True) if field}
    event["Version"] = version
    return decode_text_event(event)
