"""Every exception the bridge raises on purpose, drawn as one tree.

    BridgeError
    ├── ConfigError            the config file or environment is wrong (lists every problem)
    ├── TextRejected           a text cannot be sent as typed (empty, NUL, ...): tell the sender
    └── AmiError               anything that went wrong talking to Asterisk
        ├── AmiUnavailable     not connected / logged in right now: nothing was sent
        │   ├── AmiLoginRefused  Asterisk refused the login (user, secret, permit)
        │   └── AsteriskShuttingDown  Asterisk answered "shutting down": nothing was sent
        ├── AmiTimeout         no answer to an action in time: the text may or may not have gone
        └── AmiActionFailed    Asterisk answered `Response: Error`: nothing was sent

Lower-layer errors (panoramisk, OSError, asyncio.TimeoutError) are converted where they
enter, in `bridge/ami.py`, so the rest of the bridge only ever sees these.
"""

from __future__ import annotations

from dataclasses import dataclass


class BridgeError(Exception):
    """Base of every error the bridge raises deliberately."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration, phrased for the admin who has to fix it."""

    source: str  # file path, or "environment"
    key: str  # dotted key, e.g. "endpoints[2].channel", or an environment variable name
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.problem}\n    fix: {self.fix}"


class ConfigError(BridgeError):
    """The configuration cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = [f"{count} problem{'s' if count != 1 else ''} in the bridge configuration:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class TextRejected(BridgeError):
    """The text cannot be sent as typed; the message says why, for the person who typed it."""


class AmiError(BridgeError):
    """Something went wrong talking to Asterisk."""


class AmiUnavailable(AmiError):
    """Not connected and logged in to AMI right now; nothing was sent."""


class AmiLoginRefused(AmiUnavailable):
    """Asterisk answered the AMI login with an error (wrong user, secret or permit)."""


class AsteriskShuttingDown(AmiUnavailable):
    """Asterisk answered "Asterisk is shutting down" (or, to MessageSend, "Message technology
    not found." while its messaging module is unloaded for a restart): nothing was sent; it
    counts as unreachable, not as a refusal of the text."""


class AmiTimeout(AmiError):
    """Asterisk did not answer an action in time; the outcome is unknown."""


class AmiActionFailed(AmiError):
    """Asterisk answered an action with `Response: Error`; nothing was sent."""

    def __init__(self, action: str, message: str) -> None:
        self.action = action
        self.asterisk_message = message
        super().__init__(f"Asterisk refused {action}: {message or 'no reason given'}")
