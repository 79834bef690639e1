"""Network details both network edges share: TLS client contexts and ``Retry-After``.

Both the Pinpointe client and the downloader verify certificates with the same kind of
context and honour the same header; keeping them here lets neither edge import the other.
"""

from __future__ import annotations

import email.utils
import ssl
from datetime import UTC, datetime
from pathlib import Path


def client_context(extra_ca: Path | None = None) -> ssl.SSLContext:
    """Return a verifying client context trusting the system CAs plus *extra_ca*.

    There is deliberately no way to turn verification off: a self-signed server
    is trusted by naming its CA in the matching ``ca_file`` key.
    """
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if extra_ca is not None:
        context.load_verify_locations(cafile=str(extra_ca))
    return context


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (delta or HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
