"""Who may text whom, how often, and which numbers outside the directory may be texted. Pure.

The config gives a default rule and optional per-phone rules, each a list of Slack users,
user groups and channels (a rule with none of them is "everyone" or "nobody" as the default
says). Numbers typed after `/sip` that are not in the directory are refused unless a
`[[numbers]]` pattern matches them after normalising to E.164 (`+` and digits); the pattern's
destination template then builds the MessageSend destination.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.core.directory import DEFAULT_PBX, Directory, Endpoint


@dataclass(frozen=True)
class Rule:
    """Who may send: anyone listed (user, member of a user group, or typing in a channel)."""

    everyone: bool = False
    users: frozenset[str] = frozenset()
    usergroups: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()

    def allows(self, *, user: str, channel: str, groups: frozenset[str],
               external: bool = False) -> bool:
        """`external`: the user belongs to another organisation (Slack Connect). "Everyone"
        and channel rules mean this workspace's members; such a user must be listed by ID."""
        if external:
            return user in self.users
        return (self.everyone or user in self.users or channel in self.channels
                or bool(self.usergroups & groups))


@dataclass(frozen=True)
class NumberPattern:
    """Numbers outside the directory that may be texted, and how to reach them."""

    name: str
    match: re.Pattern[str]  # matched against the E.164 form, e.g. +15551234567
    destination: str  # template with {number} (E.164) and {digits} (without +)
    channel: str  # where conversations with these numbers live
    rule: Rule | None  # None: the default rule
    pbx: str = DEFAULT_PBX  # the PBX (trunk) these numbers are texted through


@dataclass(frozen=True)
class RateLimit:
    count: int
    per_seconds: float

    def __str__(self) -> str:
        unit = {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}.get(
            self.per_seconds, f"{self.per_seconds:g} s")
        return f"{self.count} text{'s' if self.count != 1 else ''} per {unit}"


@dataclass(frozen=True)
class AccessPolicy:
    default: Rule = Rule(everyone=True)
    endpoints: Mapping[str, Rule] = field(default_factory=dict)
    numbers: tuple[NumberPattern, ...] = ()
    default_country_code: str = ""
    user_rate: RateLimit | None = None
    endpoint_rate: RateLimit | None = None
    store_text: bool = False  # audit trail keeps the texts themselves
    audit_keep_days: float = 90.0  # audit entries older than this are pruned

    @property
    def usergroups(self) -> frozenset[str]:
        """Every user group any rule mentions (their members are looked up in Slack)."""
        rules = [self.default, *self.endpoints.values(),
                 *(p.rule for p in self.numbers if p.rule)]
        return frozenset().union(*(rule.usergroups for rule in rules))


def normalize_number(text: str, default_country_code: str = "") -> str | None:
    """A phone number as E.164 (`+` and 8-15 digits), or None if `text` is not a number.

    Accepts `+1 (555) 123-4567`, `+1.555.123.4567`, `0044 20 7946 0000` (00 = international
    prefix) and, when a default country code is configured, national numbers like
    `555-123-4567` (a single leading 0 trunk prefix is dropped: `020 7946 0000`).
    """
    # Other scripts' digits (full-width １２３, Arabic-Indic ١٢٣, ...) are the same number:
    # made ASCII first, so they match the same patterns and share one rate-limit key.
    cleaned = "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c
                      for c in re.sub(r"[\s().\-/]", "", text))
    if not re.fullmatch(r"\+?[0-9]+", cleaned):
        return None
    if cleaned.startswith("+"):
        digits = cleaned[1:]
    elif cleaned.startswith("00"):
        digits = cleaned[2:]
    elif default_country_code:
        national = cleaned[1:] if cleaned.startswith("0") and not cleaned.startswith("00") \
            else cleaned
        digits = default_country_code + national
    else:
        return None
    if not 8 <= len(digits) <= 15 or digits.startswith("0"):
        return None
    return "+" + digits


def number_endpoint(recipient: str, policy: AccessPolicy) -> tuple[Endpoint, Rule | None] | None:
    """An ad-hoc endpoint for a number a `[[numbers]]` pattern allows, with that pattern's rule."""
    number = normalize_number(recipient, policy.default_country_code)
    if number is None:
        return None
    for pattern in policy.numbers:
        if pattern.match.fullmatch(number):
            destination = pattern.destination.format(number=number, digits=number[1:])
            return Endpoint(name=number, destination=destination, channel=pattern.channel,
                            pbx=pattern.pbx), pattern.rule
    return None


def _route_endpoint(destination: str) -> str | None:
    """The PJSIP endpoint a MessageSend destination goes out through: `pjsip:trunk/sip:...`
    and `pjsip:PJSIP/+1555...@trunk` both name `trunk`."""
    rest = destination.removeprefix("pjsip:")
    if rest == destination:
        return None
    if rest.upper().startswith("PJSIP/"):
        return rest.rsplit("@", 1)[1] if "@" in rest else None
    return rest.split("/", 1)[0] if "/" in rest else rest


def number_from_trunk(claimed_user: str, endpoint_id: str,
                      policy: AccessPolicy) -> NumberPattern | None:
    """The `[[numbers]]` pattern under which a text from `endpoint_id` (an endpoint Asterisk
    identified, outside the directory) is a conversation with the number its From names.

    Only when the pattern sends to that number through this very endpoint: a trunk vouches
    for the numbers it carries, so the reply goes back the way the text came; any other
    endpoint naming a number in From is just a phone making a claim.
    """
    number = normalize_number(claimed_user, policy.default_country_code)
    if number is None:
        return None
    for pattern in policy.numbers:
        if pattern.match.fullmatch(number) and _route_endpoint(
                pattern.destination.format(number=number, digits=number[1:])) == endpoint_id:
            return pattern
    return None


def rule_for(endpoint: Endpoint, policy: AccessPolicy, pattern_rule: Rule | None = None) -> Rule:
    if endpoint.name in policy.endpoints:
        return policy.endpoints[endpoint.name]
    return pattern_rule or policy.default


def resolve(recipient: str, directory: Directory,
            policy: AccessPolicy) -> tuple[Endpoint, Rule] | None:
    """The endpoint a recipient means (directory first, then number patterns) and its rule."""
    endpoint = directory.lookup(recipient)
    if endpoint is not None:
        return endpoint, rule_for(endpoint, policy)
    found = number_endpoint(recipient, policy)
    if found is None:
        return None
    endpoint, pattern_rule = found
    return endpoint, rule_for(endpoint, policy, pattern_rule)


class RateLimiter:
    """Sliding-window counts per key (a Slack user, an endpoint)."""

    def __init__(self, limit: RateLimit | None) -> None:
        self._limit = limit
        self._events: dict[str, list[float]] = {}

    def check(self, key: str, now: float | None = None, *, cost: int = 1) -> float:
        """0 if `key` may send `cost` more now (and counts them); else seconds until it may.

        `cost` is how many the send counts as (a text's parts, for a phone's limit); one
        larger than the whole limit counts as the whole limit, so it can go once the window
        is empty instead of never.
        """
        if self._limit is None:
            return 0.0
        now = time.monotonic() if now is None else now
        cost = max(1, min(cost, self._limit.count))
        window = [t for t in self._events.get(key, []) if now - t < self._limit.per_seconds]
        if len(window) + cost > self._limit.count:
            self._events[key] = window
            # The oldest entries that must leave the window before `cost` more fit.
            return self._limit.per_seconds - (now - window[len(window) + cost
                                                             - self._limit.count - 1])
        window.extend([now] * cost)
        self._events[key] = window
        return 0.0
