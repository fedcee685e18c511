"""`LOG_FORMAT=json`: one JSON object per log line, for log shippers.

Every line has `time` (UTC, ISO 8601), `level`, `logger` and `message`; an exception adds
`exc`. A line about a text moving (`text in: ...` from a phone to Slack, `text out: ...`
from Slack to a phone) also carries `direction` ("in"/"out") and its `key=value` pairs as
fields: `endpoint`, `channel`, `result`, `latency_ms`, `reason`, ... (durations and counts
as numbers). The fields are parsed from the message after `RedactSecrets` has cleaned it,
so the JSON holds nothing the plain-text line would not.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from typing import Any

_DIRECTIONS = {"text in:": "in", "text out:": "out"}
# A `key=value` pair: the value runs until the next ` key=` or the end of the message, so a
# trailing `reason=Asterisk refused it: ...` stays whole.
_PAIR = re.compile(r"(?:^|\s)([a-z][a-z0-9_]*)=(.*?)(?=\s+[a-z][a-z0-9_]*=|\s*$)",
                   re.DOTALL)
_COUNTS = frozenset({"id", "segments", "chars", "texts", "texts_in_post"})
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_BASE = ("time", "level", "logger", "message", "exc", "stack")


def text_fields(message: str) -> dict[str, Any]:
    """The structured fields of a text-moved log message; {} for any other message."""
    for prefix, direction in _DIRECTIONS.items():
        if message.startswith(prefix):
            break
    else:
        return {}
    fields: dict[str, Any] = {"direction": direction}
    for key, raw in _PAIR.findall(message[len(prefix):]):
        if key in _BASE or key in fields:
            continue
        value: Any = raw
        if _NUMBER.fullmatch(raw) and (key in _COUNTS or key.endswith(("_ms", "_s"))):
            value = float(raw) if (key.endswith(("_ms", "_s")) or "." in raw) else int(raw)
        fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        entry.update(text_fields(message))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)
