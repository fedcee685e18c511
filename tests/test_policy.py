"""Who may text whom and which numbers: pure rules, from an inline config."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.core.errors import ConfigError
from bridge.core.policy import RateLimiter, Rule, normalize_number, resolve
from bridge.settings.config import load_settings

ENV = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "AMI_SECRET": "a"}
BASE = """
[ami]
username = "slackbridge"
[slack]
default_channel = "C0DEFAULT0"
[[endpoints]]
name = "alice"
destination = "pjsip:alice"
channel = "C0ALICE00"
[[endpoints]]
name = "bob"
destination = "pjsip:bob"
channel = "C0BOB0000"
allow_users = ["U0BOBFAN"]
allow_usergroups = ["S0TEAM01"]
"""


def settings(tmp_path: Path, extra: str = ""):  # type: ignore[no-untyped-def]
    path = tmp_path / "bridge.toml"
    path.write_text(BASE + extra)
    return load_settings(path, ENV)


@pytest.mark.parametrize(("typed", "country", "e164"), [
    ("+1 (555) 123-4567", "", "+15551234567"),
    ("+1.555.123.4567", "", "+15551234567"),
    ("0044 20 7946 0000", "", "+442079460000"),
    ("555-123-4567", "1", "+15551234567"),
    ("020 7946 0000", "44", "+442079460000"),
    ("555-123-4567", "", None),  # national without a default country: unknown
    ("alice", "1", None),
    ("+12", "", None),  # too short
    ("+1555123456789012", "", None),  # too long
    ("+1555１２３４５６７", "", "+15551234567"),  # full-width digits: the same number
    ("+١٥٥٥١٢٣٤٥٦٧", "", "+15551234567"),  # Arabic-Indic digits
    ("+1555\u00b2234567", "", None),  # a superscript two is no digit of a number
])
def test_numbers_are_normalised_to_e164(typed: str, country: str, e164: str | None) -> None:
    assert normalize_number(typed, country) == e164


def test_numbers_outside_the_directory_need_a_pattern(tmp_path: Path) -> None:
    plain = settings(tmp_path)
    assert resolve("+15551234567", plain.directory, plain.access) is None
    patterned = settings(tmp_path, """
[access]
default_country_code = "1"
[[numbers]]
name = "us"
match = '^\\+1555\\d{7}$'
destination = "pjsip:PJSIP/{number}@trunk"
channel = "C0NUMBERS"
""")
    found = resolve("555-123-4567", patterned.directory, patterned.access)
    assert found is not None
    endpoint, rule = found
    assert endpoint.name == "+15551234567"
    assert endpoint.destination == "pjsip:PJSIP/+15551234567@trunk"
    assert endpoint.channel == "C0NUMBERS" and rule.everyone
    assert resolve("+442079460000", patterned.directory, patterned.access) is None
    # Full-width digits are the same number (one rate-limit key), not a way past a pattern.
    wide = resolve("+1555１２３４５６７", patterned.directory, patterned.access)
    assert wide is not None and wide[0].name == "+15551234567"
    assert patterned.access.numbers[0].match.fullmatch("+1555１２３４５６７") is None


def test_rules_default_and_per_phone(tmp_path: Path) -> None:
    config = settings(tmp_path, """
[access]
default = "listed"
users = ["U0ALLOWED"]
channels = ["C0OPS0000"]
""")
    alice = resolve("alice", config.directory, config.access)
    bob = resolve("bob", config.directory, config.access)
    assert alice and bob
    none: frozenset[str] = frozenset()
    assert alice[1].allows(user="U0ALLOWED", channel="C0X", groups=none)
    assert alice[1].allows(user="U0ANYONE", channel="C0OPS0000", groups=none)
    assert not alice[1].allows(user="U0ANYONE", channel="C0X", groups=none)
    assert bob[1].allows(user="U0BOBFAN", channel="C0X", groups=none)
    assert bob[1].allows(user="U0ANYONE", channel="C0X", groups=frozenset({"S0TEAM01"}))
    assert not bob[1].allows(user="U0ALLOWED", channel="C0X", groups=none)
    assert config.access.usergroups == {"S0TEAM01"}
    assert Rule().allows(user="U1", channel="C1", groups=none) is False
    # A member of another organisation (Slack Connect) is not "everyone", nor let in by a
    # channel or group rule: only listed by ID.
    everyone = Rule(everyone=True, channels=frozenset({"C1"}), users=frozenset({"U0GUEST"}))
    assert not everyone.allows(user="U0OTHER", channel="C1", groups=none, external=True)
    assert everyone.allows(user="U0GUEST", channel="C9", groups=none, external=True)


def test_rate_limiter_counts_a_sliding_window() -> None:
    from bridge.core.policy import RateLimit
    limiter = RateLimiter(RateLimit(count=2, per_seconds=60))
    assert limiter.check("U1", now=0) == 0 and limiter.check("U1", now=1) == 0
    assert limiter.check("U1", now=2) == pytest.approx(58)
    assert limiter.check("U2", now=2) == 0
    assert limiter.check("U1", now=61) == 0


def test_rate_limiter_counts_a_texts_parts() -> None:
    from bridge.core.policy import RateLimit
    limiter = RateLimiter(RateLimit(count=5, per_seconds=60))
    assert limiter.check("alice", now=0, cost=3) == 0
    assert limiter.check("alice", now=10, cost=3) == pytest.approx(50)  # 6 > 5
    assert limiter.check("alice", now=10, cost=2) == 0  # exactly 5
    assert limiter.check("alice", now=20, cost=1) == pytest.approx(40)
    # A text larger than the whole limit goes once the window is empty, not never.
    assert limiter.check("bob", now=0, cost=50) == 0
    assert limiter.check("bob", now=30, cost=1) == pytest.approx(30)


def test_access_mistakes_are_reported_with_fixes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, """
[access]
default = "some"
users = ["alice.smith"]
user_rate = "lots"
default_country_code = "+1"
[[numbers]]
match = "(unclosed"
destination = "pjsip:PJSIP/trunk"
channel = "#numbers"
""")
    text = str(info.value)
    for fragment in ["access.default: 'some' is not a choice",
                     "access.users[0]: 'alice.smith' is not a Slack ID",
                     "access.user_rate: 'lots' is not a rate",
                     "access.default_country_code: '+1' is not a country calling code",
                     "numbers[0].match: is not a valid regular expression",
                     "numbers[0].destination: 'pjsip:PJSIP/trunk' is not a destination template",
                     "numbers[0].channel: '#numbers' is not a Slack channel ID"]:
        assert fragment in text, text
