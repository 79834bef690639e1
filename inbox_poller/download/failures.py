"""What a failed download try means: retry, expired link or a definitive error.

Reasons are built from exception types and status codes, never from library messages:
those quote the URL, whose query string is a credential (docs/reliability.md §4.5).
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator

from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from inbox_poller.errors import DownloadError, LinkExpired
from inbox_poller.models import utc_now
from inbox_poller.net import parse_retry_after

_EXPIRED_STATUSES = frozenset({403, 404, 410})
_MAX_CAUSES = 12


class RetryableFailure(Exception):
    """One try failed for a reason that may go away; the download tries again."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def causes(exc: BaseException) -> Iterator[BaseException]:
    """Yield *exc*, its arguments that are exceptions, its causes and contexts (bounded)."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < _MAX_CAUSES:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(arg for arg in current.args if isinstance(arg, BaseException))
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


_REASONS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (ssl.SSLCertVerificationError, "TLS certificate check failed"),
    (NewConnectionError, "cannot connect"),
    (ConnectTimeoutError, "connecting timed out"),
    ((ReadTimeoutError, TimeoutError), "read timed out"),
    (http.client.IncompleteRead, "the body ended early"),
    (ConnectionResetError, "connection reset"),
    (DecodeError, "the compressed body is corrupt"),
    (ssl.SSLError, "TLS error"),
    ((ProtocolError, http.client.HTTPException), "the connection broke"),
)


def describe(exc: BaseException) -> str:
    """A short reason built from exception types: library messages quote the URL."""
    found = list(causes(exc))
    for kind, reason in _REASONS:
        for cause in found:
            if isinstance(cause, kind):
                if isinstance(cause, ssl.SSLCertVerificationError):
                    return f"{reason}: {cause.verify_message}"
                return reason
    return type(exc).__name__


def is_certificate_failure(exc: BaseException) -> bool:
    """Whether *exc* comes from a failed certificate check (definitive, not transient)."""
    return any(isinstance(cause, ssl.SSLCertVerificationError) for cause in causes(exc))


def status_problem(status: int, retry_after: str | None) -> Exception | None:
    """What a final (non-redirect) status means: None for 200, else the error to raise."""
    if status == 200:
        return None
    if status in _EXPIRED_STATUSES:
        return LinkExpired(status)
    if status in (408, 429) or 500 <= status <= 599:
        return RetryableFailure(f"HTTP {status}", parse_retry_after(retry_after, utc_now()))
    return DownloadError(f"unexpected HTTP {status}")
