"""The bench's Asterisk: the test harness's sandbox, plus the dialplan-only alternative.

`BenchAsterisk` is `tests/asterisk/harness.AsteriskSandbox` (same chroot, same shipped
snippets, same AMI user) with two additions the tests do not need:

* a `message_context` per peer, so one Asterisk can have phones whose texts go through the
  shipped `slack-bridge-inbound` context and phones whose texts go through the CURL one;
* with `webhook_url` set: `res_curl.so` and `func_curl.so` loaded, and a `bench-curl-inbound`
  context that posts each text straight from the dialplan to a Slack-style incoming webhook,
  the way an admin would without the bridge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from asterisk.harness import MODULES, AsteriskSandbox, SipPeer

BRIDGE_CONTEXT = "slack-bridge-inbound"
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

    def _modules_conf(self) -> str:  # type: ignore[override]  # staticmethod in the base
        modules = MODULES + (CURL_MODULES if self.webhook_url else ())
        loads = "".join(f"load => {module}\n" for module in modules)
        return f"[modules]\nautoload = no\n{loads}"

    def _write_config(self) -> None:
        super()._write_config()
        assert self.run_dir is not None
        if self.webhook_url:
            with (self.run_dir / "etc" / "extensions.conf").open("a") as conf:
                conf.write(curl_dialplan(self.webhook_url))

    def _pjsip_conf(self) -> str:
        transport = (f"[transport-udp]\ntype = transport\nprotocol = udp\n"
                     f"bind = 127.0.0.1:{self.sip_port}\n")
        parts = [transport]
        for peer in self.peers:
            context = self.contexts.get(peer.name, BRIDGE_CONTEXT)
            parts.append(f"""\
[{peer.name}]
type = endpoint
transport = transport-udp
context = {context}
message_context = {context}
disallow = all
allow = ulaw
aors = {peer.name}

[{peer.name}]
type = aor
contact = sip:{peer.name}@127.0.0.1:{peer.port}
""")
        return "\n".join(parts)
