"""The outline: nesting, the end of the top-level value and surrogate escapes, fed in pieces.

A byte-by-byte reference, too slow for payloads but plain to read, says where the first
broken rule is; the outline must say the same, fed in any pieces, in regions of any
size (so both its C-speed reduction and its token-by-token reading are exercised).
"""

from __future__ import annotations

import json
import random

import pytest

from inbox_poller.download import outline
from inbox_poller.download.outline import MAX_DEPTH, Outline, OutlineError, check_outline

_DEPTH = "depth"
_END = "end"
_LONE = "lone"
_KINDS = {
    f"arrays and objects nested deeper than {MAX_DEPTH}": _DEPTH,
    "trailing garbage after the top-level value": _END,
    "a string holds an unpaired UTF-16 surrogate escape": _LONE,
}


def _hex4(text: bytes, at: int) -> int | None:
    digits = text[at : at + 4]
    if len(digits) < 4 or any(byte not in b"0123456789abcdefABCDEF" for byte in digits):
        return None
    return int(digits, 16)


def reference(text: bytes) -> tuple[int, str] | None:
    """The first broken rule of a JSON text that is valid up to it, byte by byte."""
    depth, pos, ended = 0, 0, False
    while pos < len(text):
        byte = text[pos]
        if byte in b" \t\r\n":
            pos += 1
        elif ended:
            return pos, _END
        elif byte == 0x22:
            pos += 1
            while pos < len(text) and text[pos] != 0x22:
                if text[pos] != 0x5C:
                    pos += 1
                    continue
                unit = _hex4(text, pos + 2) if text[pos + 1 : pos + 2] == b"u" else None
                if unit is not None and 0xD800 <= unit <= 0xDBFF:
                    low = _hex4(text, pos + 8) if text[pos + 6 : pos + 8] == b"\\u" else None
                    if low is None or not 0xDC00 <= low <= 0xDFFF:
                        return pos, _LONE
                    pos += 12
                elif unit is not None and 0xDC00 <= unit <= 0xDFFF:
                    return pos, _LONE
                else:
                    pos += 2
            pos += 1
            ended = depth == 0
        elif byte in b"[{":
            depth += 1
            if depth > MAX_DEPTH:
                return pos, _DEPTH
            pos += 1
        elif byte in b"]}":
            depth -= 1
            pos += 1
            ended = depth == 0
        elif byte in b",:":
            pos += 1
        else:
            while pos < len(text) and text[pos] not in b' \t\r\n[]{}:,"':
                pos += 1
            ended = depth == 0
    return None


def follow(text: bytes, piece: int) -> tuple[int, str] | None:
    """What the outline says of *text* fed in pieces; it must pass exactly the bytes before."""
    checker = Outline()
    passed = b"".join(checker.feed(text[at : at + piece]) for at in range(0, len(text), piece))
    passed += checker.finish()
    if checker.error is None:
        assert passed == text
        return None
    assert passed == text[: checker.error.offset]
    return checker.error.offset, _KINDS[checker.error.reason]


TABLE: list[tuple[bytes, tuple[int, str] | None]] = [
    (b"[1]", None),
    (b' \n{"a": [1, {"b": "]]]}}"}], "c": "[[["}\r\n', None),
    (b'[1]"ERROR: export incomplete', (3, _END)),
    (b"[1] ", None),
    (b'[1] "', (4, _END)),
    (b"[1] [2]", (4, _END)),
    (b"[1]\x00", (3, _END)),
    (b"[1]\xef\xbb\xbf", (3, _END)),
    (b'"text" x', (7, _END)),
    (b"12 34", (3, _END)),
    (b"true", None),
    (b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, None),
    (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), (MAX_DEPTH, _DEPTH)),
    (b'{"a":' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH, None),
    (b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), (5 * MAX_DEPTH, _DEPTH)),
    (b"[" * 65536 + b"]" * 65536, (MAX_DEPTH, _DEPTH)),
    (b'["\\ud83d\\ude00", "\\uD83D\\uDE00"]', None),
    (b'["\\ud800"]', (2, _LONE)),
    (b'["\\udc00"]', (2, _LONE)),
    (b'["\\ud800\\ud800\\udc00"]', (2, _LONE)),
    (b'["\\ud83d\\ude00\\udc00"]', (14, _LONE)),
    (b'{"\\udbff": 1}', (2, _LONE)),
    (b'["\\\\ud800"]', None),
    (b'["\\\\\\ud800"]', (4, _LONE)),
    (b'["\\"\\ud800"]', (4, _LONE)),
]


