"""The simulator's API calls: each request as received, and the faults tests queue for them.

Tests read :class:`ApiCall` records to see what a client sent, and queue
:class:`ApiFault`\\ s to make the next request misbehave. Nothing here is used in
production.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ApiFault:
    """A canned misbehaviour for the next API request, after it was read."""

    status: int = 200
    body: bytes | None = None
    """The answer's body; None answers normally (after ``delay_s``)."""
    content_type: str = "application/json"
    close: bool = False
    """Close the connection without answering."""
    delay_s: float = 0.0
    retry_after: str | None = None
    """A ``Retry-After`` header for the canned answer."""


@dataclass(frozen=True)
class ApiCall:
    """One API request as received (the token is never kept)."""

    requesttype: str
    requestmethod: str
    details: Any
    content_type: str
    fault: ApiFault | None
    peer: str = ""
    """The client's address and port: which connection the request came on."""
