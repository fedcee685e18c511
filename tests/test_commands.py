"""What a user types after /sip becomes the right command with the text they saw."""

from __future__ import annotations

from bridge.slack.commands import Compose, Help, ListDirectory, Send, parse_command


def test_subcommands() -> None:
    assert parse_command("") == Compose()
    assert parse_command("  ") == Compose()
    assert parse_command("  help ") == Help()
    assert parse_command("LIST") == ListDirectory()


def test_send_keeps_lines_and_unescapes_slack_wire_format() -> None:
    # Surrounding whitespace is trimmed (Slack trims it too); inner newlines stay.
    parsed = parse_command("alice  Fish &amp; chips &lt;3\n\n  second line  ")
    assert parsed == Send("alice", "Fish & chips <3\n\n  second line")


def test_recipient_without_text_and_references() -> None:
    assert parse_command("alice") == Send("alice", "")
    assert parse_command("bob ask <@U123|carol> about <https://x.io|this>") == \
        Send("bob", "ask @carol about this (https://x.io)")
    assert parse_command("list alice") == Send("list", "alice")
