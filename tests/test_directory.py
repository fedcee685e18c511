"""Who a recipient name means, what to suggest, and which endpoint a SIP From belongs to."""

from __future__ import annotations

from bridge.core.directory import Directory, Endpoint, normalize_uri, sip_user

ALICE = Endpoint("alice", "pjsip:alice", "C1", aliases=("front-desk",))
BOB = Endpoint("bob", "pjsip:bob", "C2", from_uris=("sip:bob@10.0.0.5",))
DIRECTORY = Directory((ALICE, BOB))


def test_lookup_by_name_or_alias_ignores_case() -> None:
    assert DIRECTORY.lookup("ALICE") is ALICE
    assert DIRECTORY.lookup("front-desk") is ALICE
    assert DIRECTORY.lookup("carol") is None


def test_suggestions_for_typos() -> None:
    assert DIRECTORY.suggest("alcie")[0] == "alice"
    assert DIRECTORY.suggest("frontdesk") == ["front-desk"]
    assert DIRECTORY.suggest("zzzzzz") == []


def test_sender_by_user_part_or_configured_uri() -> None:
    assert DIRECTORY.sender("sip:alice@127.0.0.1:5070") is ALICE
    assert DIRECTORY.sender("sip:bob@10.0.0.5:5060;transport=udp") is BOB
    # bob has explicit from URIs, so a From merely named bob from elsewhere is not bob
    assert DIRECTORY.sender("sip:bob@192.0.2.1") is None
    assert DIRECTORY.sender("sip:mallory@10.0.0.5") is None
    assert DIRECTORY.sender("garbage") is None


def test_uri_helpers() -> None:
    assert sip_user("sips:Alice@Host;x=y") == "Alice"
    assert normalize_uri("<sip:alice@EXAMPLE.com;transport=tcp?x=1>") == "alice@example.com"
