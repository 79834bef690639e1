"""The main-array rule, on parse events and on raw bytes, shared by download and reader."""

from __future__ import annotations

import pytest

from inbox_poller.mainarray import main_array, main_array_offset


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


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], ("unknown", None)),
        ([("", "start_array")], ("array", "item")),
        ([("", "string")], ("string", None)),
        (
            [
                ("", "start_map"),
                ("", "map_key"),
                ("e", "start_array"),
                ("e", "end_array"),
                ("", "map_key"),
                ("d", "start_map"),
                ("d", "map_key"),
                ("d.item", "start_array"),
                ("d.item.item", "start_map"),
            ],
            ("object", "d.item.item"),
        ),
        # cut short (a parser that stopped at an error): the best candidate so far
        (
            [("", "start_map"), ("", "map_key"), ("t", "start_array"), ("t.item", "string")],
            ("object", "t.item"),
        ),
    ],
)
def test_main_array_reads_parse_events(
    events: list[tuple[str, str]], expected: tuple[str, str | None]
) -> None:
    assert main_array(events) == expected
