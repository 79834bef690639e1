"""Network details both network edges share: TLS client contexts and ``Retry-After``.

Both the Pinpointe client and the downloader verify certificates with the same kind of
context and honour the same header; keeping them here lets neither edge import the other.
"""

from __future__ import annotations

import email.utils
import os
import re
import ssl
from datetime import UTC, datetime
from pathlib import Path

_HASHED_NAME = re.compile(r"[0-9a-f]{8}\.[0-9]+\Z")
"""A certificate in OpenSSL's hashed directory: its subject's hash and a sequence number."""


def client_context(extra_ca: Path | None = None) -> ssl.SSLContext:
    """Return a verifying client context trusting the system CAs plus *extra_ca*.

    There is deliberately no way to turn verification off: a self-signed server
    is trusted by naming its CA in the matching ``ca_file`` key.

    The system CAs are taken from the system's hashed certificate directory when it has
    one (``/etc/ssl/certs`` on Debian, the same anchors as its bundle file): OpenSSL then
    reads a CA when a chain needs it. Loading the bundle parses every one of its ~140
    certificates into each context, 20 ms and 2.3 MiB for the first, 0.8 MiB for each
    further one (issue 13: a command's start-up, the idle daemon's memory). Without such
    a directory, or when ``$SSL_CERT_FILE`` names a bundle, the default loading is kept.
    """
    capath = _system_ca_directory()
    context = ssl.create_default_context(capath=capath)  # capath None: load_default_certs()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if extra_ca is not None:
        context.load_verify_locations(cafile=str(extra_ca))
    return context


def _system_ca_directory() -> str | None:
    """Return the system's hashed CA directory, or None when the default loading must be
    kept (no such directory, or ``$SSL_CERT_FILE`` set: the bundle it names may hold
    anchors the directory does not)."""
    paths = ssl.get_default_verify_paths()
    if os.environ.get(paths.openssl_cafile_env) or paths.capath is None:
        return None
    try:
        with os.scandir(paths.capath) as entries:
            if any(_HASHED_NAME.match(entry.name) for entry in entries):
                return paths.capath
    except OSError:
        pass
    return None


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
