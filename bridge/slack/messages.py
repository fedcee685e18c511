"""Everything the bridge says in Slack, as pure functions of plain values.

Answers to `/sip` (help, list, sent, not sent and why) and the layout of posts carrying a
phone's text. Anything that came from a phone or a user is escaped or put in a
`plain_text` object, so it shows as typed and can never mention, link or format.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bridge.core.directory import Directory, Endpoint
from bridge.core.errors import (
    AmiActionFailed,
    AmiError,
    AmiLoginRefused,
    AmiTimeout,
    AmiUnavailable,
    PartlySent,
    TextRejected,
    UnknownRecipient,
)
from bridge.core.model import Backlog, PbxStatus
from bridge.core.texts import ASTERISK_MAX_INBOUND_BYTES, EchoText, InboundText
from bridge.slack.text import escape

# Slack refuses a plain_text / section text longer than this.
_SECTION_MAX = 3000
# Notifications show only the start of the fallback text anyway.
_FALLBACK_MAX = 3000


def help_text(command: str, directory: Directory) -> str:
    example = directory.endpoints[0].name if directory.endpoints else "alice"
    return (
        f"*Text a phone from Slack*\n"
        f"`{command} <recipient> <text>` sends the text to a phone through Asterisk, "
        f"e.g. `{command} {escape(example)} Running 5 minutes late`.\n"
        f"`{command} list` shows who you can text; `{command} help` shows this.\n"
        f"Texts from phones appear in the channel mapped to each phone."
    )


def list_text(command: str, directory: Directory) -> str:
    if not directory.endpoints:
        return "No phones are configured yet: ask your PBX admin to add [[endpoints]]."
    count = len(directory.endpoints)
    lines = [f"*You can text {count} phone{'s' if count != 1 else ''}:*"]
    for endpoint in directory.endpoints:
        aliases = f" (also: {', '.join(escape(a) for a in endpoint.aliases)})" \
            if endpoint.aliases else ""
        lines.append(f"• `{escape(endpoint.name)}`{aliases}: texts go to <#{endpoint.channel}>")
    lines.append(f"Send with `{command} <name> <text>`.")
    return "\n".join(lines)


def sending_text(endpoint: Endpoint) -> str:
    return f"Sending to *{escape(endpoint.name)}*…"


def queued_text(endpoint: Endpoint, *, several_pbxs: bool = False) -> str:
    where = f" (PBX *{escape(endpoint.pbx)}*)" if several_pbxs else ""
    return (f":hourglass_flowing_sand: Queued for *{escape(endpoint.name)}*: Asterisk{where} is "
            f"unreachable, the bridge will send it when it is back and tell you.")


def cannot_store_text(endpoint: str | None = None) -> str:
    """The bridge cannot store the text (its disk is full or its store file is unusable):
    nothing was sent, and nothing was kept to send later."""
    to = f" to *{escape(endpoint)}*" if endpoint else ""
    return (f":warning: Not sent{to}: the bridge cannot store texts right now (its disk is "
            f"full or its store is unusable), so nothing was sent or kept. Try again later; "
            f"the bridge's admin has been told by its health check.")


def sent_text(endpoint: str, segments: int, waited: float) -> str:
    parts = f" in {segments} parts (it was too long for one)" if segments > 1 else ""
    late = f" after waiting {waited / 60:.0f} min for Asterisk" if waited >= 60 else ""
    return (f":white_check_mark: Sent to *{escape(endpoint)}*{parts}{late}. "
            f"Asterisk accepted it for delivery.")


def not_sent_text(error: Exception, command: str, endpoint: str | None = None) -> str:
    """Why a text did not go out, and what to do about it."""
    to = f" to *{escape(endpoint)}*" if endpoint else ""
    if isinstance(error, UnknownRecipient):
        hint = (" Did you mean " + " or ".join(f"`{escape(s)}`" for s in error.suggestions) + "?"
                if error.suggestions else "")
        return (f":x: Not sent: there is no phone called `{escape(error.recipient)}`.{hint} "
                f"`{command} list` shows everyone you can text.")
    if isinstance(error, PartlySent):
        return (f":warning: Only part of the text reached{to or ' the phone'}: "
                f"{error.sent} of {error.total} parts went out, then "
                f"{escape(_reason(error.cause))}. The rest was not sent.")
    if isinstance(error, TextRejected) and endpoint is None:
        return (f":x: Not sent: {escape(str(error))}. "
                f"Write it as `{command} <recipient> <text>`.")
    return f":x: Not sent{to}: {escape(_reason(error))}."


def status_text(*, pbxs: list[PbxStatus], backlog: Backlog, now: float) -> str:
    """`/sip status`: each PBX's link (one line per PBX when there are several), then the
    queues."""
    def state(pbx: PbxStatus) -> str:
        return ":large_green_circle: connected" if pbx.ready else \
            f":red_circle: not connected ({escape(pbx.error or 'connecting')})"
    if len(pbxs) == 1:
        lines = [f"*Asterisk (AMI):* {state(pbxs[0])}"]
    else:
        lines = ["*Asterisk (AMI), per PBX:*"] + [
            f"• *{escape(p.name)}* ({escape(p.address)}"
            f"{', may be down' if not p.required else ''}): {state(p)}" for p in pbxs]
    lines += [
             f"*Texts from phones waiting for Slack:* {backlog.inbound_waiting}"
             + _oldest(backlog.inbound_oldest, now),
             f"*Texts to phones waiting for Asterisk:* {backlog.outbound_waiting}"
             + _oldest(backlog.outbound_oldest, now)]
    return "\n".join(lines)


def _oldest(oldest: float | None, now: float) -> str:
    return f" (oldest {_duration(now - oldest)})" if oldest is not None else ""


def failure_reason(error: Exception) -> str:
    """Why a text failed, in words for the person who sent it."""
    return _reason(error)


def _reason(error: Exception) -> str:
    if isinstance(error, AmiError):
        return _ami_reason(error)
    return str(error)


def _ami_reason(error: AmiError) -> str:
    if isinstance(error, AmiLoginRefused):
        return "the bridge cannot log in to Asterisk (its AMI credentials are wrong); " \
               "tell your PBX admin"
    if isinstance(error, AmiUnavailable):
        return "Asterisk is unreachable right now; try again in a minute, or tell your " \
               "PBX admin if it lasts"
    if isinstance(error, AmiTimeout):
        return "Asterisk did not answer in time, so the text may or may not have gone out"
    if isinstance(error, AmiActionFailed):
        return (f"Asterisk refused it ({error.asterisk_message or 'no reason given'}); "
                f"the phone may not exist in Asterisk")
    return str(error)


def sender_label(text: InboundText, endpoint: Endpoint | None) -> str:
    """How a phone is named in Slack: what Asterisk identified (directory name, else the
    endpoint), else - marked as unverified - the display name or URI its From claims."""
    if endpoint is not None:
        return endpoint.name
    if text.asterisk_endpoint:
        return text.asterisk_endpoint
    claimed = text.display_name or text.sender_uri
    return f"unverified: {claimed}" if claimed else "unknown sender"


@dataclass(frozen=True)
class PostItem:
    """One text as it is shown in a post: from a phone, or sent from Slack (an echo)."""

    text: InboundText | EchoText
    endpoint: Endpoint | None
    received_at: float  # unix time
    note: str = ""  # e.g. why it is late or in this channel; already Slack-escaped


def item_size(text: InboundText | EchoText) -> int:
    """Characters a text adds to a post's blocks (for bounding combined posts)."""
    if isinstance(text, EchoText):
        return len(text.body) + len(text.slack_user_name) + 300
    return len(text.body) + len(text.display_name) + len(text.sender_uri) + 300


