"""Presence from contact changes: what online / offline / unknown mean per phone."""

from __future__ import annotations

from bridge.core.presence import ContactChange, PhonePresence, pjsip_endpoint


def test_destinations_name_their_pjsip_endpoint_or_nothing() -> None:
    assert pjsip_endpoint("pjsip:alice") == "alice"
    assert pjsip_endpoint("pjsip:alice/sip:alice@10.0.0.5") == "alice"
    assert pjsip_endpoint("pjsip:PJSIP/+15551234@trunk") is None
    assert pjsip_endpoint("sip:alice@10.0.0.5") is None


def test_a_phone_is_online_while_any_contact_is_live() -> None:
    presence = PhonePresence()
    changed: list[str] = []
    presence.on_change(changed.append)
    assert presence.state_of("pjsip:alice") == "unknown"
    presence.update(ContactChange("alice", "sip:a@1", "NonQualified"))
    presence.update(ContactChange("alice", "sip:a@2", "Reachable"))
    assert presence.state_of("pjsip:alice") == "online"
    presence.update(ContactChange("alice", "sip:a@1", "Removed"))
    presence.update(ContactChange("alice", "sip:a@2", "Unreachable"))
    assert presence.state_of("pjsip:alice") == "offline"
    assert presence.since("pjsip:alice") is not None
    assert changed == ["alice", "alice"]  # unknown -> online -> offline
    assert presence.state_of("pjsip:bob") == "unknown"
    presence.forget()
    assert presence.state_of("pjsip:alice") == "unknown"
    assert changed == ["alice", "alice", "alice"]
