"""Config loading: good files load; every mistake is named with its key and a fix, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.core.errors import ConfigError
from bridge.core.texts import derive_event_token
from bridge.settings.config import load_settings

ENV = {"SLACK_BOT_TOKEN": "xoxb-1-secret", "SLACK_SIGNING_SECRET": "sign-secret",
       "AMI_SECRET": "ami-secret"}

GOOD = """
[ami]
host = "127.0.0.1"
port = 5038
username = "slackbridge"

[slack]
command = "/sip"
default_channel = "C0123456789"

[[endpoints]]
name = "alice"
destination = "pjsip:alice"
channel = "C0123456780"
aliases = ["front-desk"]

[[endpoints]]
name = "bob"
destination = "pjsip:bob"
channel = "C0123456781"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), ENV if env is None else env)
    return str(info.value)


def test_good_config_loads_with_directory_and_secrets_from_env(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), ENV)
    assert settings.ami.username == "slackbridge"
    assert settings.ami.secret.reveal() == "ami-secret"
    assert settings.slack.command == "/sip"
    assert not settings.slack.socket_mode
    assert settings.slack.port == 3000
    alice = settings.directory.lookup("Front-Desk")
    assert alice is not None and alice.destination == "pjsip:alice"
    assert sorted(settings.secrets()) == sorted(["ami-secret", "sign-secret", "xoxb-1-secret",
                                                 derive_event_token("ami-secret")])
    assert settings.ami.event_token.reveal() == derive_event_token("ami-secret")


def test_event_token_from_the_environment_and_from_refused(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), {**ENV, "AMI_EVENT_TOKEN": "t" * 32})
    assert settings.ami.event_token.reveal() == "t" * 32
    assert "t" * 32 not in repr(settings)
    shown = problems(tmp_path, GOOD, {**ENV, "AMI_EVENT_TOKEN": "short,bad"})
    assert "AMI_EVENT_TOKEN" in shown and "short,bad" not in shown
    # From is what a phone writes itself: it can no longer pick the endpoint.
    shown = problems(tmp_path, GOOD + 'from = ["sip:bob@10.0.0.5"]\n')
    assert "endpoints[1].from" in shown and "identified" in shown


def test_secrets_never_show_in_repr(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), ENV)
    shown = repr(settings) + str(settings.ami) + repr(settings.slack)
    for secret in settings.secrets():
        assert secret not in shown


def test_socket_mode_needs_no_signing_secret(tmp_path: Path) -> None:
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1", "AMI_SECRET": "x"}
    settings = load_settings(write(tmp_path, GOOD), env)
    assert settings.slack.socket_mode


def test_every_problem_is_reported_at_once_with_key_and_fix(tmp_path: Path) -> None:
    bad = """
[ami]
username = "slackbridge"
prot = 5038

[slack]
command = "sip"
default_channel = "#general"

[[endpoints]]
name = "alice"
destination = "alice"
channel = "C0123456780"

[[endpoints]]
name = "Alice"
destination = "pjsip:alice2\\r\\nAction: Originate"
channel = "C0123456781"
aliases = ["help"]
"""
    text = problems(tmp_path, bad, {})
    expected = [
        "ami.prot: unknown key", "did you mean 'port'?",
        "slack.command: 'sip' is not a slash command name",
        "slack.default_channel: '#general' is not a Slack channel ID",
        "endpoints[0].destination: 'alice' is not a MessageSend destination",
        "endpoints[1].name: 'Alice' is already used by endpoints[0].name",
        "endpoints[1].destination: contains a control character",
        "endpoints[1].aliases[0]: 'help' is a /sip subcommand",
        "environment: AMI_SECRET: no AMI secret is set",
        "environment: SLACK_BOT_TOKEN: is not set",
        "environment: SLACK_SIGNING_SECRET: is not set",
    ]
    for fragment in expected:
        assert fragment in text, f"missing {fragment!r} in:\n{text}"
    assert "10 problems" in text
    assert str(tmp_path / "bridge.toml") in text
    assert text.count("fix:") == 10


def test_missing_file_and_bad_toml_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", ENV)
    assert "is not valid TOML" in problems(tmp_path, "[ami\nhost=1")


def test_missing_sections_and_wrong_types(tmp_path: Path) -> None:
    text = problems(tmp_path, '[ami]\nusername = 5\nport = "x"\n')
    assert "ami.username: must be a string" in text
    assert "ami.port: must be a whole number" in text
    assert "[slack]: section is missing" in text
    assert "endpoints: no endpoints are configured" in text


def test_token_kinds_are_checked(tmp_path: Path) -> None:
    env = dict(ENV, SLACK_BOT_TOKEN="xoxp-user", SLACK_APP_TOKEN="xoxb-wrong", PORT="http")
    text = problems(tmp_path, GOOD, env)
    assert "SLACK_BOT_TOKEN: does not start with xoxb-" in text
    assert "SLACK_APP_TOKEN: does not start with xapp-" in text
    assert "PORT: 'http' is not a TCP port" in text


def test_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "config" / "bridge.example.toml"
    settings = load_settings(example, ENV)
    assert [e.name for e in settings.directory.endpoints] == ["alice", "warehouse"]


def test_mode_flag_forces_the_transport(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    both = dict(ENV, SLACK_APP_TOKEN="xapp-1")
    assert load_settings(path, both).slack.socket_mode
    assert not load_settings(path, both, mode="http").slack.socket_mode
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN: is not set, but Socket Mode"):
        load_settings(path, ENV, mode="socket")


def test_reply_modes_that_cannot_be_honoured_are_refused(tmp_path: Path) -> None:
    shared = GOOD.replace('channel = "C0123456781"', 'channel = "C0123456780"')
    # "channel" as the default, inherited by two phones sharing a channel: which phone would
    # a top-level message text? Refused, at the key that says it.
    shown = problems(tmp_path, shared.replace('command = "/sip"',
                                              'command = "/sip"\nreply_mode = "channel"'))
    assert "slack.reply_mode" in shown and "channel of its own" in shown
    # thread and off are per phone, so phones sharing a channel may differ.
    mixed = shared.replace('aliases = ["front-desk"]',
                           'aliases = ["front-desk"]\nreply_mode = "off"')
    settings = load_settings(write(tmp_path, mixed), ENV)
    assert settings.slack.reply_modes == {"alice": "off"}
