"""TLS client contexts: certificate and host name checks always on."""

from __future__ import annotations

import ssl
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