@pytest.mark.parametrize(("text", "expected"), TABLE)
@pytest.mark.parametrize("piece", [1, 2, 5, 11, 12, 1 << 20])
def test_the_first_broken_rule_is_found_in_any_pieces(
    text: bytes, expected: tuple[int, str] | None, piece: int
) -> None:
    assert reference(text) == expected
    assert follow(text, piece) == expected


@pytest.mark.parametrize("region", [3, 16, 1 << 16])
def test_regions_of_any_size_agree_with_the_reference(
    monkeypatch: pytest.MonkeyPatch, region: int
) -> None:
    monkeypatch.setattr(outline, "REGION_BYTES", region)
    rng = random.Random(region)
    for _ in range(120 if region > 3 else 40):
        text = _random_text(rng)
        expected = reference(text)
        for piece in (1, 7, 64, 1 << 20) if len(text) < 300 else (13, 1 << 20):
            assert follow(text, piece) == expected, (piece, text[:120])


def test_a_surrogate_pair_cut_between_pieces_is_still_a_pair() -> None:
    text = b'["' + b"x" * 100 + b'\\ud83d\\ude00", "\\\\", "\\\\ud800"]'
    for cut in range(100, 125):
        checker = Outline()
        passed = checker.feed(text[:cut]) + checker.feed(text[cut:]) + checker.finish()
        assert checker.error is None and passed == text


def test_a_text_that_may_go_on_leaves_an_escape_at_its_end_unjudged() -> None:
    head = b'["' + b"x" * 40 + b"\\ud83d"
    assert check_outline(head, end_of_text=False).in_string
    with pytest.raises(OutlineError, match="surrogate"):
        check_outline(head)


def test_a_tail_is_followed_from_the_depth_it_starts_at() -> None:
    assert check_outline(b"]}}", depth=3).depth == 0
    with pytest.raises(OutlineError, match="trailing garbage") as caught:
        check_outline(b'] "ERROR: export incomplete', depth=1)
    assert caught.value.offset == 2
    with pytest.raises(OutlineError, match="nested deeper"):
        check_outline(b"[[]]", depth=MAX_DEPTH - 1)


# --- random texts: valid JSON, nested near the limit, with garbage after ----------------

_STRINGS = ["", "a", "]", "[", "}{", '"', "\\", "\\\\", "é", "😀", "\ud800", "\udc00", '\\"]']
_AFTER = [b"", b" ", b"\n", b"x", b'"', b'"ERROR', b"[", b"]", b"1", b"\x00", b"\xef\xbb\xbf"]


def _value(rng: random.Random, depth: int, limit: int) -> object:
    kind = rng.randrange(8 if depth < limit else 4)
    if kind == 0:
        return rng.choice(_STRINGS) + rng.choice(_STRINGS)
    if kind == 1:
        return rng.choice([0, 1.5, -3, 10**20])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return "s"
    if kind in (4, 5):
        return [_value(rng, depth + 1, limit) for _ in range(rng.randrange(4))]
    return {rng.choice(_STRINGS) + str(i): _value(rng, depth + 1, limit) for i in range(3)}


def _random_text(rng: random.Random) -> bytes:
    value = _value(rng, 0, rng.choice([2, 4]))
    if rng.random() < 0.2:
        for _ in range(rng.choice([MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1])):
            value = [value] if rng.random() < 0.5 else {"k": value}
    text = json.dumps(value, ensure_ascii=rng.random() < 0.7, indent=rng.choice([None, 1]))
    encoded = text.encode("utf-8", "surrogatepass")  # lone surrogates only as escapes matter
    return rng.choice([b"", b" "]) + encoded + rng.choice(_AFTER) + rng.choice(_AFTER)
