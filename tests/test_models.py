"""The ID and date patterns every room validates with before storing or building a path."""

from __future__ import annotations

import pytest

from inbox_poller.models import DATE_RE, JOB_ID_RE, STAT_ID_RE


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        (JOB_ID_RE, ["987654", "A1.b-c_d", "x" * 64], ["", ".x", "x" * 65, "98 76", "a/b"]),
        (STAT_ID_RE, ["4711", "9" * 18], ["", "47a1", "9" * 19, "-1"]),
        (DATE_RE, ["20261101"], ["2026110", "202611011", "2026-11-01"]),
    ],
)
def test_patterns_accept_whole_values_only(
    pattern: object, good: list[str], bad: list[str]
) -> None:
    assert isinstance(pattern, type(JOB_ID_RE))
    for value in good:
        assert pattern.match(value), value
    for value in bad:
        assert not pattern.match(value), value


@pytest.mark.parametrize("value", ["987654\n", "4711\n", "20261101\n", "987654\r\n"])
def test_a_trailing_newline_is_not_part_of_an_id(value: str) -> None:
    # "$" would match before the final "\n": red-team finding 8 of issue 9
    assert not JOB_ID_RE.match(value)
    assert not STAT_ID_RE.match(value)
    assert not DATE_RE.match(value)
