"""Who a recipient name means, what to suggest, and which entry an Asterisk endpoint is."""

from __future__ import annotations

from bridge.directory import Directory, Endpoint, normalize_uri, sip_user

ALICE = Endpoint("alice", "pjsip:alice", "C1", aliases=("front-desk",))
BOB = Endpoint("bob", "pjsip:bob", "C2")
MOBILE = Endpoint("mobile", "pjsip:PJSIP/+15551234@trunk", "C3")
DIRECTORY = Directory((ALICE, BOB, MOBILE))


def test_lookup_by_name_or_alias_ignores_case() -> None:
    assert DIRECTORY.lookup("ALICE") is ALICE
    assert DIRECTORY.lookup("front-desk") is ALICE
    assert DIRECTORY.lookup("carol") is None


def test_suggestions_for_typos() -> None:
    assert DIRECTORY.suggest("alcie")[0] == "alice"
    assert DIRECTORY.suggest("frontdesk") == ["front-desk"]
    assert DIRECTORY.suggest("zzzzzz") == []


def test_entry_of_an_identified_endpoint_is_exact() -> None:
    assert DIRECTORY.by_asterisk_endpoint("alice") is ALICE
    assert DIRECTORY.by_asterisk_endpoint("bob") is BOB
    # Asterisk section names are case-sensitive, and an alias is no endpoint name.
    assert DIRECTORY.by_asterisk_endpoint("BOB") is None
    assert DIRECTORY.by_asterisk_endpoint("front-desk") is None
    # A trunk destination names no endpoint of a phone.
    assert DIRECTORY.by_asterisk_endpoint("trunk") is None


def test_uri_helpers() -> None:
    assert sip_user("sips:Alice@Host;x=y") == "Alice"
    assert normalize_uri("<sip:alice@EXAMPLE.com;transport=tcp?x=1>") == "alice@example.com"
