"""The gate every text from Slack passes before it is stored for sending.

It resolves the recipient (directory, then `[[numbers]]` patterns), checks the sender may text
it (`[access]` rules, user groups looked up in Slack), applies the per-user and per-phone rate
limits, and writes the audit trail: every refusal here, every accepted text (its outcome is
filled in when Asterisk answers). A refusal is a `TextRejected` whose message says why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from bridge.core.directory import DEFAULT_PBX, Directory, Endpoint, asterisk_endpoint
from bridge.core.errors import NotAllowed, RateLimited, TextRejected, UnknownRecipient
from bridge.core.model import AuditEntry, OutboundRow, Source
from bridge.core.policy import AccessPolicy, RateLimiter, Rule, normalize_number, resolve
from bridge.ops import metrics
from bridge.store.backend import StoreBackend

log = logging.getLogger(__name__)

GroupLookup = Callable[[str], Awaitable[frozenset[str]]]


def refusal_reason(exc: TextRejected) -> str:
    """The metrics label of a refusal."""
    if isinstance(exc, UnknownRecipient):
        return "unknown_recipient"
    if isinstance(exc, NotAllowed):
        return "not_allowed"
    if isinstance(exc, RateLimited):
        return "rate_limited"
    return "invalid_text"


class Gate:
    def __init__(self, *, directory: Directory, policy: AccessPolicy, store: StoreBackend,
                 groups: GroupLookup, default_channel: str = "") -> None:
        self._directory = directory
        self._default_channel = default_channel
        self._policy = policy
        self._store = store
        self._groups = groups
        self._per_user = RateLimiter(policy.user_rate)
        self._per_endpoint = RateLimiter(policy.endpoint_rate)

    async def admit(self, *, recipient: str, user: str, channel: str, source: Source,
                    text: str, reply_endpoint: str | None = None, parts: int = 1,
                    external: bool = False) -> Endpoint:
        """The endpoint to send to, or TextRejected (audited and logged) saying why not.

        `reply_endpoint`: a reply in the thread of a phone outside the directory goes to the
        PJSIP endpoint its text came from, under the default rule. `parts`: how many
        MessageSends the text takes; the per-phone rate counts those, not texts.
        `external`: the sender is a member of another organisation (Slack Connect).
        """
        try:
            endpoint = await self._check(recipient=recipient, user=user, channel=channel,
                                         reply_endpoint=reply_endpoint, parts=parts,
                                         external=external)
        except TextRejected as exc:
            metrics.outbound_refused(refusal_reason(exc))
            log.info("audit: slack_user=%s channel=%s source=%s recipient=%r result=refused "
                     "reason=%s", user, channel, source, recipient, exc)
            await self._store.add_audit(AuditEntry(
                at=time.time(), slack_user=user, slack_channel=channel, source=source,
                recipient=recipient, endpoint=None, destination=None, result="refused",
                reason=str(exc), outbound_id=None,
                text=text if self._policy.store_text else None))
            raise
        return endpoint

    def audit_of_accepted(self, endpoint: Endpoint, *, recipient: str, user: str,
                          channel: str, source: Source, text: str) -> AuditEntry:
        """The audit entry of a text that passed, stored with it (`outbound_id` set then)."""
        return AuditEntry(
            at=time.time(), slack_user=user, slack_channel=channel, source=source,
            recipient=recipient, endpoint=endpoint.name, destination=endpoint.destination,
            result="accepted", reason=None, outbound_id=None,
            text=text if self._policy.store_text else None)

    @staticmethod
    def accepted(row: OutboundRow, *, recipient: str, source: Source) -> None:
        """Log a text that passed and was stored for sending with its audit entry."""
        log.info("audit: slack_user=%s channel=%s source=%s recipient=%r endpoint=%s "
                 "destination=%s result=accepted id=%d", row.slack_user, row.slack_channel,
                 source, recipient, row.endpoint, row.destination, row.id)

    async def _check(self, *, recipient: str, user: str, channel: str,
                     reply_endpoint: str | None, parts: int, external: bool) -> Endpoint:
        policy = self._policy
        found: tuple[Endpoint, Rule] | None
        if reply_endpoint is not None:
            # `<endpoint>@<pbx>`: a phone of a PBX other than the default one.
            pjsip, _, pbx = reply_endpoint.partition("@")
            if asterisk_endpoint(f"pjsip:{pjsip}") is None:
                # It becomes an AMI header: only a plain pjsip.conf section name may.
                raise NotAllowed(f"`{reply_endpoint}` is not an endpoint name the bridge can "
                                 f"send to")
            found = (Endpoint(name=reply_endpoint, destination=f"pjsip:{pjsip}",
                              channel=self._default_channel, pbx=pbx or DEFAULT_PBX),
                     policy.default)
        else:
            found = resolve(recipient, self._directory, policy)
        if found is None:
            if normalize_number(recipient, policy.default_country_code) is not None:
                raise NotAllowed(f"`{recipient}` is not in the directory, and texting numbers "
                                 f"outside it is not allowed for that number (an admin can "
                                 f"allow it with a [[numbers]] pattern)")
            raise UnknownRecipient(recipient, self._directory.suggest(recipient))
        endpoint, rule = found
        groups = await self._groups(user) if rule.usergroups else frozenset()
        if not rule.allows(user=user, channel=channel, groups=groups, external=external):
            if external:
                raise NotAllowed(f"you are not a member of this workspace (Slack Connect), so "
                                 f"you may not text *{endpoint.name}* unless an admin lists "
                                 f"your member ID (the bridge's [access] users)")
            raise NotAllowed(f"you may not text *{endpoint.name}*; ask an admin to add you "
                             f"(the bridge's [access] settings)")
        wait = self._per_user.check(user)
        if wait:
            raise RateLimited(f"you have reached the limit of {policy.user_rate}; try again "
                              f"in {wait:.0f} s")
        # A phone's limit counts parts: a text of 10 parts is 10 messages on the phone.
        wait = self._per_endpoint.check(endpoint.name, cost=parts)
        if wait:
            what = f" (this text is {parts} parts, each counted)" if parts > 1 else ""
            raise RateLimited(f"*{endpoint.name}* has reached the limit of "
                              f"{policy.endpoint_rate}{what}; try again in {wait:.0f} s")
        return endpoint
