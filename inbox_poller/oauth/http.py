"""The HTTPS session every token library is given, and the record of what it answered.

msal, google-auth and authlib all speak through a ``requests.Session``; each gets one
prepared here, so that all three verify certificates with our own context (the system
CAs plus ``imap.oauth2.ca_file``, never switched off), use our timeouts whatever they
ask for, never retry below us (token requests are counted and bounded in ``tokens``),
ignore proxy variables and ``.netrc``, and leave the status and the OAuth2 ``error``
of each answer in an :class:`Exchange`, so that a failure is classified the same way
whichever library made the request.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from inbox_poller import net

CONNECT_TIMEOUT_S = 10.0
"""Upper bound of the connect timeout; the read timeout is ``imap.oauth2.timeout_s``."""
ERROR_FIELD_CHARS = 300
"""How much of a server's ``error_description`` is kept."""


@dataclass
class Exchange:
    """What the token endpoint answered last (never a token), and how often it was asked."""

    answers: int = 0
    """HTTP requests answered (any status) since this object was made."""
    token_requests: int = 0
    """POST requests among them (the token endpoint's; discovery documents are GETs)."""
    status: int | None = None
    error: str | None = None
    description: str | None = None
    retry_after: str | None = None
    history: list[int] = field(default_factory=list)
    """The status of each answer, oldest first (for tests and ``auth status``)."""

    def reset(self) -> None:
        """Forget the last answer (before a new request)."""
        self.status = self.error = self.description = self.retry_after = None

    def record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """A ``requests`` response hook: note the status and an OAuth2 error, if any."""
        self.answers += 1
        if response.request is not None and response.request.method == "POST":
            self.token_requests += 1
        self.status = response.status_code
        self.history.append(response.status_code)
        self.retry_after = response.headers.get("Retry-After")
        self.error = self.description = None
        if response.status_code < 400:
            return
        try:
            body = response.json()
        except ValueError:
            return
        if isinstance(body, dict):
            error, description = body.get("error"), body.get("error_description")
            self.error = error[:100] if isinstance(error, str) else None
            if isinstance(description, str):
                self.description = description[:ERROR_FIELD_CHARS]


class _TokenAdapter(HTTPAdapter):
    """Our TLS context and timeouts on every request; no retries below ours."""

    def __init__(self, context: ssl.SSLContext, timeout: tuple[float, float]) -> None:
        self._context = context
        self._timeout = timeout
        super().__init__(max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs["ssl_context"] = self._context
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # our context alone decides: requests would add certifi's bundle to it, or turn
        # verification off if a library passed verify=False
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        kwargs["timeout"] = self._timeout  # google-auth asks for 120 s; ours are shorter
        return super().send(request, *args, **kwargs)


def prepare_session(
    session: requests.Session, *, ca_file: Path | None, timeout_s: float, exchange: Exchange
) -> requests.Session:
    """Make *session* verify with our context and record its answers in *exchange*."""
    session.trust_env = False  # no proxy variables, no ~/.netrc credentials
    adapter = _TokenAdapter(
        net.client_context(ca_file), (min(CONNECT_TIMEOUT_S, timeout_s), timeout_s)
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)  # refused by the URL checks in config; never plain
    session.hooks["response"].append(exchange.record)
    return session
