"""Logging set-up: LOG_LEVEL, LOG_FORMAT (text, or json: bridge.ops.log_json), and a filter
that blanks every configured secret.

Secrets are kept out of log calls by construction (`Secret` never prints itself); the
filter is the second line of defence for text we don't control (library messages,
exception reprs).
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.parse

from bridge.ops.log_json import JsonFormatter

_MASK = "[redacted]"


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        # Also the forms a secret takes inside a repr() or a URL, so a library that logs a
        # dict or a request line does not slip past. Longest first, so a secret that contains
        # another is masked whole.
        forms = {form for s in secrets if len(s) >= 4
                 for form in (s, repr(s)[1:-1], urllib.parse.quote(s, safe=""))}
        self._secrets = sorted(forms, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        redacted = self._redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        return text


def setup_logging(secrets: list[str] | None = None) -> None:
    level_name = os.environ.get("LOG_LEVEL", "INFO").upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        level = logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets or []))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # panoramisk logs every AMI message at DEBUG and reconnect noise at INFO/ERROR; our
    # ami.py reports the states that matter.
    logging.getLogger("panoramisk").setLevel(max(level, logging.CRITICAL))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def add_secrets(secrets: list[str]) -> None:
    """Install redaction of `secrets` on every root handler (after config is loaded)."""
    for handler in logging.getLogger().handlers:
        handler.filters = [f for f in handler.filters if not isinstance(f, RedactSecrets)]
        handler.addFilter(RedactSecrets(secrets))
