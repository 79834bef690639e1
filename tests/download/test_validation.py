"""ijson, the authority: short reasons without excerpts; the verdict against a strict parser."""

from __future__ import annotations

import io
import json

import pytest

from inbox_poller import mainarray
from inbox_poller.download import validation
from inbox_poller.download.fastcheck import FastCheck
from inbox_poller.errors import PayloadInvalid


def test_invalid_documents_are_refused_with_a_short_reason() -> None:
    for doc, reason in (
        (b'["\xed\xa0\x80"]', "not valid UTF-8 or Unicode"),  # an encoded surrogate
        (b'["\\udc00"]', "unpaired UTF-16 surrogate escape"),
        (b'{"a": 1} {"b": 2}', "trailing garbage"),
        (b'[1, "contact@example.test" x]', "invalid char"),
    ):
        with pytest.raises(PayloadInvalid, match="at or before byte") as caught:
            validation.validate(io.BytesIO(doc).read)
        assert reason in str(caught.value)
        assert "example.test" not in str(caught.value)


# --- the verdict against a strict parser, on truncated and padded payloads -----------------

_BASES = [
    b'[{"id": 1, "email": "a@example.test", "tags": ["x", "y"]}, {"id": 2, "s": "},{\\"]"}]',
    b'{"status": "SUCCESS", "data": {"item": [{"a": 1}, {"a": [2, {"b": null}]}]}, "n": -1.5e3}',
    b'[{"name": "caf\\u00e9 \\ud83d\\ude00", "city": "Z\xc3\xbcrich"}, [], {}]',
    b'"just a string"',
    b"42",
    b"true",
    b"[]",
    b" {}\n",
]
_AFTER = [
    b" ",
    b"\n\t\r ",
    b'"',
    b'"ERROR: export incomplete',
    b' "ERROR',
    b'"\\',
    b'"\\u12',
    b'"x"',
    b"[1]",
    b"{}",
    b"1",
    b" null",
    b"\x00",
    b" \x00",
    b"\xef\xbb\xbf",
    b",",
    b"]",
    b"}",
    b":",
    b"\xff",
    b'"\\ud800"',
]
_BEFORE = [b"", b" ", b"\xef\xbb\xbf", b"\x00", b'"', b"]"]


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def strict_parser_accepts(doc: bytes) -> bool:
    """``json.loads`` held to RFC 8259: strict UTF-8 (so a BOM is refused), no NaN or
    Infinity, and our rule for surrogates (docs/reliability.md §3.5): pairs only."""
    try:
        value = json.loads(doc.decode("utf-8"), parse_constant=_refuse_constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate fails here
    except (ValueError, UnicodeError):
        return False
    return True


def our_verdict(doc: bytes, piece: int) -> tuple[bool, bool]:
    """(valid, decided by the fast path), as the downloader decides."""
    check = FastCheck(chunk_bytes=8)
    for start in range(0, len(doc), piece):
        check.feed(doc[start : start + piece])
    if check.finish() is not None:
        return True, True
    try:
        try:
            validation.validate(io.BytesIO(doc).read)
        except validation.CountingAbandoned:
            validation.validate(io.BytesIO(doc).read, count=False)
    except PayloadInvalid:
        return False, False
    return True, False


def _corpus() -> list[bytes]:
    docs: list[bytes] = []
    for base in _BASES:
        docs += [base[:cut] for cut in range(len(base))]  # cut at every offset
        docs += [before + base for before in _BEFORE]
        for after in _AFTER:
            docs.append(base + after)
            docs += [base[:cut] + after for cut in range(0, len(base), 5)]
            docs.append(base + b" " + after + b" ")
    return docs


@pytest.mark.parametrize("head", [64 * 1024, 16], ids=["whole-head", "small-head"])
def test_the_verdict_equals_a_strict_parser_on_truncated_and_padded_payloads(
    monkeypatch: pytest.MonkeyPatch, head: int
) -> None:
    monkeypatch.setattr(mainarray, "HEAD_BYTES", head)
    valid = decided = 0
    corpus = _corpus()
    for number, doc in enumerate(corpus):
        expected = strict_parser_accepts(doc)
        verdict, fast = our_verdict(doc, piece=(1, 3, 64)[number % 3])
        assert verdict == expected, doc
        valid += verdict
        decided += fast
    # not vacuous: both verdicts occur, and the fast path decides many of the valid ones
    assert len(corpus) > 1500
    assert 80 < valid < len(corpus) - 1500
    assert decided > valid // 4