def inbound_post(items: list[PostItem]) -> tuple[str, list[dict[str, Any]]]:
    """The fallback `text` and Block Kit `blocks` of a post carrying one or more phones' texts.

    Each text gets a context block (who, when, any note) and its body as `plain_text`, which
    Slack shows literally: no mentions, links or formatting can come from a phone.
    """
    blocks: list[dict[str, Any]] = []
    fallback: list[str] = []
    for item in items:
        if isinstance(item.text, EchoText):
            echo = item.text
            blocks.append({"type": "context", "elements": [
                {"type": "mrkdwn", "text": _echo_line(item, echo), "verbatim": True}]})
            blocks.extend(_plain_sections(echo.body))
            fallback.append(f"{escape(echo.slack_user_name)} to {escape(echo.endpoint)}: "
                            f"{escape(echo.body)}")
            continue
        label = sender_label(item.text, item.endpoint)
        body = _shown_body(item.text)
        # verbatim: Slack must not turn a phone's name or URI into a link or a mention
        # (they are escaped as well); only the bridge's own <!date> and <#C> parts are markup.
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": _who(item, item.text, label), "verbatim": True}]})
        if item.text.problem:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body}})
        else:
            blocks.extend(_plain_sections(body))
        fallback.append(f"{escape(label)}: {body if item.text.problem else escape(body)}")
    text = "\n".join(fallback)
    if len(items) > 1:
        text = f"{len(items)} texts\n{text}"
    return text[:_FALLBACK_MAX], blocks


