"""Every exception the bridge raises on purpose, drawn as one tree.

    BridgeError
    ├── ConfigError              the config file or environment is wrong (lists every problem)
    ├── StoreError               the store cannot be used (newer schema, damaged, unwritable)
    │   ├── StoreInUse           another bridge process holds the store's lock
    │   └── StoreUnavailable     the store cannot take writes right now (disk full, replaced)
    ├── TextRejected             a text cannot be sent as typed: tell the sender why
    │   ├── UnknownRecipient     no such name in the directory (carries suggestions)
    │   ├── NotAllowed           the access rules do not let this sender text this phone
    │   └── RateLimited          the sender or the phone has had too many texts recently
    ├── AmiError                 anything that went wrong talking to Asterisk
    │   ├── AmiUnavailable       not connected / logged in right now: nothing was sent
    │   │   ├── AmiLoginRefused  Asterisk refused the login (user, secret, permit)
    │   │   └── AsteriskShuttingDown  Asterisk answered "shutting down": nothing was sent
    │   ├── AmiTimeout           no answer to an action in time: the text may or may not have gone
    │   ├── AmiActionFailed      Asterisk answered `Response: Error`: nothing was sent
    │   │   └── PhoneNotRegistered  ... to a MessageSend for a phone known to be offline
    │   ├── GaveUp               Asterisk stayed unreachable longer than a text may wait
    │   └── PartlySent           some segments went out, then one failed
    ├── SlackError               a Web API call did not (knowingly) do what was asked, whatever
    │                            the answer's shape (refusal, 429, HTML page, no answer)
    └── PostFailed               a post did not (knowingly) reach Slack; says whether a retry
                                 can help, whether its content was refused, and whether it may
                                 have arrived anyway

Lower-layer errors are converted where they enter: panoramisk, OSError and TimeoutError in
`bridge/asterisk/ami.py`; slack_sdk and aiohttp errors, and answers of any odd shape, in
`bridge/slack/client.py` (`slack_call`); sqlite3 and psycopg errors in `bridge/store/`. The
rest of the bridge only sees these.
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


class PhoneNotRegistered(AmiActionFailed):
    """MessageSend refused for a PJSIP endpoint that has no registered contact right now.

    Measured on Asterisk 22: it answers `Message failed to send.` at once (and logs "Found
    endpoint 'alice' but didn't find an aor/contact for it"); it does not queue the text.
    """

    def __init__(self, action: str, message: str, endpoint: str) -> None:
        super().__init__(action, message)
        self.endpoint = endpoint
        reason = message or "no reason given"
        text = f"{endpoint}'s phone is not registered, so Asterisk refused the text ({reason})"
        self.args = (text,)


class StoreError(BridgeError):
    """The store cannot be used (newer schema, not a database, unwritable)."""


class StoreInUse(StoreError):
    """Another process holds the store's lock (a second bridge on the same store)."""


class StoreUnavailable(StoreError):
    """The store cannot take writes right now (disk full, read-only, I/O error, or its file
    was replaced): nothing was stored."""


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
    """A Web API call did not (knowingly) do what was asked; any answer shape ends here.

    `error`: Slack's error code, else a short description ("HTTP 502 (not a Slack answer)").
    `ambiguous`: the request may have been processed anyway (timeout, connection dropped
    mid-way, a gateway's 5xx, Slack's internal_error/fatal_error).
    `retry_after`: Slack's Retry-After, for 429. `status`: the HTTP status, when there was one.
    """

    def __init__(self, error: str, *, ambiguous: bool = False,
                 retry_after: float | None = None, status: int | None = None) -> None:
        self.error = error
        self.ambiguous = ambiguous
        self.retry_after = retry_after
        self.status = status
        super().__init__(error)


class PostFailed(BridgeError):
    """A post did not (knowingly) reach Slack.

    `permanent`: the same request will keep failing (wrong channel, bot not in it, or a
    content Slack refuses).
    `content`: Slack refused the message itself (too long, blocks it cannot take): the same
    channel takes it rendered differently.
    `ambiguous`: the request may have been processed (timeout, connection dropped mid-way,
    Slack's internal_error).
    `retry_after`: Slack's Retry-After, for 429.
    """

    def __init__(self, channel: str, error: str, *, permanent: bool = False,
                 content: bool = False, ambiguous: bool = False,
                 retry_after: float | None = None) -> None:
        self.channel = channel
        self.error = error
        self.permanent = permanent
        self.content = content
        self.ambiguous = ambiguous
        self.retry_after = retry_after
        super().__init__(f"Slack refused the post to {channel}: {error}")
