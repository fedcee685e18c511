"""Slack escaping, property-based (hypothesis): whatever a phone or a Slack user writes, the
phone gets what the person saw, and nothing a phone sends can become a mention, a channel or
user reference or a link in what the bridge posts."""

from __future__ import annotations

import re
from typing import Any

from fake_slack import check_blocks, slack_escape
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_view import shown_echoes, shown_texts

from bridge.core.directory import Endpoint
from bridge.core.texts import EchoText, InboundText
from bridge.slack.messages import PostItem, inbound_post, inbound_posts
from bridge.slack.text import escape, slack_to_plain, unescape

# Pieces that mean something to Slack, mixed into arbitrary text.
SLACK_SYNTAX = ["<", ">", "&", "&amp;", "&lt;", "&gt;", "&amp;lt;", "<!channel>", "<!here>",
                "<!everyone>", "<@U0ADMIN1>", "<@U0ADMIN1|boss>", "<#C0GENERAL|general>",
                "<https://evil.example|https://bank.example>", "<mailto:a@b|x>",
                "<!subteam^S123|@team>", "<!date^1700000000^{date}|x>", "|", "^", "@channel",
                "*bold*", "_it_", "`code`", "```", "~", ":smile:", "\n", "\r\n", "\u202e",
                "\u200b", "\x00", "🐟"]
slack_texts = st.one_of(
    st.text(),
    st.lists(st.one_of(st.sampled_from(SLACK_SYNTAX), st.text(max_size=6)), max_size=40).map(
        "".join),
)

# The one reference the bridge itself writes into a sender line: the localised time.
_OWN_DATE = re.compile(r"<!date\^\d+\^\{time_secs\}\|\d\d:\d\d:\d\d UTC>")


@given(slack_texts)
def test_escape_leaves_no_angle_brackets_and_round_trips(text: str) -> None:
    escaped = escape(text)
    assert "<" not in escaped and ">" not in escaped
    assert unescape(escaped) == text


@given(slack_texts.map(lambda s: s.replace(":", "")))
def test_the_phone_gets_exactly_what_the_slack_user_typed(text: str) -> None:
    # Slack escapes &, <, > in what it sends; references it creates itself, and emoji it sends
    # as :shortcodes:, are tested in test_slack_text.py. Whatever else was typed must reach
    # the phone exactly as typed.
    assert slack_to_plain(slack_escape(text)) == text


def mrkdwn_texts(text: str, blocks: list[dict[str, Any]]) -> list[str]:
    """Every field Slack parses for mentions and links: the fallback and mrkdwn objects."""
    found = [text]
    for block in blocks:
        for element in block.get("elements", []):
            if element.get("type") == "mrkdwn":
                found.append(element["text"])
        if block.get("text", {}).get("type") == "mrkdwn":
            found.append(block["text"]["text"])
    return found


inbound_texts = st.builds(
    InboundText,
    event_id=st.text(max_size=10),
    sender_uri=slack_texts,
    display_name=slack_texts,
    body=slack_texts.filter(bool),  # empty bodies are shown as a bridge-made notice
    declared_bytes=st.one_of(st.none(), st.integers(0, 5000)),
    to_uri=slack_texts,
    exten=slack_texts,
    problem=st.one_of(st.just(""), slack_texts),
    asterisk_time=st.none(),
)
items = st.builds(
    PostItem,
    text=inbound_texts,
    endpoint=st.one_of(st.none(), st.just(Endpoint("alice", "pjsip:alice", "C0ALICE00"))),
    received_at=st.floats(0, 4e9),
)


@settings(max_examples=300)
@given(st.lists(items, min_size=1, max_size=4))
def test_no_phone_text_becomes_a_mention_reference_or_link(post_items: list[PostItem]) -> None:
    posts = inbound_posts(post_items)
    blocks = [b for post in posts for b in post.blocks]
    for post in posts:
        check_blocks(post.blocks)  # within every limit Slack enforces
        for field in mrkdwn_texts(post.text, post.blocks):
            stripped = _OWN_DATE.sub("", field)
            assert "<" not in stripped and ">" not in stripped, field
    # What the phone wrote is shown literally (plain_text), whole and in order.
    plain = ["".join(b["text"]["text"] for b in blocks
                     if b["type"] == "section" and b["text"]["type"] == "plain_text")]
    expected = "".join(item.text.body for item in post_items if not item.text.problem)
    assert plain == [expected]
    assert all(b["text"].get("emoji") is False for b in blocks
               if b["type"] == "section" and b["text"]["type"] == "plain_text")


@given(slack_texts.filter(lambda s: s.strip() != ""))
def test_a_single_short_text_reads_as_typed_in_the_notification(body: str) -> None:
    item = PostItem(text=InboundText(event_id="e", sender_uri="sip:alice@h", display_name="",
                                     body=body, declared_bytes=len(body), to_uri="", exten=""),
                    endpoint=None, received_at=1_700_000_000)
    text, _ = inbound_post([item])
    if len(text) < 3000:  # the fallback is cut at 3,000 characters
        assert unescape(text).endswith(body)


# What made Slack answer msg_blocks_too_long / invalid_blocks: names of thousands of "&"
# (five characters each once escaped), long URIs, /sip texts of 14,000 characters.
huge_names = st.one_of(st.just(""), st.text(max_size=30),
                       st.integers(0, 5000).map(lambda n: "&" * n),
                       st.integers(0, 5000).map(lambda n: "<>" * n))
huge_bodies = st.one_of(st.text(max_size=50), st.integers(0, 40000).map(lambda n: "é&x" * n))
phone_items = st.builds(
    PostItem,
    text=st.builds(InboundText, event_id=st.just("e"), sender_uri=huge_names,
                   display_name=huge_names, body=huge_bodies.map(lambda b: b[:1023]),
                   declared_bytes=st.none(), to_uri=st.just(""), exten=st.just("")),
    endpoint=st.none(), received_at=st.just(1_700_000_000.0))
echo_items = st.builds(
    PostItem,
    text=st.builds(EchoText, body=huge_bodies.filter(bool), slack_user=st.just("U1"),
                   slack_user_name=huge_names, endpoint=huge_names, outbound_id=st.just(1)),
    endpoint=st.none(), received_at=st.just(1_700_000_000.0))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(phone_items, echo_items), min_size=1, max_size=20))
def test_every_post_is_within_slack_limits_and_no_text_is_cut(
        post_items: list[PostItem]) -> None:
    posts = inbound_posts(post_items)
    for post in posts:
        check_blocks(post.blocks)  # the fake refuses exactly what Slack refuses
        assert len(post.text) <= 3000
    wire = [{"blocks": post.blocks} for post in posts]
    assert shown_texts(wire) == [i.text.body or "[empty text]" for i in post_items
                                 if isinstance(i.text, InboundText)]
    assert shown_echoes(wire) == [i.text.body for i in post_items
                                  if isinstance(i.text, EchoText)]