def _plain_sections(body: str) -> list[dict[str, Any]]:
    """The body as plain_text sections, which Slack shows literally (no mentions, links)."""
    return [{"type": "section", "text": {"type": "plain_text",
                                         "text": body[start:start + _SECTION_MAX],
                                         "emoji": False}}
            for start in range(0, max(len(body), 1), _SECTION_MAX)]


def _echo_line(item: PostItem, echo: EchoText) -> str:
    line = (f":outbox_tray: *{escape(echo.slack_user_name)}* to *{escape(echo.endpoint)}* "
            f"with `/sip` · {_clock(item.received_at)}")
    return f"{line} · {item.note}" if item.note else line


def _clock(stamp_float: float) -> str:
    stamp = int(stamp_float)
    clock = time.strftime("%H:%M:%S UTC", time.gmtime(stamp))
    return f"<!date^{stamp}^{{time_secs}}|{clock}>"


def _who(item: PostItem, text: InboundText, label: str) -> str:
    identified = item.endpoint is not None or bool(text.asterisk_endpoint)
    who = f":iphone: *{escape(label)}*"
    if identified:
        # What the phone calls itself is its own claim: shown as such, after who it is.
        if text.display_name and text.display_name != label:
            who += f" (calls itself “{escape(text.display_name)}”)"
        if text.sender_uri:
            who += f" · From: {escape(text.sender_uri)}"
    elif text.display_name and text.sender_uri:
        who += f" · {escape(text.sender_uri)}"
    if not item.endpoint and not text.problem:
        who += " · not in the directory" if identified else \
            " · not identified by Asterisk (From may be forged)"
    who += f" · {_clock(item.received_at)}"
    if item.note:
        who += f" · {item.note}"
    return who


def _shown_body(text: InboundText) -> str:
    if text.problem:
        return (f":warning: A text reached Asterisk but could not be read: "
                f"{escape(text.problem)}. Check that Asterisk runs the dialplan snippet "
                f"that `bridge asterisk-config` prints (the current one).")
    if text.body:
        return text.body
    if text.dropped_by_asterisk:
        return (f"[This text was {text.declared_bytes:,} bytes long. Asterisk delivers texts "
                f"of at most {ASTERISK_MAX_INBOUND_BYTES - 1:,} bytes and passed on nothing, "
                f"so its content is lost. Ask the sender to split it.]")
    return "[empty text]"


def pbx_note(pbx: str) -> str:
    """Which PBX (site) a text came through, shown when the bridge serves several."""
    return f"via PBX *{escape(pbx)}*"


def late_note(received_at: float, now: float) -> str:
    return f":hourglass: late: received {_duration(now - received_at)} ago"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


# The action_id of the Retry button on a failed text's notice (bridge/slack/retry.py).
RETRY_ACTION = "retry_text"


def failure_notice_blocks(text: str, row_id: int) -> list[dict[str, Any]]:
    """A failure notice (mrkdwn `text`) with a Retry button for stored text `row_id`."""
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
        {"type": "actions", "block_id": f"retry-{row_id}", "elements": [
            {"type": "button", "action_id": RETRY_ACTION, "value": str(row_id),
             "text": {"type": "plain_text", "text": "Retry"}}]},
    ]
