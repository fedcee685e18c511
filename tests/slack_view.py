"""What a Slack reader sees in the bridge's posts (a post may carry several texts)."""

from __future__ import annotations

from typing import Any

from bridge.slack_text import unescape


def shown_texts(posts: list[dict[str, Any]]) -> list[str]:
    """Every phone text shown, in order: each is one or more plain_text sections after a
    context block naming its sender."""
    texts: list[str] = []
    for post in posts:
        current: list[str] | None = None
        for block in post.get("blocks", []):
            if block["type"] == "context":
                if current is not None:
                    texts.append("".join(current))
                current = []
            elif block["type"] == "section" and block["text"]["type"] == "plain_text":
                assert current is not None, "a text without its sender line"
                current.append(block["text"]["text"])
        if current is not None:
            texts.append("".join(current))
    return texts


def shown_senders(posts: list[dict[str, Any]]) -> list[str]:
    """The sender line of every text shown, unescaped."""
    return [unescape(block["elements"][0]["text"]) for post in posts
            for block in post.get("blocks", []) if block["type"] == "context"]
