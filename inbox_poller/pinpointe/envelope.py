"""The Pinpointe JSON envelope, pure: build a request's, decode and judge an answer's.

Pinpointe documents little about its answers (docs/pinpointe-api.md, gaps 3, 5 and 10), so
the parsing is lenient about shapes and strict about meaning:

* a call succeeded only if the HTTP status is 2xx **and** ``status`` is ``SUCCESS``;
* a refusal (``FAILED``/``ERROR``, HTTP 4xx) is *definitive*: no export was created;
* anything else after the request may have left (timeout, dropped connection, 5xx, an
  unreadable body, ``SUCCESS`` without a usable job ID) is *not* definitive: the export
  may exist, so the submit POST is never retried, by us or by urllib3.

Everything here takes bytes or values and returns values or raises ``ApiError``; there
is no I/O, so it is table-tested. Reading the ``data`` of a successful answer is in
``answers``; the HTTPS POST around both is ``client.PinpointeApi``. Every text taken from
an answer is redacted before it reaches a message, in case the server echoes the token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inbox_poller.errors import ApiAuthError, ApiError, ApiUnavailable
from inbox_poller.methods import build_details
from inbox_poller.models import ExportRequest

EXCERPT_CHARS = 200
"""How much of an unreadable body an error message quotes."""
REDACTED = "***"

_AUTH_FAILURE = "unable to verify user credentials"
_FAILURE_STATUSES = frozenset({"FAILED", "ERROR"})
_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class ApiReply:
    """One decoded JSON answer, before deciding whether it is a success."""

    http_status: int
    status: str | None
    """The envelope's ``status``, upper-cased; None when absent or not a string."""
    data: object
    error: str | None
    """``errormessage`` (and ``errordetail``) joined into one sentence."""
    retry_after_s: float | None = None
    """What a ``Retry-After`` header asked for, if any."""


def redact(text: str, secrets: Iterable[str]) -> str:
    """Return *text* with every secret (and its JSON-escaped forms) replaced by ``***``."""
    for secret in secrets:
        if len(secret) < 4:
            continue  # replacing a tiny string would shred the text and hide nothing
        escaped = json.dumps(secret)[1:-1]
        # PHP's json_encode also escapes "/" as "\/"
        for form in dict.fromkeys((secret, escaped, escaped.replace("/", "\\/"))):
            text = text.replace(form, REDACTED)
    return text


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """Return a one-line, tag-free excerpt of *text* for an error message."""
    # only the head is scanned: the tag pattern must not crawl through megabytes
    flat = _SPACES.sub(" ", _TAGS.sub(" ", text[: 64 * limit])).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def build_envelope(
    username: str, token: str, requesttype: str, requestmethod: str, details: Mapping[str, Any]
) -> dict[str, Any]:
    """Return the request envelope every Pinpointe method shares (docs/pinpointe-api.md §2)."""
    return {
        "username": username,
        "usertoken": token,
        "requesttype": requesttype,
        "requestmethod": requestmethod,
        "details": dict(details),
    }


def submit_details(request: ExportRequest, notify_email: str) -> dict[str, Any]:
    """Return ``details`` for *request*'s async export; raise ``ApiError`` on bad input.

    Built by ``methods.build_details``, the one place that knows each method's options,
    formats and date form: scalars are strings, and unused optional elements are left
    out rather than sent empty, as the method pages ask.
    """
    try:
        return build_details(request, notify_email)
    except ValueError as exc:
        raise ApiError(f"{exc}; nothing was sent") from None


def error_text(errormessage: object, errordetail: object = None) -> str | None:
    """Join ``errormessage`` (a string, or a list of them) and ``errordetail`` into one text."""
    parts = [part for part in (_flatten(errormessage) + _flatten(errordetail)) if part]
    if not parts:
        return None
    unique = list(dict.fromkeys(parts))
    return "; ".join(unique)


def _flatten(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value.strip()]
    if isinstance(value, list | tuple):
        return [text for item in value for text in _flatten(item)]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _flatten(item)]
    return [str(value)]


def decode_reply(
    status_code: int, content_type: str, body: bytes, *, secrets: Iterable[str] = ()
) -> ApiReply:
    """Decode one answer as a JSON envelope; raise ``ApiError`` when it is not one.

    The content type is only quoted, never trusted: PHP answers JSON as ``text/html``.
    """
    secrets = tuple(secrets)
    text = redact(body.decode("utf-8", errors="replace").lstrip("\ufeff"), secrets)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise _unreadable(status_code, content_type, text)
    status = parsed.get("status")
    return ApiReply(
        http_status=status_code,
        status=status.strip().upper() if isinstance(status, str) else None,
        data=parsed.get("data"),
        error=error_text(parsed.get("errormessage"), parsed.get("errordetail")),
    )


def _unreadable(status_code: int, content_type: str, text: str) -> ApiError:
    shown = excerpt(text) or "an empty body"
    kind = content_type.split(";")[0].strip() or "no content type"
    message = f"Pinpointe answered HTTP {status_code} with a body that is not a JSON envelope "
    message += f"({kind}): {shown!r}"
    if status_code == 401:
        return ApiAuthError(f"{message}; check pinpointe.username and the token", status=401)
    if status_code == 429:
        return ApiUnavailable(message, status=429)
    if 300 <= status_code < 400:
        message += " (a redirect: check pinpointe.api_url)"
    if 400 <= status_code < 500:
        return ApiError(message, status=status_code, definitive=True)
    return ApiError(
        f"{message}; the request may have been processed", status=status_code, definitive=False
    )


def check_reply(reply: ApiReply) -> object:
    """Return ``data`` of a successful reply; raise the matching ``ApiError`` otherwise."""
    http = reply.http_status
    said = f"{reply.status or 'no status'}: {reply.error or 'no error message'}"
    if 200 <= http < 300 and reply.status == "SUCCESS":
        return reply.data
    if http == 401 or _AUTH_FAILURE in (reply.error or "").lower():
        raise ApiAuthError(
            f"Pinpointe rejected the credentials (HTTP {http}, {said}); check "
            "pinpointe.username and the token",
            status=http,
        )
    if http == 429:
        raise ApiUnavailable(
            f"Pinpointe is rate limiting (HTTP 429, {said})",
            status=http,
            retry_after_s=reply.retry_after_s,
        )
    if 400 <= http < 500 or (200 <= http < 300 and reply.status in _FAILURE_STATUSES):
        raise ApiError(f"Pinpointe refused the request (HTTP {http}, {said})", status=http)
    if 200 <= http < 300:
        raise ApiError(
            f"Pinpointe answered HTTP {http} with an unexpected status ({said}); "
            "the request may have been processed",
            status=http,
            definitive=False,
        )
    raise ApiError(
        f"Pinpointe answered HTTP {http} ({said}); the request may have been processed",
        status=http,
        definitive=False,
    )
