"""The `[access]`, `[[numbers]]` and `[audit]` parts of the config, and per-phone `allow_*`
keys, read into an `AccessPolicy` (bridge/core/policy.py). Problems go to the shared reader."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bridge.core.directory import DEFAULT_PBX
from bridge.core.policy import AccessPolicy, NumberPattern, RateLimit, Rule
from bridge.settings.reader import ConfigReader

ACCESS_KEYS = {"default", "users", "usergroups", "channels", "user_rate", "endpoint_rate",
               "default_country_code"}
NUMBER_KEYS = {"name", "match", "destination", "channel", "allow_users", "allow_usergroups",
               "allow_channels", "pbx"}
AUDIT_KEYS = {"store_text", "keep_days"}
ENDPOINT_ACCESS_KEYS = {"allow_users", "allow_usergroups", "allow_channels"}

_USER = re.compile(r"^[UW][A-Z0-9]{4,}$")
_USERGROUP = re.compile(r"^S[A-Z0-9]{4,}$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)\s*$")
_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def load_access(check: ConfigReader, data: Mapping[str, Any]) -> AccessPolicy:
    access = _section(check, data, "access", ACCESS_KEYS)
    default_mode = check.string(access, "default", "access.", default="everyone") or "everyone"
    if default_mode not in ("everyone", "listed", "nobody"):
        check.add("access.default", f"{default_mode!r} is not a choice",
                  'use "everyone" (any Slack user may text any phone), "listed" (only the '
                  'users, usergroups and channels listed here) or "nobody" (only per-phone '
                  'allow_* lists)')
    default = Rule(everyone=default_mode == "everyone",
                   users=_ids(check, access, "users", "access.", _USER, "U0123ABCD"),
                   usergroups=_ids(check, access, "usergroups", "access.", _USERGROUP,
                                   "S0123ABCD"),
                   channels=_channels(check, access, "channels", "access."))
    if default_mode == "nobody":
        default = Rule()
    country = check.string(access, "default_country_code", "access.", default="") or ""
    if country and not re.fullmatch(r"[1-9]\d{0,2}", country):
        check.add("access.default_country_code", f"{country!r} is not a country calling code",
                  'write the digits without +, e.g. "1" for the US, "44" for the UK')

    endpoint_rules: dict[str, Rule] = {}
    raw_endpoints = data.get("endpoints")
    for index, table in enumerate(raw_endpoints if isinstance(raw_endpoints, list) else []):
        if isinstance(table, dict) and ENDPOINT_ACCESS_KEYS & table.keys():
            rule = _allow_rule(check, table, f"endpoints[{index}].")
            name = table.get("name")
            if isinstance(name, str):
                endpoint_rules[name] = rule

    audit = _section(check, data, "audit", AUDIT_KEYS)
    return AccessPolicy(
        default=default,
        endpoints=endpoint_rules,
        numbers=_numbers(check, data.get("numbers", [])),
        default_country_code=country,
        user_rate=_rate(check, access, "user_rate", "20/minute"),
        endpoint_rate=_rate(check, access, "endpoint_rate", "60/minute"),
        store_text=check.boolean(audit, "store_text", "audit.", default=False),
        audit_keep_days=check.number(audit, "keep_days", "audit.", default=90.0, low=1.0,
                                     high=36500.0),
    )


def _section(check: ConfigReader, data: Mapping[str, Any], name: str,
             known: set[str]) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        check.add(name, "must be a table", f"write it as a [{name}] section")
        return {}
    check.unknown_keys(value, known, f"{name}.")
    return value


def _ids(check: ConfigReader, table: Mapping[str, Any], key: str, prefix: str,
         shape: re.Pattern[str], example: str) -> frozenset[str]:
    values = check.string_list(table, key, prefix)
    for index, value in enumerate(values):
        if not shape.match(value):
            check.add(f"{prefix}{key}[{index}]", f"{value!r} is not a Slack ID",
                      f"use the ID (like {example}: profile > ⋯ > Copy member ID / the "
                      f"group's ID), not a name")
    return frozenset(v for v in values if shape.match(v))


def _channels(check: ConfigReader, table: Mapping[str, Any], key: str,
              prefix: str) -> frozenset[str]:
    values = check.string_list(table, key, prefix)
    for index, value in enumerate(values):
        check.channel(f"{prefix}{key}[{index}]", value)
    return frozenset(values)


def _allow_rule(check: ConfigReader, table: Mapping[str, Any], prefix: str) -> Rule:
    return Rule(users=_ids(check, table, "allow_users", prefix, _USER, "U0123ABCD"),
                usergroups=_ids(check, table, "allow_usergroups", prefix, _USERGROUP,
                                "S0123ABCD"),
                channels=_channels(check, table, "allow_channels", prefix))


def _rate(check: ConfigReader, table: Mapping[str, Any], key: str,
          default: str) -> RateLimit | None:
    text = check.string(table, key, "access.", default=default)
    if not text:
        return None  # "" switches the limit off
    match = _RATE.match(text)
    if not match or int(match.group(1)) < 1:
        check.add(f"access.{key}", f"{text!r} is not a rate",
                  'write it like "20/minute" (per second, minute, hour or day), or "" for '
                  "no limit")
        return None
    return RateLimit(count=int(match.group(1)), per_seconds=_UNITS[match.group(2)])


def _numbers(check: ConfigReader, raw: Any) -> tuple[NumberPattern, ...]:
    if not isinstance(raw, list):
        check.add("numbers", "must be a list of [[numbers]] tables",
                  "write each pattern as a [[numbers]] section")
        return ()
    patterns = []
    for index, table in enumerate(raw):
        prefix = f"numbers[{index}]."
        if not isinstance(table, dict):
            check.add(f"numbers[{index}]", "must be a table", "write it as [[numbers]]")
            continue
        check.unknown_keys(table, NUMBER_KEYS, prefix)
        name = check.string(table, "name", prefix, default=f"numbers[{index}]")
        match_text = check.string(table, "match", prefix, required=True,
                                  example='"^\\\\+1[2-9]\\\\d{9}$"')
        destination = check.string(table, "destination", prefix, required=True,
                                   example='"pjsip:PJSIP/{number}@provider"')
        channel = check.string(table, "channel", prefix, required=True,
                               example='"C0123456789"')
        compiled = None
        if match_text is not None:
            try:
                # ASCII: `\d` must mean 0-9 only (numbers are ASCII once normalised anyway).
                compiled = re.compile(match_text, re.ASCII)
            except re.error as exc:
                check.add(f"{prefix}match", f"is not a valid regular expression ({exc})",
                          "it is matched against the whole E.164 number, e.g. "
                          '"^\\\\+1[2-9]\\\\d{9}$"')
        if destination is not None and (
                not re.match(r"^(pjsip|xmpp):\S", destination)
                or not re.search(r"\{(number|digits)\}", destination)
                or re.search(r"\{(?!number\}|digits\})", destination)):
            check.add(f"{prefix}destination", f"{destination!r} is not a destination template",
                      'start with the technology and put {number} (E.164, with +) or '
                      '{digits} (without +) where the number goes, e.g. '
                      '"pjsip:PJSIP/{number}@provider"')
            destination = None
        if channel is not None:
            check.channel(f"{prefix}channel", channel)
        rule = _allow_rule(check, table, prefix) if ENDPOINT_ACCESS_KEYS & table.keys() \
            else None
        if compiled is not None and destination and channel and name:
            pbx = table.get("pbx")  # checked against the PBXs by the config loader
            patterns.append(NumberPattern(name=name, match=compiled, destination=destination,
                                          channel=channel, rule=rule,
                                          pbx=pbx if isinstance(pbx, str) else DEFAULT_PBX))
    return tuple(patterns)
