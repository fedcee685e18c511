"""Who a recipient name means, what to suggest, and which endpoint a SIP From belongs to."""

from __future__ import annotations

import time

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


def _linear_sender(endpoints: tuple[Endpoint, ...], from_uri: str) -> Endpoint | None:
    """The matching rule written as a walk over the list: what the indexes must agree with."""
    wanted = normalize_uri(from_uri)
    bare = wanted if wanted.endswith("]") or ":" not in wanted.rsplit("@", 1)[-1] \
        else wanted.rsplit(":", 1)[0]
    for endpoint in endpoints:
        for configured in endpoint.from_uris:
            if normalize_uri(configured) in (wanted, bare):
                return endpoint
    user = sip_user(from_uri).casefold()
    for endpoint in endpoints:
        if user and not endpoint.from_uris and endpoint.name.casefold() == user:
            return endpoint
    return None


def test_sender_indexes_agree_with_the_rule_including_first_configured_wins() -> None:
    endpoints = (
        Endpoint("desk", "pjsip:desk", "C1", from_uris=("sip:shared@10.0.0.9",)),
        Endpoint("desk2", "pjsip:desk2", "C2", from_uris=("sip:shared@10.0.0.9:5060",)),
        Endpoint("Carol", "pjsip:carol", "C3"),
        Endpoint("lobby", "pjsip:lobby", "C4", from_uris=("sips:lobby@[2001:db8::1]",
                                                          "sip:Lobby@PBX.example")),
    )
    directory = Directory(endpoints)
    for uri in ("sip:shared@10.0.0.9:5060", "sip:shared@10.0.0.9", "sip:shared@10.0.0.9:5070",
                "sip:carol@anywhere", "sip:CAROL@x:1", "sips:lobby@[2001:db8::1]",
                "sip:Lobby@pbx.example:5061;transport=tls", "<sip:lobby@pbx.example>",
                "sip:desk@10.0.0.9", "tel:+15551234", "", "garbage"):
        assert directory.sender(uri) is _linear_sender(endpoints, uri), uri
    # the first endpoint configured for a URI wins, with or without the port
    assert directory.sender("sip:shared@10.0.0.9:5060") is endpoints[0]


def _seconds_per_match(directory: Directory, uris: list[str]) -> float:
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        for uri in uris:
            directory.sender(uri)
        best = min(best, (time.perf_counter() - began) / len(uris))
    return best


def _directory_of(size: int) -> Directory:
    return Directory(tuple(
        Endpoint(f"ep{i}", f"pjsip:ep{i}", "C1", from_uris=(f"sip:ep{i}@10.{i // 250}.0.1",))
        for i in range(size // 2)) + tuple(
        Endpoint(f"named{i}", f"pjsip:named{i}", "C1") for i in range(size - size // 2)))


def test_matching_a_sender_costs_the_same_with_10000_endpoints_as_with_10() -> None:
    small, large = _directory_of(10), _directory_of(10_000)
    # the last endpoint of each kind (the worst case of a walk), a port, and a stranger
    def senders(size: int) -> list[str]:
        last = size // 2 - 1
        return [f"sip:ep{last}@10.{last // 250}.0.1:5060", f"sip:named{size - size // 2 - 1}@h",
                "sip:stranger@192.0.2.1"] * 300
    for directory, size in ((small, 10), (large, 10_000)):
        assert directory.sender(senders(size)[0]) is not None
    ratio = _seconds_per_match(large, senders(10_000)) / _seconds_per_match(small, senders(10))
    print(f"sender match: 10,000 endpoints cost {ratio:.2f}x of 10")
    assert ratio <= 1.5
