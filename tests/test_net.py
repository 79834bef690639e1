"""Network details the edges share: the ``Retry-After`` header."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from inbox_poller.net import parse_retry_after

CANARY = "tok-CANARY-5d1e9a7c3b"


def _body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Wed, 01 Jan 2025 00:01:00 GMT", now) == 60.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
