"""The gate every text from Slack passes (bridge/delivery/gate.py), with a real store, no Slack.

Each test types a recipient the way a Slack user would after `/sip` (or replies in a thread),
and checks what they would be told (the refusal's message) and what an admin finds afterwards
in the store's audit table, read back with sqlite3 from the store file as `sqlite3` on the
server would show it. Slack user groups come from a fake lookup (their members in a dict).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.core.directory import Endpoint
from bridge.core.errors import NotAllowed, RateLimited, TextRejected, UnknownRecipient
from bridge.core.model import NewOutbound, OutboundRow, Source
from bridge.delivery.gate import Gate
from bridge.settings.config import Settings, load_settings
from bridge.store.sqlite import Store

ENV = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "AMI_SECRET": "a"}
ALICE_CHANNEL = "C0ALICE00"
BOB_CHANNEL = "C0BOB0000"
OPS_CHANNEL = "C0OPS0000"  # anyone typing /sip here may text any phone the default rule covers
RANDOM_CHANNEL = "C0RANDOM0"
TEAM = "S0TEAM001"  # a Slack user group allowed to text bob
BASE = f"""
[ami]
username = "slackbridge"
[slack]
default_channel = "C0DEFAULT0"
[[endpoints]]
name = "alice"
destination = "pjsip:alice"
channel = "{ALICE_CHANNEL}"
aliases = ["front-desk"]
[[endpoints]]
name = "bob"
destination = "pjsip:bob"
channel = "{BOB_CHANNEL}"
allow_users = ["U0BOBFAN1"]
allow_usergroups = ["{TEAM}"]
"""
NO_LIMITS = """
[access]
user_rate = ""
endpoint_rate = ""
"""
LISTED = f"""
[access]
default = "listed"
users = ["U0ALLOWED"]
channels = ["{OPS_CHANNEL}"]
user_rate = ""
endpoint_rate = ""
"""


def settings(tmp_path: Path, extra: str) -> Settings:
    path = tmp_path / "bridge.toml"
    path.write_text(BASE + extra)
    return load_settings(path, ENV)


class Groups:
    """Slack's usergroups.users.list, faked: the user groups each user belongs to."""

    def __init__(self, members: dict[str, set[str]]) -> None:
        self._members = members
        self.asked: list[str] = []

    async def __call__(self, user: str) -> frozenset[str]:
        self.asked.append(user)
        return frozenset(group for group, users in self._members.items() if user in users)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "store.sqlite3")
    yield opened
    await opened.close()


def gate(tmp_path: Path, store: Store, extra: str = NO_LIMITS,
         groups: Groups | None = None) -> Gate:
    config = settings(tmp_path, extra)
    return Gate(directory=config.directory, policy=config.access, store=store,
                groups=groups or Groups({TEAM: {"U0TEAMMATE"}}))


def audit(store: Store) -> list[dict[str, Any]]:
    """The audit trail as an admin reads it from the store file."""
    with sqlite3.connect(store.path) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(row) for row in db.execute("SELECT * FROM audit ORDER BY id")]
    for row in rows:
        del row["id"]
        assert time.time() - 60 < row.pop("at") <= time.time()  # when: unix time, just now
    return rows


async def send(the_gate: Gate, store: Store, recipient: str, *, user: str = "U0HUMAN01",
               channel: str = RANDOM_CHANNEL, text: str = "running late",
               source: Source = "slash") -> OutboundRow:
    """What the Slack frontend does with a text: admit it, store it with its audit entry."""
    endpoint = await the_gate.admit(recipient=recipient, user=user, channel=channel,
                                    source=source, text=text)
    accepted = await store.accept_outbound(NewOutbound(
        slack_user=user, slack_channel=channel, endpoint=endpoint.name,
        destination=endpoint.destination, body=text, response_url=None, segments_total=1,
        source=source), audit=the_gate.audit_of_accepted(
            endpoint, recipient=recipient, user=user, channel=channel, source=source,
            text=text))
    assert accepted is not None
    the_gate.accepted(accepted.row, recipient=recipient, source=source)
    return accepted.row


async def refused(the_gate: Gate, recipient: str, *, user: str = "U0HUMAN01",
                  channel: str = RANDOM_CHANNEL, text: str = "running late") -> TextRejected:
    with pytest.raises(TextRejected) as caught:
        await the_gate.admit(recipient=recipient, user=user, channel=channel, source="slash",
                             text=text)
    return caught.value


def refusal(recipient: str, reason: str, *, user: str = "U0HUMAN01",
            channel: str = RANDOM_CHANNEL, source: str = "slash",
            text: str | None = None) -> dict[str, Any]:
    return {"slack_user": user, "slack_channel": channel, "source": source,
            "recipient": recipient, "endpoint": None, "destination": None,
            "result": "refused", "reason": reason, "outbound_id": None, "text": text}


