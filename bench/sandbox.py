"""The bench's Asterisk: the package's sandbox, plus the dialplan-only alternative.

`BenchAsterisk` is `bridge.sandbox.launcher.AsteriskSandbox` (same chroot, same shipped
snippets, same AMI user) with two additions the tests and the demo do not need:

* a `message_context` per peer, so one Asterisk can have phones whose texts go through the
  shipped `slack-bridge-inbound` context and phones whose texts go through the CURL one;
* with `webhook_url` set: `res_curl.so` and `func_curl.so` loaded, and a `bench-curl-inbound`
  context that posts each text straight from the dialplan to a Slack-style incoming webhook,
  the way an admin would without the bridge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bridge.sandbox.launcher import MODULES, AsteriskSandbox, Peer, SipPeer

CURL_CONTEXT = "bench-curl-inbound"
CURL_MODULES = ("res_curl.so", "func_curl.so")


def curl_dialplan(webhook_url: str) -> str:
    """The dialplan-only alternative: one CURL() POST per text, Slack webhook JSON."""
    return f"""\

; bench/sandbox.py: the dialplan-only alternative to the bridge. Each text is posted straight
; to a Slack incoming webhook by the message thread that runs this context.
[{CURL_CONTEXT}]
exten => _[0-9A-Za-z+*#]!,1,Set(CURLOPT(httpheader)=Content-Type: application/json)
 same => n,Set(CURLOPT(httptimeout)=10)
 same => n,Set(BENCH_HOOK=${{CURL({webhook_url},{{"text":"${{MESSAGE(from)}}: ${{MESSAGE(body)}}"}})}})
 same => n,Hangup()
"""


class BenchAsterisk(AsteriskSandbox):
    """AsteriskSandbox with per-peer message contexts and an optional CURL webhook context."""

    def __init__(self, *, peers: Sequence[SipPeer], contexts: Mapping[str, str] | None = None,
                 webhook_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(peers=peers, **kwargs)
        self.contexts = dict(contexts or {})
        self.webhook_url = webhook_url

    def modules(self) -> tuple[str, ...]:
        return MODULES + (CURL_MODULES if self.webhook_url else ())

    def _extensions_conf(self) -> str:
        base = super()._extensions_conf()
        return base + curl_dialplan(self.webhook_url) if self.webhook_url else base

    def _message_context(self, peer: Peer) -> str:
        return self.contexts.get(peer.name) or super()._message_context(peer)
