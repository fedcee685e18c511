"""Everything the bridge says in Slack, as pure functions of plain values.

Answers to `/sip` (help, list, sent, not sent and why) and the layout of posts carrying a
phone's text. Anything that came from a phone or a user is escaped or put in a
`plain_text` object, so it shows as typed and can never mention, link or format.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
    PhoneNotRegistered,
    TextRejected,
    UnknownRecipient,
)
from bridge.core.model import Backlog, PbxStatus
from bridge.core.texts import ASTERISK_MAX_INBOUND_BYTES, EchoText, InboundText
from bridge.slack.text import escape

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


def list_text(command: str, directory: Directory,
              presence: Callable[[str], str] | None = None) -> str:
    """The directory; with `presence`, each phone's online / offline / unknown."""
    if not directory.endpoints:
        return "No phones are configured yet: ask your PBX admin to add [[endpoints]]."
    count = len(directory.endpoints)
    lines = [f"*You can text {count} phone{'s' if count != 1 else ''}:*"]
    for endpoint in directory.endpoints:
        aliases = f" (also: {', '.join(escape(a) for a in endpoint.aliases)})" \
            if endpoint.aliases else ""
        state = f" · {presence(endpoint.name)}" if presence else ""
        lines.append(f"• `{escape(endpoint.name)}`{aliases}{state}: texts go to "
                     f"<#{endpoint.channel}>")
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
    if isinstance(error, PhoneNotRegistered):
        return (f"{error.endpoint}'s phone is not registered (offline), so Asterisk refused "
                f"it; try again once the phone is on")
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


# Slack's limits on one message (see /work/shared/FACTS.md): every text object holds at most
# 3,000 characters as sent (escaped: one "&" is five), a message at most 50 blocks, and blocks
# totalling about 12-13k characters are refused (msg_blocks_too_long). A post is built under
# all three up front; what does not fit in one post continues in the next.
TEXT_OBJECT_MAX = 3000
POST_BLOCKS_MAX = 50
# A context block holds at most 10 elements; ours hold one.
# A name, display name or URI shows at most this many characters (escaped) in a post.
NAME_MAX = 200
# The context line of a post that carries on a text too long for the previous one.
CONTINUED = ":arrow_right_hook:"


@dataclass(frozen=True)
class Fit:
    """How tightly posts are built: `chars` of block text per post, `name` characters per
    name, `section` characters per text section. Slack refusing a post for its content makes
    the relay try the next, tighter one (`FITS`)."""

    chars: int = 11000
    name: int = NAME_MAX
    section: int = TEXT_OBJECT_MAX


FITS = (Fit(), Fit(chars=5000, name=80, section=2000), Fit(chars=2000, name=30, section=1000))


@dataclass(frozen=True)
class Post:
    """One Slack message: its notification `text` and its Block Kit `blocks`."""

    text: str
    blocks: list[dict[str, Any]]


def item_size(text: InboundText | EchoText) -> int:
    """Characters a text adds to a post's blocks (for bounding combined posts)."""
    if isinstance(text, EchoText):
        return len(text.body) + min(len(text.slack_user_name) * 5, NAME_MAX) + 300
    return (len(text.body) + min(len(text.display_name) * 5, NAME_MAX)
            + min(len(text.sender_uri) * 5, NAME_MAX) + 300)


