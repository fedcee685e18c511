"""Text conversions at the Slack edge, both ways. Pure functions.

From Slack: Slack HTML-escapes `&`, `<`, `>` and wraps references as `<@U123|name>`,
`<#C123|name>`, `<https://x|label>`, `<!here>`; a phone should get what the person saw.
To Slack: text from phones must be shown as typed and never become a mention, link or
control sequence, so `&`, `<`, `>` are escaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import emoji

_REFERENCE = re.compile(r"<([^<>]*)>")


def escape(text: str) -> str:
    """Escape text for Slack so it shows literally and can never mention or link anyone."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    """Undo Slack's HTML escaping (only the three entities Slack uses)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def slack_to_plain(text: str, user_names: Mapping[str, str] | None = None) -> str:
    """What a person saw in Slack, as plain text a phone can show.

    `<@U123>` becomes `@display name` (from `user_names`, else the label or the ID),
    `<https://x|label>` becomes `label (https://x)`, `&amp;` becomes `&`, and emoji
    shortcodes such as `:thumbsup:` become the emoji where one is known.
    """
    names = user_names or {}
    converted = _REFERENCE.sub(lambda m: _plain_reference(m, names), text) if "<" in text \
        else text
    if ":" in converted:  # a shortcode needs two (emoji's lookup costs ~3% of a /sip text)
        converted = emoji.emojize(converted, language="alias")
    return unescape(converted)


def user_ids(text: str) -> list[str]:
    """The user IDs mentioned in Slack wire text (to look their names up)."""
    return [m.group(1) for m in re.finditer(r"<@([UW][A-Z0-9]+)(?:\|[^<>]*)?>", text)]


def _plain_reference(match: re.Match[str], names: Mapping[str, str]) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    if target.startswith("@"):  # user: <@U123|name> or <@U123>
        return "@" + (names.get(target[1:]) or label or target[1:])
    if target.startswith("#"):  # channel
        return "#" + (label or target[1:])
    if target.startswith("!"):  # <!here>, <!channel>, <!subteam^S123|@team>, <!date^...|label>
        if label:
            return label if label.startswith("@") or target.startswith("!date") else "@" + label
        return "@" + target[1:].split("^", 1)[0]
    if label and label != target and label != target.removeprefix("mailto:"):
        return f"{label} ({target})"
    return target.removeprefix("mailto:")
