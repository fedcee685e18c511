"""Splitting long texts for AMI: every byte kept, in order, each part within the AMI limit."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.segments import MAX_SEGMENT_BYTES, segment_body


def test_short_text_is_one_segment() -> None:
    assert segment_body("Hello") == ["Hello"]
    assert segment_body("") == []


def test_long_text_splits_at_whitespace_within_limit() -> None:
    text = ("word " * 400).strip()
    parts = segment_body(text)
    assert "".join(parts) == text
    assert all(len(p.encode()) <= MAX_SEGMENT_BYTES for p in parts)
    assert all(p.endswith(" ") for p in parts[:-1])  # cut after a space, not mid-word


def test_multibyte_characters_are_never_cut() -> None:
    text = "🎉" * 500  # 4 bytes each
    parts = segment_body(text)
    assert "".join(parts) == text
    assert [len(p.encode()) for p in parts] == [756, 756, 488]


def test_emoji_sequences_stay_together_when_possible() -> None:
    thumbs = "👍🏽"  # base + skin tone modifier
    text = "a" * 754 + thumbs + "b"
    parts = segment_body(text)
    assert "".join(parts) == text
    assert parts[1].startswith(thumbs)


def test_base64_of_a_full_segment_fits_one_ami_line() -> None:
    # FACTS: Base64Body of 756 raw bytes (1,008 chars) passes, 757 fails.
    for part in segment_body("é" * 2000):
        assert len("Base64Body: " + base64.b64encode(part.encode()).decode()) <= 1022


@given(st.text())
def test_any_text_reassembles_exactly(text: str) -> None:
    parts = segment_body(text)
    assert "".join(parts) == text
    assert all(parts)
    assert all(len(p.encode("utf-8", "surrogatepass")) <= MAX_SEGMENT_BYTES for p in parts)
