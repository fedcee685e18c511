"""Parsing what a Slack user typed after the slash command. Pure.

    /sip                    -> Compose (the compose window; help where it cannot open)
    /sip help               -> Help
    /sip list               -> ListDirectory
    /sip status             -> Status (AMI state, queue depths)
    /sip alice Hello there  -> Send(recipient="alice", text="Hello there")

The text is Slack's wire form (HTML-escaped, references as <@U1|name>); it is converted to
what the person saw before it goes anywhere near a phone.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.slack.text import slack_to_plain


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Compose:
    pass


@dataclass(frozen=True)
class ListDirectory:
    pass


@dataclass(frozen=True)
class Status:
    pass


@dataclass(frozen=True)
class Send:
    recipient: str
    text: str  # plain text as the user saw it; may be empty (the sender is told)


Command = Compose | Help | ListDirectory | Status | Send


def parse_command(text: str) -> Command:
    """Turn the slash command's `text` field into a Command."""
    stripped = text.strip()
    if not stripped:
        return Compose()
    parts = stripped.split(None, 1)
    word = parts[0]
    rest = parts[1] if len(parts) > 1 else ""
    if word.casefold() in ("help", "-h", "--help", "?") and not rest:
        return Help()
    if word.casefold() == "list" and not rest:
        return ListDirectory()
    if word.casefold() == "status" and not rest:
        return Status()
    # The recipient may arrive as a Slack reference if the user picked it from autocomplete.
    return Send(recipient=slack_to_plain(word).lstrip("@"), text=slack_to_plain(rest))
