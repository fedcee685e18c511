"""What a Slack reader sees in the bridge's posts (a post may carry several texts).

A phone's text is a context block starting ":iphone:" (who, when) followed by plain_text
sections; the echo of a /sip text is a context block starting ":outbox_tray:" and its text.
A text too long for one post goes on in the next post, whose context block starts
":arrow_right_hook:" and repeats the first line.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.slack.text import unescape

PHONE = ":iphone:"
ECHO = ":outbox_tray:"
CONTINUED = ":arrow_right_hook:"


def _texts(posts: list[dict[str, Any]], marker: str) -> list[str]:
    texts: list[str] = []
    for post in posts:
        current: list[str] | None = None
        for block in post.get("blocks", []):
            if block["type"] == "context":
                if current is not None:
                    texts.append("".join(current))
                line = block["elements"][0]["text"]
                if line.startswith(CONTINUED) and marker in line and texts:
                    # A text too long for one post goes on in the next: one text to a reader.
                    current = [texts.pop()]
                    continue
                current = [] if line.startswith(marker) else None
            elif (block["type"] == "section" and block["text"]["type"] == "plain_text"
                  and current is not None):
                current.append(block["text"]["text"])
        if current is not None:
            texts.append("".join(current))
    return texts


def shown_texts(posts: list[dict[str, Any]]) -> list[str]:
    """Every text from a phone shown, in order."""
    return _texts(posts, PHONE)


def shown_echoes(posts: list[dict[str, Any]]) -> list[str]:
    """Every /sip text shown in a conversation, in order."""
    return _texts(posts, ECHO)


def phone_posts(posts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The posts that carry texts from phones."""
    return [p for p in posts if shown_texts([p])]


def shown_senders(posts: list[dict[str, Any]]) -> list[str]:
    """The sender line of every phone text shown, unescaped."""
    return [unescape(block["elements"][0]["text"]) for post in posts
            for block in post.get("blocks", []) if block["type"] == "context"
            and block["elements"][0]["text"].startswith(PHONE)]


async def wait_phone_posts(slack: Any, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Wait until `n` posts carrying phone texts are in the fake Slack; return them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(phone_posts(slack.posts)) < n:
        if loop.time() > deadline:
            raise AssertionError(f"expected {n} posts of phone texts, got "
                                 f"{shown_texts(slack.posts)!r} in {len(slack.posts)} posts")
        await asyncio.sleep(0.05)
    return phone_posts(slack.posts)


async def wait_all_shown(slack: Any, wanted: set[str], timeout: float) -> list[str]:
    """Wait until every text of `wanted` is shown in the fake Slack, then half a second more
    (a double would show up by then); return every text shown. Fails naming the missing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while missing := wanted - set(shown_texts(slack.posts)):
        if loop.time() > deadline:
            raise AssertionError(f"{len(missing)} of {len(wanted)} texts not in Slack after "
                                 f"{timeout} s: {sorted(missing)[:10]} ...")
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    return shown_texts(slack.posts)
