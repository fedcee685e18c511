"""What a local server playing Slack's Web API does the way Slack does it.

Shared by the demo's stand-in (`slack_standin.py`) and the test suite's fake Slack
(tests/fake_slack.py), which differ in what they keep and check but must read a call and stamp
a message alike: a call's parameters (query string plus JSON or form body, structured
parameters given as JSON strings), a refusal (`{"ok": false, "error": ...}`), message
timestamps and the escaping Slack applies to what users type.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

Params = dict[str, Any]

# Body parameters Slack accepts as JSON-encoded strings in form bodies.
JSON_STRING_PARAMS = ("blocks", "attachments", "metadata")


class SlackRefusal(Exception):
    """A Web API call Slack answers with ``{"ok": false, "error": ...}`` (HTTP 200)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


async def read_params(request: web.Request) -> Params:
    """Query string plus JSON or form body, as Slack reads them; raises SlackRefusal."""
    params: Params = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise SlackRefusal("invalid_json") from None
            if not isinstance(body, dict):
                raise SlackRefusal("invalid_json")
            params.update(body)
        else:
            form = await request.post()
            params.update({k: v if isinstance(v, str) else str(v) for k, v in form.items()})
    # Form bodies (and some JSON callers) carry structured params as JSON strings.
    for key in JSON_STRING_PARAMS:
        if isinstance(params.get(key), str):
            try:
                params[key] = json.loads(params[key])
            except ValueError:
                raise SlackRefusal(f"invalid_{key}_format") from None
    return params


class MessageClock:
    """Message timestamps as Slack makes them: "seconds.microseconds", unique and increasing,
    and the time of posting (the bridge compares a ts with the time it received a text)."""

    def __init__(self) -> None:
        self._last = 0  # microseconds

    def next_ts(self) -> str:
        micros = max(time.time_ns() // 1000, self._last + 1)
        self._last = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def slack_escape(text: str) -> str:
    """Escape text the way Slack does in what it sends to apps (``&``, ``<``, ``>`` only)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
