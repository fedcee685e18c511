"""The compose window's pieces that need no Slack: the picker's options and the modal."""

from __future__ import annotations

import re

from fake_slack import check_options_answer, check_view

from bridge.core.directory import Directory, Endpoint
from bridge.core.policy import AccessPolicy, NumberPattern
from bridge.slack.compose import ComposeOrigin, compose_view, read_submission, recipient_options

ALICE = Endpoint("alice", "pjsip:alice", "C1", aliases=("front-desk", "reception"))
BOB = Endpoint("bob", "pjsip:bob", "C2")
US = NumberPattern(name="us", match=re.compile(r"\+1\d{10}"), destination="pjsip:{number}@t",
                   channel="C3", rule=None)


def options(query: str, directory: Directory, policy: AccessPolicy | None = None,
            presence: dict[str, str] | None = None) -> list[str]:
    answer = {"options": recipient_options(query, directory=directory,
                                           policy=policy or AccessPolicy(),
                                           presence=lambda n: (presence or {}).get(n, "unknown"))}
    return [o["text"]["text"] for o in check_options_answer(answer)]


def test_type_ahead_matches_names_and_aliases_and_shows_presence() -> None:
    directory = Directory((ALICE, BOB))
    assert options("", directory, presence={"alice": "online"}) == [
        "alice (front-desk, reception) · online", "bob · unknown"]
    assert options("RECEP", directory) == ["alice (front-desk, reception) · unknown"]
    assert options("zzz", directory) == []


def test_a_number_is_offered_only_when_a_pattern_allows_it() -> None:
    directory = Directory((ALICE,))
    assert options("+1 (555) 123-4567", directory, AccessPolicy(numbers=(US,))) == [
        "+15551234567 (a number)"]
    assert options("+44 20 7946 0000", directory, AccessPolicy(numbers=(US,))) == []
    assert options("+1 (555) 123-4567", directory) == []  # no [[numbers]]: none


def test_at_most_100_options_of_at_most_75_characters() -> None:
    many = Directory(tuple(Endpoint(f"phone-{i:03d}-" + "x" * 80, f"pjsip:p{i}", "C1")
                           for i in range(140)))
    shown = options("phone", many)  # check_options_answer enforces Slack's limits
    assert len(shown) == 100
    assert all(len(text) == 75 and text.endswith("…") for text in shown)


def test_the_modal_fits_slack_and_keeps_a_long_prefill_within_the_text_box() -> None:
    origin = ComposeOrigin(channel="C1", response_url="https://hooks.slack.com/x")
    view = compose_view(origin=origin, prefill="é" * 5000, note="cut")
    check_view(view, kind="modal")
    assert ComposeOrigin.load(view["private_metadata"]) == origin
    assert ComposeOrigin.load("not json") == ComposeOrigin()
    [_, text] = [b for b in view["blocks"] if b["type"] == "input"]
    assert text["element"]["initial_value"] == "é" * 3000


def test_a_submission_reads_as_typed() -> None:
    view = {"state": {"values": {
        "recipient": {"recipient_pick": {"selected_option": {"value": "alice"}}},
        "text": {"text_input": {"value": "a & <b>\nline"}}}}}
    assert read_submission(view) == ("alice", "a & <b>\nline")
    assert read_submission({}) == ("", "")


def test_the_home_fits_slack_with_a_long_directory_and_escapes_names() -> None:
    from fake_slack import check_view

    from bridge.core.model import Backlog, OutboundRow
    from bridge.slack.home import home_view

    many = Directory(tuple(Endpoint(f"p{i}<@U1>", f"pjsip:p{i}", "C1") for i in range(300)))
    rows = [OutboundRow(id=i, slack_user="U1", slack_channel="C1", endpoint="p1",
                        destination="pjsip:p1", body="a\nb & c", response_url=None,
                        created_at=0.0, state="failed", segments_sent=0, segments_total=1,
                        last_error="Asterisk <refused>", notified=True) for i in range(30)]
    view = home_view(directory=many, presence=lambda n: "online", recent=rows,
                     ami_ready=False, backlog=Backlog(0, None, 4, None, 0))
    check_view(view, kind="home")
    text = "\n".join(b["text"]["text"] for b in view["blocks"] if "text" in b)
    assert "…and 240 more" in text and "<@U1>" not in text and "p0&lt;@U1&gt;" in text
    assert ":x: failed: Asterisk &lt;refused&gt;\n>a\n>b &amp; c" in text
    assert "not connected" in text and "*Texts waiting for the PBX:* 4" in text
