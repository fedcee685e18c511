"""Which Slack messages become texts to a phone (bridge/core/thread_replies.py), without Slack.

`decide` is pure, so each case is one `message` event as Slack's Events API delivers it, a
directory built from an inline config, and the store's answer for the event's thread. What a
user would notice is the decision: the phone the text goes to (and the thread its answer stays
in), a refusal with the reason its author reads, or nothing at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.core.errors import ConfigError
from bridge.core.thread_replies import Ignore, Refuse, SendReply, ThreadInfo, decide, reply_mode
from bridge.settings.config import Settings, load_settings

ENV = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "AMI_SECRET": "a"}
BOT_USER_ID = "U0BRIDGE1"  # the bridge's own bot user (auth.test)
ALLOWED_BOT = "B0PAGER01"
HUMAN = "U0HUMAN01"

ALICE = "C0ALICE00"  # alice's own channel, reply_mode = "channel"
SHARED = "C0SHARED0"  # bob and carol
DAVE = "C0DAVE000"  # reply_mode = "off"
CONFIG = f"""
[ami]
username = "slackbridge"
[slack]
default_channel = "C0DEFAULT0"
allowed_bots = ["{ALLOWED_BOT}"]
[[endpoints]]
name = "alice"
destination = "pjsip:alice"
channel = "{ALICE}"
reply_mode = "channel"
[[endpoints]]
name = "bob"
destination = "pjsip:bob"
channel = "{SHARED}"
[[endpoints]]
name = "carol"
destination = "pjsip:carol"
channel = "{SHARED}"
[[endpoints]]
name = "dave"
destination = "pjsip:dave"
channel = "{DAVE}"
reply_mode = "off"
"""

PARENT_TS = "1700000000.000100"  # the phone's first text in Slack: the conversation thread
REPLY_TS = "1700000100.000200"


def settings(tmp_path: Path, extra_slack: str = "") -> Settings:
    path = tmp_path / "bridge.toml"
    path.write_text(CONFIG.replace("[slack]\n", "[slack]\n" + extra_slack))
    return load_settings(path, ENV)


@pytest.fixture
def config(tmp_path: Path) -> Settings:
    return settings(tmp_path)


def message(channel: str, *, thread_ts: str | None = PARENT_TS, **fields: Any) -> dict[str, Any]:
    """A `message` event as Slack sends it: by default a person's reply in a thread."""
    event: dict[str, Any] = {"type": "message", "channel": channel, "user": HUMAN,
                             "text": "on my way", "ts": REPLY_TS, "channel_type": "channel"}
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    event.update(fields)
    return {k: v for k, v in event.items() if v is not None}


def run(config: Settings, event: dict[str, Any],
        thread: ThreadInfo | None) -> Ignore | Refuse | SendReply:
    """What the bridge's frontend decides for `event` (same arguments it passes)."""
    channel = str(event.get("channel") or "")
    slack = config.slack
    return decide(event, directory=config.directory, bot_user_id=BOT_USER_ID,
                  allowed_bots=slack.allowed_bots,
                  mode=reply_mode(config.directory, channel, slack.reply_mode,
                                  slack.reply_modes),
                  thread=thread)


BOBS_THREAD = ThreadInfo(conversation="bob", endpoint="bob")


def test_a_persons_reply_in_a_phones_thread_texts_that_phone(config: Settings) -> None:
    decision = run(config, message(SHARED), BOBS_THREAD)
    # carol shares the channel, but the thread is bob's: the reply goes to bob, and its
    # answer (the phone's next text) stays in the same thread.
    assert decision == SendReply(recipient="bob", thread_ts=PARENT_TS)


@pytest.mark.parametrize("subtype", ["thread_broadcast", "file_share", "me_message"])
def test_replies_with_a_text_carrying_subtype_are_texts_too(config: Settings,
                                                             subtype: str) -> None:
    # "Also send to channel", a reply with a file, /me: all are a person's new text.
    assert run(config, message(SHARED, subtype=subtype), BOBS_THREAD) == \
        SendReply(recipient="bob", thread_ts=PARENT_TS)


def test_the_bridges_own_post_in_the_thread_is_not_texted_back(config: Settings) -> None:
    # The bridge posts each phone text into the thread; relaying that would echo it forever.
    own = message(SHARED, user=BOT_USER_ID, bot_id="B0BRIDGE1", app_id="A0BRIDGE1",
                  text="bob: on my way")
    assert isinstance(run(config, own, BOBS_THREAD), Ignore)


def test_other_bots_are_not_texted_but_an_allowed_bot_is(config: Settings) -> None:
    other = message(SHARED, user="U0OTHERBOT", bot_id="B0OTHER01", text="build passed")
    assert isinstance(run(config, other, BOBS_THREAD), Ignore)
    allowed = message(SHARED, user="U0PAGERBOT", bot_id=ALLOWED_BOT, text="pager: call ops")
    assert run(config, allowed, BOBS_THREAD) == SendReply(recipient="bob", thread_ts=PARENT_TS)


def test_an_allowed_bot_posting_as_an_integration_is_texted(config: Settings) -> None:
    # Incoming webhooks and apps posting with a custom name arrive as subtype bot_message,
    # with bot_id and no user; README: allowed_bots "lists bot IDs whose messages may text
    # phones", so the subtype must not hide them.
    webhook = message(SHARED, subtype="bot_message", user=None, bot_id=ALLOWED_BOT,
                      username="Pager", text="pager: call ops")
    assert run(config, webhook, BOBS_THREAD) == SendReply(recipient="bob", thread_ts=PARENT_TS)
    stranger_bot = message(SHARED, subtype="bot_message", user=None, bot_id="B0OTHER01",
                           username="CI", text="build passed")
    assert isinstance(run(config, stranger_bot, BOBS_THREAD), Ignore)


