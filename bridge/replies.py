"""Everything the bridge says in Slack, as pure functions of plain values.

Answers to `/sip` (help, list, sent, not sent and why) and the layout of posts carrying a
phone's text. Anything that came from a phone or a user is escaped or put in a
`plain_text` object, so it shows as typed and can never mention, link or format.
"""

from __future__ import annotations

from typing import Any

from bridge.directory import Directory, Endpoint
from bridge.errors import (
    AmiActionFailed,
    AmiError,
    AmiLoginRefused,
    AmiTimeout,
    AmiUnavailable,
    TextRejected,
)
from bridge.outbound import PartlySent, SendReport, UnknownRecipient
from bridge.slack_text import escape
from bridge.texts import ASTERISK_MAX_INBOUND_BYTES, InboundText, MalformedEvent

# Slack refuses a plain_text / section text longer than this.
_SECTION_MAX = 3000


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


def sent_text(report: SendReport) -> str:
    parts = f" in {report.segments} parts (it was too long for one)" \
        if report.segments > 1 else ""
    return (f":white_check_mark: Sent to *{escape(report.endpoint.name)}*{parts}. "
            f"Asterisk accepted it for delivery.")


def not_sent_text(error: Exception, command: str) -> str:
    """Why a text did not go out, and what to do about it."""
    if isinstance(error, UnknownRecipient):
        hint = (" Did you mean " + " or ".join(f"`{escape(s)}`" for s in error.suggestions) + "?"
                if error.suggestions else "")
        return (f":x: Not sent: there is no phone called `{escape(error.recipient)}`.{hint} "
                f"`{command} list` shows everyone you can text.")
    if isinstance(error, TextRejected):
        return (f":x: Not sent: {escape(str(error))}. "
                f"Write it as `{command} <recipient> <text>`.")
    if isinstance(error, PartlySent):
        return (f":warning: Only part of the text reached *{escape(error.endpoint.name)}*: "
                f"{error.sent} of {error.total} parts went out, then "
                f"{escape(_ami_reason(error.cause))}. The rest was not sent.")
    if isinstance(error, AmiError):
        return f":x: Not sent: {escape(_ami_reason(error))}."
    return ":x: Not sent: the bridge hit an unexpected error (it is in the bridge's log)."


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
    """How a phone is named in Slack: directory name, else its display name, else its URI."""
    if endpoint is not None:
        return endpoint.name
    return text.display_name or text.sender_uri or "unknown sender"


def inbound_post(text: InboundText, endpoint: Endpoint | None) -> tuple[str, list[dict[str, Any]]]:
    """The fallback `text` and Block Kit `blocks` of a post carrying a phone's text."""
    label = sender_label(text, endpoint)
    who = f"*{escape(label)}*"
    if text.display_name and text.display_name != label:
        who += f" ({escape(text.display_name)})"
    if text.sender_uri:
        who += f" · {escape(text.sender_uri)}"
    if not endpoint:
        who += " · not in the directory"
    if text.body:
        body = text.body
    elif text.dropped_by_asterisk:
        body = (f"[This text was {text.declared_bytes:,} bytes long. Asterisk delivers texts "
                f"of at most {ASTERISK_MAX_INBOUND_BYTES - 1:,} bytes and passed on nothing, "
                f"so its content is lost. Ask the sender to split it.]")
    else:
        body = "[empty text]"
    blocks: list[dict[str, Any]] = [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f":iphone: {who}"}]},
    ]
    for start in range(0, len(body), _SECTION_MAX):
        blocks.append({"type": "section",
                       "text": {"type": "plain_text", "text": body[start:start + _SECTION_MAX],
                                "emoji": False}})
    fallback = f"{escape(label)}: {escape(body)}"
    return fallback, blocks


def malformed_post(event: MalformedEvent) -> tuple[str, list[dict[str, Any]]]:
    sender = f" from {escape(event.sender_hint)}" if event.sender_hint else ""
    message = (f":warning: A text{sender} reached Asterisk but could not be read: "
               f"{escape(event.problem)}. Check that the dialplan snippet in "
               f"config/asterisk/extensions.conf is the current one.")
    return message, [{"type": "section", "text": {"type": "mrkdwn", "text": message}}]
