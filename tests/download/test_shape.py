"""The main array: which array's items are counted, found in the payload's head.

``SHAPES`` checks the rule end to end, through SafeDownloader and the loopback HTTPS
server; the other tests call ``sniff_shape`` directly (the rule's own tests are in
tests/test_mainarray.py).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from typing import Any

import ijson
import pytest

from inbox_poller import mainarray
from inbox_poller.download import shape
from inbox_poller.download.ijsonbackend import BACKEND, DigitRuns
from inbox_poller.download.outline import Outline
from inbox_poller.download.shape import sniff_shape
from tests.download.harness import RecordingSink
from tests.plugins.https_servers import HttpsServer, Reply

SHAPES = [
    (b"[1, 2, 3]", "array", 3),
    (b"[]", "array", 0),
    (b'[{"a": 1}, [2], "x"]', "array", 3),
    (b'{"records": [{"a": 1}, {"a": 2}]}', "object", 2),
    (b'{"status": "SUCCESS", "data": {"item": [{"a": 1}, {"a": 2}, {"a": 3}]}}', "object", 3),
    (b'{"errormessage": [], "data": {"item": [1, 2]}}', "object", 2),
    (b'{"errors": [], "warnings": []}', "object", 0),
    (b'{"a": {"b": {"c": [1, 2]}}}', "object", None),
    (b'{"a": [[1, 2], [3]]}', "object", 2),
    (b'{"status": "SUCCESS"}', "object", None),
    (b'{"a.b": 1, "list": [{"x": [1, 2, 3]}]}', "object", 1),
    (b'{"meta": {"fields": ["a", "b"]}, "data": {"item": [{"a": 1}]}}', "object", 1),
    (b'{"tags": ["x", "y", "z"], "n": 1}', "object", 3),
    (b'{"errors": [], "tags": ["x"], "rows": [[1], [2]]}', "object", 2),
    (b'"just a string"', "string", None),
    (b"42", "number", None),
    (b"true", "boolean", None),
    (b"null", "null", None),
]


@pytest.mark.parametrize(("body", "top_level", "records"), SHAPES)
def test_records_count_the_main_array(
    https_server: HttpsServer,
    fetch: Callable[..., tuple[Any, RecordingSink]],
    body: bytes,
    top_level: str,
    records: int | None,
) -> None:
    https_server.route("/p", Reply(body=body))
    result, _ = fetch("/p")
    assert (result.top_level, result.records) == (top_level, records)


def test_an_array_beyond_the_head_is_not_the_main_array() -> None:
    head = b'{"note": "' + b"x" * mainarray.HEAD_BYTES + b'", "items": [1, 2]}'
    assert sniff_shape(head[: mainarray.HEAD_BYTES]) == ("object", None)
    assert sniff_shape(b'{"data": {"item": [') == ("object", "data.item.item")


def test_sniff_shape_does_not_crash_on_long_digit_runs_in_the_head() -> None:
    head = b'{"note": "' + b"1" * 100 + b'", "rows": [[1]]}'
    assert sniff_shape(head) == ("object", "rows.item")


def test_the_main_array_is_found_across_the_pieces_ijson_parses_the_head_in() -> None:
    # the head is parsed SNIFF_READ_BYTES at a time: what lies across the pieces decides
    # as it did when the whole head was parsed at once
    meta = b'"' + b"m" * (3 * shape.SNIFF_READ_BYTES) + b'"'
    head = b'{"meta": {"fields": ["a"], "note": ' + meta + b'}, "rows": [{"a": 1}'
    assert len(head) > 3 * shape.SNIFF_READ_BYTES
    assert sniff_shape(head) == ("object", "rows.item")
    scalars_then_records = b'{"tags": ["x"], "pad": ' + meta + b', "rows": [[1], [2]]}'
    assert sniff_shape(scalars_then_records) == ("object", "rows.item")


def test_a_head_that_breaks_after_its_first_piece_keeps_what_came_before() -> None:
    # ijson stops at the error, in the second piece: the array already found stands
    head = b'{"rows": [' + b'{"a": 1},' * shape.SNIFF_READ_BYTES + b"}}}"
    assert sniff_shape(head) == ("object", "rows.item")
    late = b'{"tags": ["x"], "pad": "' + b"p" * shape.SNIFF_READ_BYTES + b'", } "rows": [[1]]}'
    assert sniff_shape(late) == ("object", "tags.item")


def _whole_head_shape(head: bytes) -> tuple[str, str | None]:
    """The rule over the whole head cleared and shortened at once: what sniff_shape
    answered before it read the head piece by piece, only as far as the rule asks."""
    outline = Outline()
    cleared = DigitRuns().shorten(outline.feed(head) + outline.finish(end_of_text=False))

    def events() -> Iterator[tuple[str, str]]:
        with contextlib.suppress(ijson.JSONError, ValueError, ArithmeticError):
            for prefix, event, _ in BACKEND.parse(io.BytesIO(cleared)):
                yield prefix, event

    return mainarray.main_array(events())


def _heads() -> Iterator[bytes]:
    """Valid payloads and their cuts at and around the piece boundaries, and heads that
    break the outline (deep nesting, lone surrogates, long digit runs) early and late."""
    record = b'{"id": 12, "email": "a\\"b@example.com", "tags": ["x", "]"], "n": 1.5e3}'
    pad = b'"' + b"p" * 700 + b'"'
    bodies = [body for body, _, _ in SHAPES] + [
        b'{"data": {"item": [' + b",".join([record] * 200) + b"]}}",
        b'{"meta": ' + pad + b', "rows": [' + b",".join([record] * 50) + b"]}",
        b'{"n": ' + b"7" * 600 + b', "tags": ["a"], "rows": [[1], [2]]}',
        b'{"x": 1e-9999999999999999999, "rows": [[1]]}',  # ijson needs it shortened
        b'{"s": "\\ud800", "rows": [[1]]}',
        b'{"s": "' + b"q" * 495 + b'\\ud83d\\ude00", "rows": [{"a": 1}]}',
        b'{"deep": ' + b"[" * 600 + b"]" * 600 + b', "rows": [{"a": 1}]}',
        b'{"x": ' + b"[" * 300 + b'{"rows": [[1]]}' + b"]" * 300 + b"}",
        b'{"tags": ["x"], "pad": ' + pad + b', } "rows": [[1]]}',
        b' \n {"a" : [ ] , "b" : [ {"c": [1]} ] }',
    ]
    for body in bodies:
        yield body
        for cut in (1, 7, 500, 501, 511, 512, 513, 523, 4096 + 501, len(body) - 1):
            yield body[:cut]


def test_reading_the_head_piece_by_piece_finds_what_reading_it_whole_finds() -> None:
    heads = list(_heads())
    assert len(heads) > 200
    for head in heads:
        assert sniff_shape(head) == _whole_head_shape(head), head[:80]
