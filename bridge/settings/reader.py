"""Reading typed values out of TOML tables while collecting every problem found.

`ConfigReader` never raises: each wrong value is recorded with its key and a fix, and a
default is returned so reading can go on and report the rest of the file too.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from bridge.core.errors import ConfigProblem

# Slack IDs: public channels C..., private G..., DMs D...; upper-case letters and digits.
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
# Longest value we put on one AMI line; Asterisk's line limit is about 1,022 characters.
MAX_HEADER_VALUE = 512


class ConfigReader:
    """Collects problems while reading values of the right type out of the TOML tables."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[ConfigProblem] = []

    def add(self, key: str, problem: str, fix: str, *, source: str | None = None) -> None:
        self.problems.append(ConfigProblem(source or self.source, key, problem, fix))

    def unknown_keys(self, table: Mapping[str, Any], known: set[str], prefix: str) -> None:
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"did you mean '{close[0]}'?" if close else \
                    f"known keys here: {', '.join(sorted(known))}"
                self.add(f"{prefix}{key}", "unknown key", f"remove it or rename it; {hint}")

    def string(self, table: Mapping[str, Any], key: str, prefix: str, *,
               default: str | None = None, required: bool = False,
               example: str = "") -> str | None:
        full = f"{prefix}{key}"
        if key not in table:
            if required:
                self.add(full, "missing", f"add `{key} = {example or '...'}`")
            return default
        value = table[key]
        if not isinstance(value, str):
            self.add(full, f"must be a string, got {type(value).__name__}",
                     f"write it in quotes, e.g. `{key} = {example or chr(34) + str(value) + chr(34)}`")
            return default
        return self._clean(value, full)

    def _clean(self, value: str, full: str) -> str | None:
        # Every config string may end up on an AMI line or in a Slack API call:
        # no control characters (CR/LF would inject AMI headers), no surrounding space.
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            self.add(full, "contains a control character (newline, tab, NUL, ...)",
                     "remove it; values must be a single line of text")
            return None
        if value != value.strip():
            self.add(full, f"has leading or trailing spaces: {value!r}", "remove the spaces")
            return None
        if len(value) > MAX_HEADER_VALUE:
            self.add(full, f"is {len(value)} characters long", f"keep it under {MAX_HEADER_VALUE}")
            return None
        return value

    def integer(self, table: Mapping[str, Any], key: str, prefix: str, *, default: int,
                low: int, high: int) -> int:
        full = f"{prefix}{key}"
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(full, f"must be a whole number, got {value!r}", f"e.g. `{key} = {default}`")
            return default
        if not low <= value <= high:
            self.add(full, f"{value} is out of range", f"use a number from {low} to {high}")
            return default
        return value

    def number(self, table: Mapping[str, Any], key: str, prefix: str, *, default: float,
               low: float, high: float) -> float:
        full = f"{prefix}{key}"
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.add(full, f"must be a number of seconds, got {value!r}",
                     f"e.g. `{key} = {default}`")
            return default
        if not low <= value <= high:
            self.add(full, f"{value} is out of range", f"use a number from {low} to {high}")
            return default
        return float(value)

    def string_list(self, table: Mapping[str, Any], key: str, prefix: str) -> list[str]:
        full = f"{prefix}{key}"
        value = table.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(full, "must be a list of strings", f'e.g. `{key} = ["one", "two"]`')
            return []
        cleaned = [self._clean(v, f"{full}[{i}]") for i, v in enumerate(value)]
        return [v for v in cleaned if v is not None]

    def boolean(self, table: Mapping[str, Any], key: str, prefix: str, *,
                default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.add(f"{prefix}{key}", f"must be true or false, got {value!r}",
                     f"write `{key} = {'true' if default else 'false'}` (no quotes)")
            return default
        return value

    def channel(self, key: str, channel: str) -> None:
        """Report `channel` unless it looks like a Slack channel ID."""
        if not CHANNEL_ID.match(channel):
            self.add(key, f"{channel!r} is not a Slack channel ID",
                     "use the channel's ID (like C0123456789: channel name > View channel "
                     "details > bottom of the About tab), not its #name")
