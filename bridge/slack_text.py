"""Text conversions at the Slack edge, both ways. Pure functions.

From Slack: Slack HTML-escapes `&`, `<`, `>` and wraps references as `<@U123|name>`,
`<#C123|name>`, `<https://x|label>`, `<!here>`; a phone should get what the person saw.
To Slack: text from phones must be shown as typed and never become a mention, link or
control sequence, so `&`, `<`, `>` are escaped.
"""

from __future__ import annotations

import re

_REFERENCE = re.compile(r"<([^<>]*)>")


def escape(text: str) -> str:
    """Escape text for Slack so it shows literally and can never mention or link anyone."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    """Undo Slack's HTML escaping (only the three entities Slack uses)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def slack_to_plain(text: str) -> str:
    """What a person saw in Slack, as plain text a phone can show."""
    return unescape(_REFERENCE.sub(_plain_reference, text))


def _plain_reference(match: re.Match[str]) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    if target.startswith("@"):  # user: <@U123|name> or <@U123>
        return "@" + (label or target[1:])
    if target.startswith("#"):  # channel
        return "#" + (label or target[1:])
    if target.startswith("!"):  # <!here>, <!channel>, <!subteam^S123|@team>, <!date^...|label>
        if label:
            return label if label.startswith("@") or target.startswith("!date") else "@" + label
        return "@" + target[1:].split("^", 1)[0]
    if label and label != target and label != target.removeprefix("mailto:"):
        return f"{label} ({target})"
    return target.removeprefix("mailto:")
