"""The test phone: the package's tiny SIP user agent (`bridge/demo/phone.py`), as the demo uses it.

One implementation serves both, since a pip-installed bridge has no tests/: a UDP SIP UA that
answers MESSAGE with 200 OK and records each once, and sends MESSAGE with RFC 3261
retransmissions, returning the final status. See that module for what it handles.
"""

from __future__ import annotations

from bridge.demo.phone import ReceivedMessage, SipPhone

__all__ = ["ReceivedMessage", "SipPhone"]
