"""LOG_FORMAT=json: one JSON object per line (time, level, logger, message), the fields of
a text moving parsed out of its message, and secrets masked exactly as in plain text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.ops.log_json import JsonFormatter, text_fields
from bridge.ops.logs import RedactSecrets, setup_logging

SECRETS = ["xoxb-bot-token-1", "sign-secret-2", "xapp-app-token-3", "ami'sec\\ret 4"]


@pytest.fixture
def output() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets(SECRETS))
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_one_json_object_with_the_basics(
        output: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = output
    log.info("AMI: connected to %s", "127.0.0.1:5038")
    log.warning("two\nlines, \"quoted\" and ünïcode 🧦")
    [first, second] = lines(stream)
    assert first["level"] == "INFO" and first["logger"] == "test.json"
    assert first["message"] == "AMI: connected to 127.0.0.1:5038"
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert "direction" not in first  # not a text moving: no parsed fields
    assert second["message"] == "two\nlines, \"quoted\" and ünïcode 🧦"


def test_a_text_moving_carries_its_fields(output: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = output
    log.info("text in: endpoint=%s channel=%s result=%s texts_in_post=%d latency_ms=%.0f "
             "post_ms=%.0f", "alice", "C0ALICE", "posted", 2, 1234.4, 56)
    log.info("text out: id=%d slack_user=%s endpoint=%s destination=%s result=sent segments=%d "
             "chars=%d waited_s=%.1f send_ms=%.0f latency_ms=%.0f", 7, "U1", "bob",
             "pjsip:bob", 1, 5, 0.2, 12, 200)
    log.warning("text out: id=%d slack_user=%s endpoint=%s result=failed sent=%d/%d reason=%s",
                8, "U1", "ghost", 0, 1, "Asterisk refused MessageSend: Message failed to send.")
    inbound, sent, failed = lines(stream)
    assert {k: inbound[k] for k in ("direction", "endpoint", "channel", "result",
                                    "texts_in_post", "latency_ms")} == {
        "direction": "in", "endpoint": "alice", "channel": "C0ALICE", "result": "posted",
        "texts_in_post": 2, "latency_ms": 1234.0}
    assert sent["direction"] == "out" and sent["id"] == 7 and sent["latency_ms"] == 200.0
    assert sent["destination"] == "pjsip:bob" and sent["waited_s"] == 0.2
    assert failed["reason"] == "Asterisk refused MessageSend: Message failed to send."
    assert failed["sent"] == "0/1" and failed["level"] == "WARNING"


def test_parsed_fields_never_replace_the_basics() -> None:
    assert text_fields("text in: message=x level=y endpoint=alice") == {
        "direction": "in", "endpoint": "alice"}
    assert text_fields("AMI: endpoint=alice") == {}


def test_secrets_are_masked_in_json_too(output: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = output
    log.info("text out: endpoint=%s reason=%s", "alice", f"token {SECRETS[0]}")
    log.info("headers: %r", {"Authorization": f"Bearer {SECRETS[2]}", "secret": SECRETS[3]})
    try:
        raise RuntimeError(f"signing with {SECRETS[1]}")
    except RuntimeError:
        log.exception("failed")
    log.info("with a stack %s", SECRETS[0], stack_info=True)
    text = stream.getvalue()
    entries = lines(stream)
    assert entries[0]["reason"] == "token [redacted]"
    assert "Traceback" in entries[2]["exc"] and "[redacted]" in entries[2]["exc"]
    assert "stack" in entries[3]
    for secret in SECRETS:
        assert secret not in text
        assert json.dumps(secret)[1:-1] not in text  # not even JSON-escaped


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:], level = saved
    root.setLevel(level)


@pytest.mark.parametrize("setting,json_out", [("json", True), ("JSON", True), ("", False),
                                              ("text", False)])
def test_log_format_picks_the_formatter(monkeypatch: pytest.MonkeyPatch, root_logging: None,
                                        setting: str, json_out: bool) -> None:
    monkeypatch.setenv("LOG_FORMAT", setting)
    setup_logging(["a-secret-value"])
    [handler] = logging.getLogger().handlers
    assert isinstance(handler.formatter, JsonFormatter) is json_out
    assert any(isinstance(f, RedactSecrets) for f in handler.filters)
