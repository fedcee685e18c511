"""Log redaction: a configured secret never reaches the log output, wherever it hides in a
record (message, arguments, a repr, a URL, an exception's traceback and its cause)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from bridge.ops.logs import RedactSecrets

SECRETS = ["xoxb-bot-token-1", "sign-secret-2", "xapp-app-token-3", "ami'sec\\ret 4"]


@pytest.fixture
def output() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(SECRETS))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def test_secrets_are_masked_everywhere_in_a_record(
        output: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = output
    log.debug("token %s in args", SECRETS[0])
    log.info("headers: %r", {"Authorization": f"Bearer {SECRETS[2]}", "secret": SECRETS[3]})
    log.info("url https://x/?token=%s&s=%s", SECRETS[0], "ami%27sec%5Cret%204")
    log.warning(f"inline {SECRETS[1]}")
    try:
        try:
            raise ValueError(f"login failed with {SECRETS[3]}")
        except ValueError as inner:
            raise RuntimeError(f"signing with {SECRETS[1]}") from inner
    except RuntimeError:
        log.exception("failed")
    log.info("with a stack", stack_info=True)
    text = stream.getvalue()
    assert "[redacted]" in text and "Traceback" in text and "ValueError" in text
    for secret in SECRETS:
        assert secret not in text
        assert repr(secret)[1:-1] not in text
    assert "ami%27sec%5Cret%204" not in text


def test_short_or_empty_secrets_do_not_mask_everything(
        output: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = output
    handler = log.handlers[0]
    handler.filters = [RedactSecrets(["", "a"])]
    log.info("a normal line")
    assert stream.getvalue().strip().endswith("a normal line")