async def test_a_mistyped_name_is_refused_with_suggestions_and_audited(
        tmp_path: Path, store: Store) -> None:
    the_gate = gate(tmp_path, store)
    exc = await refused(the_gate, "alcie")
    assert isinstance(exc, UnknownRecipient)
    assert exc.recipient == "alcie" and exc.suggestions == ["alice"]
    assert isinstance(await refused(the_gate, "zzz"), UnknownRecipient)
    assert audit(store) == [refusal("alcie", "no endpoint called 'alcie'"),
                            refusal("zzz", "no endpoint called 'zzz'")]


async def test_a_number_outside_the_directory_needs_a_numbers_pattern(
        tmp_path: Path, store: Store) -> None:
    the_gate = gate(tmp_path, store)
    exc = await refused(the_gate, "+1 555 123 4567")
    assert isinstance(exc, NotAllowed)
    assert "`+1 555 123 4567` is not in the directory" in str(exc)
    assert "[[numbers]] pattern" in str(exc)
    [row] = audit(store)
    assert row == refusal("+1 555 123 4567", str(exc))


async def test_a_number_a_pattern_allows_goes_to_the_patterns_destination(
        tmp_path: Path, store: Store) -> None:
    the_gate = gate(tmp_path, store, NO_LIMITS + """
default_country_code = "1"
[[numbers]]
name = "us"
match = '^\\+1555\\d{7}$'
destination = "pjsip:PJSIP/{number}@trunk"
channel = "C0NUMBERS"
""")
    row = await send(the_gate, store, "555-123-4567")
    assert (row.endpoint, row.destination) == ("+15551234567", "pjsip:PJSIP/+15551234567@trunk")
    assert isinstance(await refused(the_gate, "+44 20 7946 0000"), NotAllowed)
    assert [(r["recipient"], r["endpoint"], r["result"]) for r in audit(store)] == [
        ("555-123-4567", "+15551234567", "accepted"), ("+44 20 7946 0000", None, "refused")]


async def test_access_by_user_and_by_channel(tmp_path: Path, store: Store) -> None:
    the_gate = gate(tmp_path, store, LISTED)
    await send(the_gate, store, "alice", user="U0ALLOWED")
    # Anyone typing in the listed channel.
    await send(the_gate, store, "front-desk", user="U0NEWBIE1", channel=OPS_CHANNEL)
    exc = await refused(the_gate, "alice", user="U0NEWBIE1")
    assert isinstance(exc, NotAllowed)
    assert str(exc) == ("you may not text *alice*; ask an admin to add you (the bridge's "
                        "[access] settings)")
    assert [(r["slack_user"], r["slack_channel"], r["recipient"], r["endpoint"], r["result"],
             r["reason"]) for r in audit(store)] == [
        ("U0ALLOWED", RANDOM_CHANNEL, "alice", "alice", "accepted", None),
        ("U0NEWBIE1", OPS_CHANNEL, "front-desk", "alice", "accepted", None),
        ("U0NEWBIE1", RANDOM_CHANNEL, "alice", None, "refused", str(exc)),
    ]


async def test_a_phones_own_rule_lists_users_and_user_groups(tmp_path: Path,
                                                             store: Store) -> None:
    groups = Groups({TEAM: {"U0TEAMMATE"}, "S0OTHERS1": {"U0OUTSIDER"}})
    the_gate = gate(tmp_path, store, LISTED, groups)
    await send(the_gate, store, "bob", user="U0BOBFAN1")
    await send(the_gate, store, "bob", user="U0TEAMMATE")
    outsider = await refused(the_gate, "bob", user="U0OUTSIDER")
    assert isinstance(outsider, NotAllowed) and "*bob*" in str(outsider)
    # bob's rule replaces the default: neither the default's user nor its channel counts.
    assert isinstance(await refused(the_gate, "bob", user="U0ALLOWED"), NotAllowed)
    assert isinstance(await refused(the_gate, "bob", channel=OPS_CHANNEL), NotAllowed)
    assert [(r["slack_user"], r["result"]) for r in audit(store)] == [
        ("U0BOBFAN1", "accepted"), ("U0TEAMMATE", "accepted"), ("U0OUTSIDER", "refused"),
        ("U0ALLOWED", "refused"), ("U0HUMAN01", "refused")]
    # alice's rule names no user group: texting her costs no Slack lookup.
    groups.asked.clear()
    await send(the_gate, store, "alice", user="U0ALLOWED")
    assert groups.asked == []


