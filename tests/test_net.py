"""Network details the edges share: the ``Retry-After`` header."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from inbox_poller.models import utc_now
from inbox_poller.net import parse_retry_after


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Wed, 01 Jan 2025 00:01:00 GMT", now) == 60.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("soon", None), ("-3", None), ("12", 12.0)],
)
def test_retry_after_parsing(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, utc_now()) == expected
