"""Splitting a text into pieces that fit one AMI MessageSend each.

Asterisk reads at most about 1,022 characters per AMI line, so a `Base64Body` can carry at
most 756 raw bytes (1,008 base64 characters). Longer texts are sent as several messages.
Segments are cut on character boundaries, preferably after whitespace, and concatenating
them gives back the original text exactly: nothing is dropped, added or reordered.
"""

from __future__ import annotations

MAX_SEGMENT_BYTES = 756

# Don't break at whitespace if that would leave a segment shorter than this share of the
# limit; a hard cut in a very long word wastes less than many tiny messages.
_MIN_FILL = 0.5


def segment_body(text: str, max_bytes: int = MAX_SEGMENT_BYTES) -> list[str]:
    """Split `text` into UTF-8 segments of at most `max_bytes` bytes each; "".join() == text."""
    if max_bytes < 4:
        raise ValueError("max_bytes must hold at least one UTF-8 character (4 bytes)")
    segments: list[str] = []
    start = 0
    while start < len(text):
        end = _fit(text, start, max_bytes)
        if end < len(text):
            end = _prefer_whitespace(text, start, end, max_bytes)
        segments.append(text[start:end])
        start = end
    return segments


def _fit(text: str, start: int, max_bytes: int) -> int:
    """Largest end such that text[start:end] encodes to at most max_bytes (at least 1 char)."""
    used = 0
    end = start
    while end < len(text):
        size = _utf8_len(text[end])
        if used + size > max_bytes:
            break
        used += size
        end += 1
    return max(end, start + 1)


def _utf8_len(char: str) -> int:
    code = ord(char)
    if code < 0x80:
        return 1
    if code < 0x800:
        return 2
    if code < 0x10000:
        return 3
    return 4


def _prefer_whitespace(text: str, start: int, end: int, max_bytes: int) -> int:
    """Move a cut back to just after the last whitespace, if that keeps the segment full enough."""
    floor = start + 1
    for cut in range(end, floor, -1):
        if text[cut - 1].isspace():
            if len(text[start:cut].encode("utf-8", "surrogatepass")) >= max_bytes * _MIN_FILL:
                return cut
            break
    return _avoid_splitting_pairs(text, start, end)


def _avoid_splitting_pairs(text: str, start: int, end: int) -> int:
    # Keep a character and the combining marks / variation selectors / ZWJ that follow it
    # together, so an emoji sequence is not torn across two messages when avoidable.
    cut = end
    while cut > start + 1 and cut < len(text) and _is_joiner(text[cut]):
        cut -= 1
    return cut


def _is_joiner(char: str) -> bool:
    code = ord(char)
    return (
        code == 0x200D  # zero width joiner
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0x0300 <= code <= 0x036F  # combining diacritics
        or 0x1F3FB <= code <= 0x1F3FF  # skin tone modifiers
        or 0xE0020 <= code <= 0xE007F  # tag characters (flags)
    )
