"""The main array: which array's items are counted, found in the payload's head.

``SHAPES`` checks the rule end to end, through SafeDownloader and the loopback HTTPS
server; the other tests call ``sniff_shape`` and ``main_array_offset`` directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from inbox_poller.download import shape
from inbox_poller.download.shape import main_array_offset, sniff_shape
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
    head = b'{"note": "' + b"x" * shape.HEAD_BYTES + b'", "items": [1, 2]}'
    assert sniff_shape(head[: shape.HEAD_BYTES]) == ("object", None)
    assert sniff_shape(b'{"data": {"item": [') == ("object", "data.item.item")


@pytest.mark.parametrize(
    ("head", "offset"),
    [
        (b"[1]", 0),
        (b'  {"a": 1, "b": [{}]}', 16),
        (b'{"s": "[", "x": {"y": [1], "z": [[2]]}}', 32),
        (b'{"s": "[", "x": {"y": [1], "z": 2}}', 22),
        (b'{"e": [], "f": {"g": [3]}}', 21),
        (b'{"e": [], "f": 1}', 6),
        (b'{"a": {"b": {"c": [1]}}}', None),
        (b'{"a\\"[": 1, "b": ["x"]}', 17),
        (b'{"a": "unterminated [', None),
        (b'{"data": {"item": [', 18),
        (b'"text"', None),
        (b"", None),
    ],
)
def test_main_array_offset_follows_the_sniffing_rule(head: bytes, offset: int | None) -> None:
    assert main_array_offset(head) == offset
    if offset is not None:
        assert head[offset : offset + 1] == b"["


def test_sniff_shape_does_not_crash_on_long_digit_runs_in_the_head() -> None:
    head = b'{"note": "' + b"1" * 100 + b'", "rows": [[1]]}'
    assert sniff_shape(head) == ("object", "rows.item")
