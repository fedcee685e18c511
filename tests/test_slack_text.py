"""Escaping for Slack and unescaping from Slack are exact inverses on any text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.slack.text import escape, slack_to_plain, unescape


@given(st.text())
def test_escape_roundtrips_and_leaves_no_control_sequences(text: str) -> None:
    escaped = escape(text)
    assert unescape(escaped) == text
    assert "<" not in escaped and ">" not in escaped


def test_mentions_from_phones_cannot_ping() -> None:
    assert escape("<!channel> hi <@U123>") == "&lt;!channel&gt; hi &lt;@U123&gt;"


def test_references_become_what_people_saw() -> None:
    assert slack_to_plain("<!here> <#C1|ops> <mailto:a@b.c|a@b.c> <https://x.y>") == \
        "@here #ops a@b.c https://x.y"