@pytest.mark.parametrize("event", [
    # An edit: Slack sends the new version nested in `message`, the event itself has no user.
    message(SHARED, subtype="message_changed", user=None, hidden=True,
            message={"type": "message", "user": HUMAN, "text": "on my way (edited)",
                     "ts": REPLY_TS, "thread_ts": PARENT_TS}),
    # An edit is never a new text, even with an author at the top level.
    message(SHARED, subtype="message_changed", text="on my way (edited)"),
    message(SHARED, subtype="message_deleted", user=None, hidden=True,
            deleted_ts=REPLY_TS, previous_message={"user": HUMAN, "text": "on my way"}),
    message(SHARED, subtype="channel_join", text=f"<@{HUMAN}> has joined the channel"),
    message(SHARED, subtype="channel_topic", text="set the channel topic: phones"),
    message(SHARED, subtype="message_replied", user=None),
    # A bot's post from the old integrations, with no user and no allowed bot_id.
    message(SHARED, subtype="bot_message", user=None, username="legacy", text="hello"),
], ids=["edit", "edit-with-user", "delete", "join", "topic", "replied", "legacy-bot"])
def test_edits_deletions_joins_and_other_subtypes_are_not_texts(
        config: Settings, event: dict[str, Any]) -> None:
    assert isinstance(run(config, event, BOBS_THREAD), Ignore)


def test_a_message_without_an_author_is_not_a_text(config: Settings) -> None:
    assert isinstance(run(config, message(SHARED, user=None), BOBS_THREAD), Ignore)


def test_a_reply_in_a_thread_that_is_not_a_phone_conversation_is_ignored(
        config: Settings) -> None:
    # People talk in threads of their own in a phone's channel; those stay in Slack.
    assert isinstance(run(config, message(SHARED), None), Ignore)
    # Even in a `channel`-mode channel, a reply in someone else's thread is not a text.
    assert isinstance(run(config, message(ALICE), None), Ignore)


def test_reply_mode_off_refuses_with_a_reason_for_the_author(config: Settings) -> None:
    decision = run(config, message(DAVE), ThreadInfo(conversation="dave", endpoint="dave"))
    assert isinstance(decision, Refuse)
    assert "read-only" in decision.reason and "`off`" in decision.reason
    assert "not sent to the phone" in decision.reason
    # Top-level chatter in a read-only channel is simply not a text (nobody is told off).
    assert isinstance(run(config, message(DAVE, thread_ts=None), None), Ignore)


def test_reply_mode_comes_from_the_phone_that_owns_the_channel(tmp_path: Path) -> None:
    config = settings(tmp_path)
    modes = config.slack.reply_modes
    assert reply_mode(config.directory, ALICE, "thread", modes) == "channel"
    assert reply_mode(config.directory, DAVE, "thread", modes) == "off"
    assert reply_mode(config.directory, SHARED, "thread", modes) == "thread"
    assert reply_mode(config.directory, "C0UNMAPPED", "off", modes) == "off"


def test_channel_mode_texts_top_level_messages_of_a_channel_with_one_phone(
        config: Settings) -> None:
    top_level = message(ALICE, thread_ts=None, text="call me")
    assert run(config, top_level, None) == SendReply(recipient="alice", thread_ts=None)
    # A thread's parent repeated as its own thread_ts is still a top-level message.
    parent = message(ALICE, thread_ts=REPLY_TS, text="call me")
    assert run(config, parent, None) == SendReply(recipient="alice", thread_ts=None)
    # In thread mode the same top-level message is ordinary chatter.
    assert isinstance(run(config, message(SHARED, thread_ts=None), None), Ignore)


def test_channel_mode_for_two_phones_sharing_a_channel_is_refused_by_the_config(
        tmp_path: Path) -> None:
    # bob and carol share a channel: a top-level message could be for either, so the
    # config that asks for it cannot be honoured and says how to fix it.
    with pytest.raises(ConfigError) as refused:
        settings(tmp_path, 'reply_mode = "channel"\n')
    assert 'slack.reply_mode: "channel" needs a channel of its own' in str(refused.value)


def test_a_reply_to_a_phone_outside_the_directory_goes_back_to_its_endpoint(
        config: Settings) -> None:
    # Asterisk identified the phone (its own slack-bridge-from-<endpoint> context), but the
    # directory does not list it: the reply goes to the endpoint the text came from.
    identified = ThreadInfo(conversation="pjsip:frontdesk-7", endpoint=None)
    assert run(config, message(SHARED), identified) == \
        SendReply(recipient="frontdesk-7", thread_ts=PARENT_TS, reply_endpoint="frontdesk-7")


@pytest.mark.parametrize("conversation", [
    "uri:+15551234567@203.0.113.7", "uri:guest@pbx.example.com", "uri:frank@10.0.0.9:5060",
])
def test_a_reply_to_an_unidentified_phone_is_refused_with_the_reason(
        config: Settings, conversation: str) -> None:
    # Only its From is known, which the phone writes itself: texting whoever it names could
    # reach someone else, so the author is told why nothing was sent.
    stranger = ThreadInfo(conversation=conversation, endpoint=None)
    decision = run(config, message(SHARED), stranger)
    assert isinstance(decision, Refuse)
    assert "cannot tell which phone sent this text" in decision.reason
