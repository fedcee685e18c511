"""[store] url / BRIDGE_STORE_URL: which store the bridge opens, every mistake named with its
key and a fix, and the database password never shown (problems, reprs, logs)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from test_config import ENV, GOOD, problems, write

from bridge.ops.logs import RedactSecrets
from bridge.settings.config import load_settings
from bridge.store import store_location

URL = "postgresql://bridge:s3cr%40t-pw@db.example.com:5433/bridge"


def test_no_url_keeps_the_sqlite_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD + '\n[store]\npath = "x.sqlite3"\n'), ENV)
    assert settings.store_url is None
    assert store_location(settings) == "x.sqlite3"


def test_url_in_the_file_selects_postgresql_and_its_password_is_a_secret(
        tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD + f'\n[store]\nurl = "{URL}"\n'), ENV)
    assert settings.store_url is not None and settings.store_url.reveal() == URL
    # The decoded password is redacted from logs; where the store is, is logged without it.
    assert "s3cr@t-pw" in settings.secrets()
    assert store_location(settings) == "postgresql://bridge@db.example.com:5433/bridge"
    assert "s3cr" not in repr(settings)


def test_the_environment_wins_over_the_file_and_pgpassword_is_redacted(tmp_path: Path) -> None:
    env = {**ENV, "BRIDGE_STORE_URL": "postgres://ops@10.1.2.3/prod",
           "PGPASSWORD": "pg-env-password"}
    settings = load_settings(write(tmp_path, GOOD + f'\n[store]\nurl = "{URL}"\n'), env)
    assert settings.store_url is not None
    assert settings.store_url.reveal() == "postgres://ops@10.1.2.3/prod"
    assert "pg-env-password" in settings.secrets()
    assert store_location(settings) == "postgresql://ops@10.1.2.3:5432/prod"


@pytest.mark.parametrize(("url", "complaint"), [
    ("mysql://root:hunter22@db/bridge", "is not a PostgreSQL URL"),
    ("postgresql://bridge:hunter22@db:notaport/bridge", "is not a URL that can be read"),
    ("postgresql://bridge:hunter22@db:5432", "names no database"),
])
def test_a_wrong_url_is_named_with_a_fix_and_never_echoed(tmp_path: Path, url: str,
                                                           complaint: str) -> None:
    text = problems(tmp_path, GOOD + f'\n[store]\nurl = "{url}"\n')
    assert "store.url" in text and complaint in text and "fix:" in text
    assert "hunter22" not in text
    env_text = problems(tmp_path, GOOD, {**ENV, "BRIDGE_STORE_URL": url})
    assert "environment: BRIDGE_STORE_URL" in env_text and complaint in env_text
    assert "hunter22" not in env_text


def test_url_and_path_together_are_refused(tmp_path: Path) -> None:
    text = problems(tmp_path, GOOD + f'\n[store]\nurl = "{URL}"\npath = "x.sqlite3"\n')
    assert "store.path: has no effect: [store] url is set" in text


def test_a_url_that_is_not_a_string_is_refused(tmp_path: Path) -> None:
    text = problems(tmp_path, GOOD + "\n[store]\nurl = 5432\n")
    assert "store.url: must be a string" in text


def test_a_mistake_in_store_is_reported_once(tmp_path: Path) -> None:
    text = problems(tmp_path, GOOD + '\n[store]\nulr = "postgresql://db/bridge"\n')
    assert text.count("store.ulr: unknown key") == 1 and "did you mean 'url'?" in text
    text = problems(tmp_path, 'store = "postgresql://db/bridge"\n' + GOOD)
    assert text.count("store: must be a table") == 1


def test_the_database_password_never_reaches_the_log(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD + f'\n[store]\nurl = "{URL}"\n'), ENV)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets(settings.secrets()))
    logger = logging.getLogger("test.store-url")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("connecting to %s", URL)
        logger.warning("password=%s", "s3cr@t-pw")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert "s3cr" not in stream.getvalue()
    assert stream.getvalue().count("[redacted]") == 2


def test_a_readable_file_holding_the_database_password_is_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.settings.config")
    path = write(tmp_path, GOOD + f'\n[store]\nurl = "{URL}"\n')
    path.chmod(0o600)
    load_settings(path, ENV)
    assert caplog.records == []
    path.chmod(0o644)
    load_settings(path, ENV)
    [record] = caplog.records
    message = record.getMessage()
    assert "a database password ([store] url)" in message and "mode 644" in message
    assert "PGPASSWORD" in message and "s3cr" not in message
    caplog.clear()
    # Without a password in the URL there is nothing to hide.
    path.write_text(GOOD + '\n[store]\nurl = "postgresql://bridge@db/bridge"\n')
    load_settings(path, ENV)
    assert caplog.records == []
