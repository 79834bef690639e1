"""The main array: which array's items are counted, found in the payload's head.

``SHAPES`` checks the rule end to end, through SafeDownloader and the loopback HTTPS
server; the other tests call ``sniff_shape`` directly (the rule's own tests are in
tests/test_mainarray.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from inbox_poller import mainarray
from inbox_poller.download import shape
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
