"""Which Slack messages become texts to a phone. Pure: no I/O.

A human's reply in a phone's conversation thread is a text to that phone. In a channel whose
reply mode is `channel` (allowed only when one phone owns the channel) a top-level message is
too. Everything else is ignored: the bridge's own posts, other bots (unless allowed), edits,
deletions, joins and other subtypes, ordinary chatter. A reply in a thread of a channel whose
mode is `off` is refused with a reason for its author.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.core.directory import Directory

# Conversation keys of phones outside the directory (bridge.delivery.inbound.conversation_key): one
# Asterisk identified, and one known only by the From it claims.
IDENTIFIED_PREFIX = "pjsip:"
CLAIMED_PREFIX = "uri:"

# Message subtypes that carry a person's new text; every other subtype (message_changed,
# message_deleted, channel_join, ...) is not a new text, bot_message only from an allowed bot.
_TEXT_SUBTYPES = frozenset({"", "thread_broadcast", "file_share", "me_message"})


@dataclass(frozen=True)
class Ignore:
    reason: str  # for the debug log


@dataclass(frozen=True)
class Refuse:
    reason: str  # shown to the author, ephemerally


@dataclass(frozen=True)
class SendReply:
    recipient: str  # a directory name, or the Asterisk endpoint of a phone outside it
    thread_ts: str | None  # the conversation's thread; None for a top-level message
    # Set for a phone outside the directory: the PJSIP endpoint its text came from (the
    # reply goes back there, never to what its From claimed), `<endpoint>@<pbx>` when it
    # came through a PBX other than the default one.
    reply_endpoint: str | None = None


Decision = Ignore | Refuse | SendReply


@dataclass(frozen=True)
class ThreadInfo:
    """What the store knows about the thread a message was posted in."""

    conversation: str
    endpoint: str | None


def reply_mode(directory: Directory, channel: str, default: str,
               overrides: Mapping[str, str], *, thread_endpoint: str | None = None) -> str:
    """The reply mode that decides a message: per phone, its own `reply_mode`, else the
    `[slack]` default (as the README says).

    A reply in a phone's thread follows that phone's mode (`thread_endpoint`); a reply in the
    thread of a phone outside the directory follows the default. A top-level message follows
    the mode of the channel's phone when exactly one phone owns the channel (only then can
    `channel` mode apply), else the default.
    """
    if thread_endpoint is not None:
        return overrides.get(thread_endpoint, default)
    owners = [e for e in directory.endpoints if e.channel == channel]
    if len(owners) == 1:
        return overrides.get(owners[0].name, default)
    return default


def decide(event: Mapping[str, Any], *, directory: Directory, bot_user_id: str,
           allowed_bots: frozenset[str], mode: str, thread: ThreadInfo | None) -> Decision:
    """What to do with one `message` event. `thread` is the store's answer for its thread_ts."""
    subtype = str(event.get("subtype") or "")
    if subtype == "message_changed":
        return Ignore("an edit is not a new text")
    user = str(event.get("user") or "")
    bot_id = str(event.get("bot_id") or "")
    # An integration's post (incoming webhook, an app posting under its own name) arrives as
    # bot_message with a bot_id and no user: a text if that bot is allowed (checked below).
    if subtype not in _TEXT_SUBTYPES and not (subtype == "bot_message" and bot_id):
        return Ignore(f"subtype {subtype}")
    if user and user == bot_user_id:
        return Ignore("the bridge's own post")
    if bot_id and bot_id not in allowed_bots:
        return Ignore(f"a bot's post ({bot_id})")
    if not user and not bot_id:
        return Ignore("no author")
    channel = str(event.get("channel") or "")
    thread_ts = str(event.get("thread_ts") or "")
    is_reply = bool(thread_ts) and thread_ts != str(event.get("ts") or "")
    if is_reply:
        if thread is None:
            return Ignore("a thread that is not a phone conversation")
        if mode == "off":
            return Refuse("this channel is read-only for phone texts (reply mode `off`), so "
                          "your reply was not sent to the phone")
        if thread.conversation == "mixed:":  # relay.MIXED_CONVERSATION
            return Refuse("this post combines texts of several senders not in the directory, "
                          "so a reply here cannot go to one of them: reply in a sender's own "
                          "thread, or text them with the slash command")
        if thread.endpoint is None:
            if thread.conversation.startswith(IDENTIFIED_PREFIX):
                endpoint_id = thread.conversation.removeprefix(IDENTIFIED_PREFIX)
                return SendReply(recipient=endpoint_id, thread_ts=thread_ts,
                                 reply_endpoint=endpoint_id)
            # Its From is all anyone knows, and a phone writes that itself: texting the
            # phone it names could reach someone else entirely.
            return Refuse("the bridge cannot tell which phone sent this text (its endpoint "
                          "has no `slack-bridge-from-...` context of its own; the PBX admin "
                          "adds one with `bridge asterisk-config --endpoint NAME`), so it "
                          "cannot send a reply to it")
        return SendReply(recipient=thread.endpoint, thread_ts=thread_ts)
    if mode != "channel":
        return Ignore("a top-level message (reply mode is not `channel`)")
    owners = [e for e in directory.endpoints if e.channel == channel]
    if len(owners) != 1:
        return Ignore("reply mode `channel` needs exactly one phone in the channel")
    return SendReply(recipient=owners[0].name, thread_ts=None)
