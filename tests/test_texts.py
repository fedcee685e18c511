"""Decoding the dialplan's UserEvent: exact values, and malformed events become notices."""

from __future__ import annotations

import base64

from bridge.core.texts import InboundText, MalformedEvent, decode_text_event, split_name_addr


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def event(**overrides: str) -> dict[str, str]:
    base = {"Event": "UserEvent", "UserEvent": "SlackBridgeText", "Uniqueid": "1700.0", "MessageId": b64("abc@host 1 MESSAGE"),
            "From": b64('"Smith, John" <sip:bob@10.0.0.5>'), "To": b64("<sip:bridge@pbx>"),
            "Exten": "text", "ToExten": b64("bridge"), "BodyLength": "12", "Body": b64("Hi, <you> & 🎉")}
    base.update(overrides)
    return base


def test_decodes_every_field_exactly() -> None:
    decoded = decode_text_event(event())
    assert decoded == InboundText(event_id=b64("abc@host 1 MESSAGE"), sender_uri="sip:bob@10.0.0.5",
                                  display_name="Smith, John", body="Hi, <you> & 🎉",
                                  declared_bytes=12, to_uri="sip:bridge@pbx", exten="bridge")


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