async def test_the_per_user_limit_says_how_long_to_wait(tmp_path: Path, store: Store) -> None:
    the_gate = gate(tmp_path, store, '[access]\nuser_rate = "2/minute"\nendpoint_rate = ""\n')
    fan = "U0BOBFAN1"  # may text both phones: the limit is the user's, across phones
    await send(the_gate, store, "alice", user=fan)
    await send(the_gate, store, "bob", user=fan)
    exc = await refused(the_gate, "alice", user=fan)
    assert isinstance(exc, RateLimited)
    assert str(exc) == "you have reached the limit of 2 texts per minute; try again in 60 s"
    # A refusal by the access rules costs no allowance; another user still may.
    assert isinstance(await refused(the_gate, "bob", user="U0HUMAN02"), NotAllowed)
    await send(the_gate, store, "alice", user="U0HUMAN02")
    await send(the_gate, store, "alice", user="U0HUMAN02")
    assert [(r["slack_user"], r["recipient"], r["result"], r["reason"])
            for r in audit(store)] == [
        (fan, "alice", "accepted", None), (fan, "bob", "accepted", None),
        (fan, "alice", "refused", str(exc)),
        ("U0HUMAN02", "bob", "refused",
         "you may not text *bob*; ask an admin to add you (the bridge's [access] settings)"),
        ("U0HUMAN02", "alice", "accepted", None), ("U0HUMAN02", "alice", "accepted", None)]


async def test_the_per_phone_limit_counts_every_sender(tmp_path: Path, store: Store) -> None:
    the_gate = gate(tmp_path, store, '[access]\nuser_rate = ""\nendpoint_rate = "2/hour"\n')
    await send(the_gate, store, "alice", user="U0HUMAN01")
    await send(the_gate, store, "front-desk", user="U0HUMAN02")  # an alias is the same phone
    exc = await refused(the_gate, "alice", user="U0HUMAN03")
    assert isinstance(exc, RateLimited)
    assert str(exc) == "*alice* has reached the limit of 2 texts per hour; try again in 3600 s"
    await send(the_gate, store, "bob", user="U0BOBFAN1")  # bob has his own allowance
    assert [(r["recipient"], r["result"]) for r in audit(store)] == [
        ("alice", "accepted"), ("front-desk", "accepted"), ("alice", "refused"),
        ("bob", "accepted")]


async def test_accepted_texts_are_audited_with_their_outcome_but_not_their_text(
        tmp_path: Path, store: Store) -> None:
    the_gate = gate(tmp_path, store)
    sent = await send(the_gate, store, "front-desk", text="the door code is 4711")
    failed = await send(the_gate, store, "bob", user="U0BOBFAN1", channel=BOB_CHANNEL,
                        text="call me", source="reply")
    await refused(the_gate, "alcie", text="secret plans")
    await store.finish_outbound(sent.id, "sent", segments_sent=1)
    await store.finish_outbound(failed.id, "failed", "Asterisk refused MessageSend: no endpoint")
    assert audit(store) == [
        {"slack_user": "U0HUMAN01", "slack_channel": RANDOM_CHANNEL, "source": "slash",
         "recipient": "front-desk", "endpoint": "alice", "destination": "pjsip:alice",
         "result": "sent", "reason": None, "outbound_id": sent.id, "text": None},
        {"slack_user": "U0BOBFAN1", "slack_channel": BOB_CHANNEL, "source": "reply",
         "recipient": "bob", "endpoint": "bob", "destination": "pjsip:bob",
         "result": "failed", "reason": "Asterisk refused MessageSend: no endpoint",
         "outbound_id": failed.id, "text": None},
        refusal("alcie", "no endpoint called 'alcie'"),
    ]
    with sqlite3.connect(store.path) as db:
        dump = "\n".join(db.iterdump())
    audit_lines = [line for line in dump.splitlines() if '"audit"' in line]
    assert audit_lines and not any("4711" in line or "secret plans" in line
                                   for line in audit_lines)


async def test_store_text_keeps_the_texts_in_the_audit_trail(tmp_path: Path,
                                                             store: Store) -> None:
    the_gate = gate(tmp_path, store, NO_LIMITS + "[audit]\nstore_text = true\n")
    row = await send(the_gate, store, "alice", text="the door code is 4711")
    await refused(the_gate, "alcie", text="secret plans")
    assert [(r["result"], r["outbound_id"], r["text"]) for r in audit(store)] == [
        ("accepted", row.id, "the door code is 4711"), ("refused", None, "secret plans")]


async def test_admitted_endpoint_is_the_directory_entry(tmp_path: Path, store: Store) -> None:
    the_gate = gate(tmp_path, store)
    endpoint = await the_gate.admit(recipient="FRONT-DESK", user="U0HUMAN01",
                                    channel=RANDOM_CHANNEL, source="slash", text="hi")
    assert endpoint == Endpoint(name="alice", destination="pjsip:alice", channel=ALICE_CHANNEL,
                                aliases=("front-desk",))
    # Admitting is not accepting: nothing is audited until the text is stored and accepted.
    assert audit(store) == []
