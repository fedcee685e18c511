"""Every exception the bridge raises on purpose, drawn as one tree.

    BridgeError
    ├── ConfigError              the config file or environment is wrong (lists every problem)
    ├── StoreError               the store cannot be used (newer schema, damaged, unwritable)
    ├── TextRejected             a text cannot be sent as typed: tell the sender why
    │   ├── UnknownRecipient     no such name in the directory (carries suggestions)
    │   ├── NotAllowed           the access rules do not let this sender text this phone
    │   └── RateLimited          the sender or the phone has had too many texts recently
    ├── AmiError                 anything that went wrong talking to Asterisk
    │   ├── AmiUnavailable       not connected / logged in right now: nothing was sent
    │   │   └── AmiLoginRefused  Asterisk refused the login (user, secret, permit)
    │   ├── AmiTimeout           no answer to an action in time: the text may or may not have gone
    │   ├── AmiActionFailed      Asterisk answered `Response: Error`: nothing was sent
    │   ├── GaveUp               Asterisk stayed unreachable longer than a text may wait
    │   └── PartlySent           some segments went out, then one failed
    └── SlackError               anything that went wrong talking to Slack's Web API
        ├── SlackRefused         Slack answered with an error (`ok: false`, 4xx, 429)
        ├── SlackUnreachable     no answer: connection refused, timeout, dropped mid-way
        └── PostFailed           a post did not (knowingly) reach Slack; says whether a retry
                                 can help and whether the post may have arrived anyway

Lower-layer errors are converted where they enter: panoramisk, OSError and TimeoutError in
`bridge/asterisk/ami.py`; slack_sdk and aiohttp errors in `bridge/slack/client.py`
(`slack_call`); sqlite3 and psycopg errors in `bridge/store/`. The rest of the bridge only sees
these.
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


class AmiTimeout(AmiError):
    """Asterisk did not answer an action in time; the outcome is unknown."""


class AmiActionFailed(AmiError):
    """Asterisk answered an action with `Response: Error`; nothing was sent."""

    def __init__(self, action: str, message: str) -> None:
        self.action = action
        self.asterisk_message = message
        super().__init__(f"Asterisk refused {action}: {message or 'no reason given'}")


class StoreError(BridgeError):
    """The store cannot be used (newer schema, not a database, unwritable)."""


class UnknownRecipient(TextRejected):
    def __init__(self, recipient: str, suggestions: list[str]) -> None:
        self.recipient = recipient
        self.suggestions = suggestions
        super().__init__(f"no endpoint called '{recipient}'")


class NotAllowed(TextRejected):
    """The sender may not text this recipient."""


class RateLimited(TextRejected):
    """The sender (or the phone) has had too many texts recently."""


class GaveUp(AmiError):
    """Asterisk stayed unreachable longer than the text may wait."""


class PartlySent(AmiError):
    """Some segments went out, then one failed; the rest were not sent."""

    def __init__(self, sent: int, total: int, cause: Exception) -> None:
        self.sent = sent
        self.total = total
        self.cause = cause
        super().__init__(f"sent {sent} of {total} parts, then: {cause}")


class SlackError(BridgeError):
    """A Slack Web API call failed; `error` is Slack's code or what went wrong on the way."""

    def __init__(self, method: str, error: str) -> None:
        self.method = method
        self.error = error
        super().__init__(f"Slack {method}: {error}")


class SlackRefused(SlackError):
    """Slack answered, and said no (`ok: false` with `error`, or an HTTP error status)."""

    def __init__(self, method: str, error: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        self.status = status
        self.retry_after = retry_after  # seconds, for 429
        super().__init__(method, error)


class SlackUnreachable(SlackError):
    """No answer from Slack. `ambiguous`: the request may have been processed anyway (a
    timeout or a connection dropped after sending), unlike a refused connection."""

    def __init__(self, method: str, error: str, *, ambiguous: bool) -> None:
        self.ambiguous = ambiguous
        super().__init__(method, error)


class PostFailed(BridgeError):
    """A post did not (knowingly) reach Slack.

    `permanent`: the same request will keep failing (wrong channel, bot not in it).
    `ambiguous`: the request may have been processed (timeout, connection dropped mid-way).
    `retry_after`: Slack's Retry-After, for 429.
    """

    def __init__(self, channel: str, error: str, *, permanent: bool = False,
                 ambiguous: bool = False, retry_after: float | None = None) -> None:
        self.channel = channel
        self.error = error
        self.permanent = permanent
        self.ambiguous = ambiguous
        self.retry_after = retry_after
        super().__init__(f"Slack refused the post to {channel}: {error}")
