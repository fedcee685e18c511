"""Who a recipient name means, what to suggest, and which entry an Asterisk endpoint is."""

from __future__ import annotations

from bridge.core.directory import Directory, Endpoint, asterisk_endpoint, normalize_uri, sip_user

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


def _linear_lookup(endpoints: tuple[Endpoint, ...], endpoint_id: str) -> Endpoint | None:
    """The rule written as a walk over the list: what the index must agree with."""
    for endpoint in endpoints:
        if asterisk_endpoint(endpoint.destination) == endpoint_id:
            return endpoint
    return None


def test_the_sender_index_agrees_with_the_rule_including_first_configured_wins() -> None:
    endpoints = (
        Endpoint("desk", "pjsip:desk", "C1"),
        Endpoint("desk-again", "pjsip:desk", "C2"),  # a second entry for the same phone
        Endpoint("Carol", "pjsip:carol", "C3"),
        Endpoint("mobile", "pjsip:PJSIP/+15551234@trunk", "C4"),
        Endpoint("lobby", "pjsip:lobby/sip:lobby@10.0.0.9", "C5"),
    )
    directory = Directory(endpoints)
    for endpoint_id in ("desk", "carol", "Carol", "trunk", "lobby", "", "stranger"):
        assert directory.by_asterisk_endpoint(endpoint_id) is \
            _linear_lookup(endpoints, endpoint_id), endpoint_id
    assert directory.by_asterisk_endpoint("desk") is endpoints[0]