def item_blocks(text: InboundText | EchoText) -> int:
    """Blocks a text adds to a post: its context line and its sections."""
    return 1 + max(1, -(-len(text.body) // TEXT_OBJECT_MAX))


def inbound_post(items: list[PostItem]) -> tuple[str, list[dict[str, Any]]]:
    """The one post carrying `items` (fallback text, blocks); ValueError if they need more."""
    posts = inbound_posts(items)
    if len(posts) != 1:
        raise ValueError(f"these texts need {len(posts)} posts")
    return posts[0].text, posts[0].blocks


def inbound_posts(items: list[PostItem], fit: Fit = FITS[0]) -> list[Post]:
    """The posts carrying one or more phones' texts, in order, each within Slack's limits.

    Each text gets a context block (who, when, any note) and its body as `plain_text`, which
    Slack shows literally: no mentions, links or formatting can come from a phone. Names are
    shortened (with "…") to fit; a body is never cut: what does not fit in one post continues
    in the next, whose context line says "continued, part 2 of 3".
    """
    posts: list[Post] = []
    blocks: list[dict[str, Any]] = []
    fallback: list[str] = []
    count = 0

    def flush() -> None:
        nonlocal blocks, fallback, count
        if blocks:
            text = "\n".join(fallback)
            if count > 1:
                text = f"{count} texts\n{text}"
            posts.append(Post(_cut_escaped(text, _FALLBACK_MAX), blocks))
        blocks, fallback, count = [], [], 0

    for item in items:
        line, sections, short = _rendered(item, fit)
        # verbatim: Slack must not turn a phone's name or URI into a link or a mention
        # (they are escaped as well); only the bridge's own <!date> and <#C> parts are markup.
        head = {"type": "context", "elements": [{"type": "mrkdwn", "text": line,
                                                 "verbatim": True}]}
        cost = len(line) + sum(len(s["text"]["text"]) for s in sections)
        if blocks and (len(blocks) + 1 + len(sections) > POST_BLOCKS_MAX
                       or _chars(blocks) + cost > fit.chars):
            flush()
        if 1 + len(sections) <= POST_BLOCKS_MAX and cost <= fit.chars:
            blocks += [head, *sections]
            fallback.append(short)
            count += 1
            continue
        # Too long for any one post: continue it in as many as it takes.
        flush()
        parts: list[list[dict[str, Any]]] = [[]]
        size = len(line)
        for section in sections:
            chars = len(section["text"]["text"])
            if parts[-1] and (len(parts[-1]) + 2 > POST_BLOCKS_MAX
                              or size + chars > fit.chars):
                parts.append([])
                size = len(line) + 40  # the continuation line, "part k of n" included
            parts[-1].append(section)
            size += chars
        for number, part in enumerate(parts, start=1):
            if number == 1:
                blocks = [head, *part]
                fallback = [short]
            else:
                note = f"{CONTINUED} continued, part {number} of {len(parts)} · {line}"
                blocks = [{"type": "context", "elements": [
                    {"type": "mrkdwn", "text": _cut_escaped(note, TEXT_OBJECT_MAX),
                     "verbatim": True}]}, *part]
                fallback = [f"(continued, part {number} of {len(parts)}) "
                            + _cut_escaped(escape(part[0]["text"]["text"]), 200)]
            count = 1
            if number < len(parts):
                flush()
    flush()
    return posts


def _rendered(item: PostItem, fit: Fit) -> tuple[str, list[dict[str, Any]], str]:
    """A text's context line, its body sections, and its line for the fallback text."""
    if isinstance(item.text, EchoText):
        echo = item.text
        short = (f"{_short(echo.slack_user_name, fit.name)} to "
                 f"{_short(echo.endpoint, fit.name)}: "
                 f"{_cut_escaped(escape(echo.body), _FALLBACK_MAX)}")
        return _echo_line(item, echo, fit), _plain_sections(echo.body, fit.section), short
    label = sender_label(item.text, item.endpoint)
    body = _shown_body(item.text)
    short = f"{_short(label, fit.name)}: " + (
        body if item.text.problem else _cut_escaped(escape(body), _FALLBACK_MAX))
    if item.text.problem:
        sections = [{"type": "section", "text": {
            "type": "mrkdwn", "text": _cut_escaped(body, fit.section)}}]
    else:
        sections = _plain_sections(body, fit.section)
    return _who(item, item.text, label, fit), sections, short


def _chars(blocks: list[dict[str, Any]]) -> int:
    total = 0
    for block in blocks:
        if block["type"] == "context":
            total += sum(len(e["text"]) for e in block["elements"])
        else:
            total += len(block["text"]["text"])
    return total


def _short(raw: str, limit: int) -> str:
    """`raw` escaped for mrkdwn in at most `limit` characters; cut with "…" when longer."""
    escaped = escape(raw)
    if len(escaped) <= limit:
        return escaped
    out: list[str] = []
    size = 0
    for char in raw:
        shown = escape(char)
        if size + len(shown) > limit - 1:
            break
        out.append(shown)
        size += len(shown)
    return "".join(out) + "…"


def _cut_escaped(text: str, limit: int) -> str:
    """Already-escaped `text` in at most `limit` characters, never ending inside an entity."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    amp = cut.rfind("&", max(0, len(cut) - 4))
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _plain_sections(body: str, size: int = TEXT_OBJECT_MAX) -> list[dict[str, Any]]:
    """The body as plain_text sections, which Slack shows literally (no mentions, links)."""
    return [{"type": "section", "text": {"type": "plain_text",
                                         "text": body[start:start + size],
                                         "emoji": False}}
            for start in range(0, max(len(body), 1), size)]


def _echo_line(item: PostItem, echo: EchoText, fit: Fit) -> str:
    line = (f":outbox_tray: *{_short(echo.slack_user_name, fit.name)}* to "
            f"*{_short(echo.endpoint, fit.name)}* with `/sip` · {_clock(item.received_at)}")
    return f"{line} · {item.note}" if item.note else line


def _clock(stamp_float: float) -> str:
    stamp = int(stamp_float)
    clock = time.strftime("%H:%M:%S UTC", time.gmtime(stamp))
    return f"<!date^{stamp}^{{time_secs}}|{clock}>"


def _who(item: PostItem, text: InboundText, label: str, fit: Fit) -> str:
    identified = item.endpoint is not None or bool(text.asterisk_endpoint)
    who = f":iphone: *{_short(label, fit.name)}*"
    if identified:
        # What the phone calls itself is its own claim: shown as such, after who it is.
        if text.display_name and text.display_name != label:
            who += f" (calls itself “{_short(text.display_name, fit.name)}”)"
        if text.sender_uri:
            who += f" · From: {_short(text.sender_uri, fit.name)}"
    elif text.display_name and text.sender_uri:
        who += f" · {_short(text.sender_uri, fit.name)}"
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
                f"{_short(text.problem, 1000)}. Check that Asterisk runs the dialplan "
                f"snippet that `bridge asterisk-config` prints (the current one).")
    if text.body:
        return text.body
    if text.dropped_by_asterisk:
        return (f"[This text was {text.declared_bytes:,} bytes long. Asterisk delivers texts "
                f"of at most {ASTERISK_MAX_INBOUND_BYTES - 1:,} bytes and passed on nothing, "
                f"so its content is lost. Ask the sender to split it.]")
    return "[empty text]"


def set_aside_notice(item: PostItem, *, row_id: int, error: str) -> str:
    """What the channel is told about a text Slack refuses however it is posted."""
    if isinstance(item.text, EchoText):
        who = f"the `/sip` text of *{_short(item.text.slack_user_name, 80)}* to " \
              f"*{_short(item.text.endpoint, 80)}*"
    else:
        who = f"a text from *{_short(sender_label(item.text, item.endpoint), 80)}*"
    return (f":warning: Slack refused {who} ({_clock(item.received_at)}) however the bridge "
            f"posted it ({_short(error, 100)}), so it is not shown here. It is kept in the "
            f"bridge's store (text {row_id}, state set_aside); the texts after it go on.")
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
