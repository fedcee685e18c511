"""Decoding the dialplan's UserEvent: exact values, and malformed events become notices."""

from __future__ import annotations

import base64

from bridge.core.texts import (
    InboundText,
    MalformedEvent,
    decode_spool_entry,
    decode_text_event,
    split_name_addr,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def event(**overrides: str) -> dict[str, str]:
    base = {"Event": "UserEvent", "UserEvent": "SlackBridgeText", "Uniqueid": "1700.0",
            "Version": "2", "Endpoint": b64("bob"), "MessageId": b64("abc@host 1 MESSAGE"),
            "From": b64('"Smith, John" <sip:bob@10.0.0.5>'), "To": b64("<sip:bridge@pbx>"),
            "Exten": "text", "ToExten": b64("bridge"), "BodyLength": "12", "Body": b64("Hi, <you> & 🎉")}
    base.update(overrides)
    return base


def test_decodes_every_field_exactly() -> None:
    decoded = decode_text_event(event())
    assert decoded == InboundText(event_id="bob|" + b64("abc@host 1 MESSAGE"),
                                  sender_uri="sip:bob@10.0.0.5",
                                  display_name="Smith, John", body="Hi, <you> & 🎉",
                                  declared_bytes=12, to_uri="sip:bridge@pbx", exten="bridge",
                                  asterisk_endpoint="bob")


def test_the_same_call_id_from_two_senders_is_two_texts() -> None:
    """Dedupe keys are per sender: alice reusing bob's Call-ID and CSeq is another text."""
    from_bob = decode_text_event(event())
    from_alice = decode_text_event(event(Endpoint=b64("alice")))
    unidentified = event()
    del unidentified["Endpoint"]  # the shared context: "Endpoint: " arrives as no header
    claimed = decode_text_event(unidentified)
    assert isinstance(from_bob, InboundText) and isinstance(from_alice, InboundText)
    assert isinstance(claimed, InboundText) and claimed.asterisk_endpoint == ""
    assert len({from_bob.event_id, from_alice.event_id, claimed.event_id}) == 3
    # A version-1 event (dialplan from before) keeps the bare MessageId it was stored under.
    old = decode_text_event(event(Version="1"))
    assert isinstance(old, InboundText) and old.event_id == b64("abc@host 1 MESSAGE")


def test_spool_entries_of_both_layouts_decode() -> None:
    fields = ["1700000000.5", b64("<sip:bob@h>"), b64("<sip:bridge@pbx>"), b64("bridge"),
              b64("id 1 MESSAGE"), "2", b64("hi")]
    old = decode_spool_entry("|".join(["1", *fields]))
    new = decode_spool_entry("|".join(["2", *fields, b64("carol")]))
    assert isinstance(old, InboundText) and old.asterisk_endpoint == ""
    assert isinstance(new, InboundText) and new.asterisk_endpoint == "carol"
    assert new.event_id == "carol|" + b64("id 1 MESSAGE") and new.body == "hi"
    assert isinstance(decode_spool_entry("|".join(["2", *fields])), MalformedEvent)


def test_oversize_body_is_recognised() -> None:
    decoded = decode_text_event(event(Body="", BodyLength="2000"))
    assert isinstance(decoded, InboundText) and decoded.dropped_by_asterisk
    no_body = event(BodyLength="2000")
    del no_body["Body"]  # how an empty "Body: " header arrives from AMI
    assert decode_text_event(no_body) == decoded


def test_bad_base64_and_utf8_and_missing_fields_become_malformed() -> None:
    assert isinstance(decode_text_event(event(Body="***")), MalformedEvent)
    bad_utf8 = base64.b64encode(b"\xff\xfe").decode()
    decoded = decode_text_event(event(Body=bad_utf8))
    assert isinstance(decoded, MalformedEvent) and "UTF-8" in decoded.problem
    assert decoded.sender_hint == "Smith, John"
    missing = event()
    del missing["From"]
    assert isinstance(decode_text_event(missing), MalformedEvent)


def test_split_name_addr() -> None:
    assert split_name_addr("Smith, John <sip:a@b>") == ("Smith, John", "sip:a@b")
    assert split_name_addr('"Q \\"x\\"" <sip:a@b>') == ('Q "x"', "sip:a@b")
    assert split_name_addr("sip:a@b") == ("", "sip:a@b")
