"""The Pinpointe JSON API client: submit an async export, check credentials, ask job status.

:class:`PinpointeApi` adds only the I/O around the pure envelope code in
``envelope`` and the ``data`` readers in ``answers``: one HTTPS POST per call,
never retried (the submit is not idempotent, docs/pinpointe-api.md gap 4), on a fresh
connection, verified by our own TLS context, with the answer read under a size cap
and a deadline. Transport failures become ``ApiError`` (or ``ApiUnavailable`` when
nothing was sent). The API token never appears in a message or a log line.

urllib3 is used directly, as the download room does: one POST needs nothing requests adds
(sessions, cookies, ``.netrc`` and proxy variables, which would have to be turned off), and
requests' import cost every ``submit`` 40 ms and the daemon 4.3 MiB (issue 13;
bench/README.md). No proxy variable and no ``.netrc`` is ever read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)

from inbox_poller import __version__, net
from inbox_poller.config import PinpointeConfig
from inbox_poller.errors import ApiError, ApiUnavailable
from inbox_poller.methods import METHODS, describe
from inbox_poller.models import ExportRequest, Send
from inbox_poller.pinpointe.answers import (
    describe_account,
    extract_job_id,
    parse_job_statuses,
    parse_sends,
)
from inbox_poller.pinpointe.envelope import (
    ApiReply,
    build_envelope,
    check_reply,
    decode_reply,
    excerpt,
    redact,
    submit_details,
)
from inbox_poller.ports import JOB_NOT_FOUND
from inbox_poller.urlpolicy import redact_url

logger = logging.getLogger("inbox_poller.pinpointe")

CONNECT_TIMEOUT_S = 10.0
"""Upper bound of the connect timeout; the read timeout is ``pinpointe.timeout_s``."""
MAX_RESPONSE_BYTES = 8 * 1024**2
"""API answers are small; a larger one is a misbehaving server, not data."""
RAW_RESPONSE_CHARS = 4096
"""How much of the last (redacted) answer is kept for the ledger."""

_JOBS_NOT_FOUND = "jobs not found"
SEND_PAGE_LIMIT = 500
"""Sends asked for per ``GetNewslettersSent`` page."""
MAX_SEND_PAGES = 100
"""Pages read at most: 50,000 sends, far beyond any N-day range."""


class PinpointeApi:
    """Pinpointe's JSON API over HTTPS (implements ``ports.ExportApi``)."""

    def __init__(
        self,
        config: PinpointeConfig,
        token: str,
        *,
        ca_file: Path | None = None,
    ) -> None:
        self._config = config
        self._token = token
        self._where = redact_url(config.api_url)
        # verification from our context alone (no certifi bundle, no switch to turn it off);
        # retries=False: no retry of any kind, and each error raised as it is
        self._pool = urllib3.PoolManager(
            num_pools=1,
            ssl_context=net.client_context(ca_file),
            retries=False,
            timeout=urllib3.Timeout(
                connect=min(CONNECT_TIMEOUT_S, config.timeout_s), read=config.timeout_s
            ),
        )
        self.last_response: str | None = None
        """The last answer's body, redacted and cut short, for the ledger and diagnosis."""

    def submit(self, request: ExportRequest) -> str:
        """POST the async export request once (never retried) and return the job ID.

        :raises ApiError: ``definitive`` when Pinpointe refused the request (or it never
            left), not ``definitive`` when the export may exist.
        """
        details = submit_details(request, self._config.notify_email)
        requesttype = METHODS[request.method].requesttype
        data = check_reply(self._post(requesttype, request.method, details))
        job_id = extract_job_id(data)
        # the submitter logs the submission at INFO, with its export
        logger.debug(
            "pinpointe: %s %s accepted as job %s", request.method, describe(request), job_id
        )
        return job_id

    def newsletters_sent(self, days: int) -> list[Send]:
        """List the newsletter sends of the last *days* days (``Newsletters``/
        ``GetNewslettersSent``, synchronous, paginated; docs/pinpointe-api.md §7).

        Sends without a stat ID are left out. The pages are read until ``next`` is
        ``"0"`` (or missing), at most ``MAX_SEND_PAGES`` of ``SEND_PAGE_LIMIT`` each.
        :raises ApiError:
        """
        sends: dict[str, Send] = {}
        start = "0"
        for _ in range(MAX_SEND_PAGES):
            details: dict[str, Any] = {
                "intervalcount": str(days),
                "intervalunits": "days",
                "pagination": {"limit": str(SEND_PAGE_LIMIT), "next": start},
            }
            data = check_reply(self._post("Newsletters", "GetNewslettersSent", details))
            page, following = parse_sends(data)
            for send in page:
                sends.setdefault(send.statid, send)
            if following in (None, "0", start):
                break
            start = following
        else:
            raise ApiError(
                f"GetNewslettersSent: more than {MAX_SEND_PAGES} pages of sends; "
                "shorten the sends range"
            )
        logger.debug("pinpointe: GetNewslettersSent %d days: %d sends", days, len(sends))
        return list(sends.values())

    def check(self) -> str:
        """Call ``Authentication``/``APITest``; return a one-line description of the account."""
        data = check_reply(self._post("Authentication", "APITest", {}))
        return describe_account(data)

    def job_status(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Ask ``API``/``AsyncJobStatus`` about *job_ids* (all jobs when empty).

        Returns each job's raw status lower-cased, or ``ports.JOB_NOT_FOUND`` for a job
        Pinpointe no longer knows ("Jobs not found").
        :raises ApiError:
        """
        details: dict[str, Any] = {"jobids": list(job_ids)} if job_ids else {}
        reply = self._post("API", "AsyncJobStatus", details)
        if reply.http_status < 500 and _JOBS_NOT_FOUND in (reply.error or "").lower():
            return dict.fromkeys(job_ids, JOB_NOT_FOUND)
        return parse_job_statuses(check_reply(reply), list(job_ids))

    def close(self) -> None:
        """Close pooled connections."""
        self._pool.clear()

    # ---- I/O -------------------------------------------------------------------------------

    def _post(self, requesttype: str, requestmethod: str, details: Mapping[str, Any]) -> ApiReply:
        """POST one envelope and decode the answer; every failure becomes an ``ApiError``."""
        envelope = build_envelope(
            self._config.username, self._token, requesttype, requestmethod, details
        )
        what = f"{requesttype}/{requestmethod}"
        logger.debug("pinpointe: POST %s to %s", what, self._where)
        self.last_response = None
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"inbox-poller/{__version__}",
            # a fresh connection per call: a pooled one the server closed while idle would
            # turn a submit that never arrived into an "unknown outcome"
            "Connection": "close",
        }
        try:
            response = self._pool.request(
                "POST",
                self._config.api_url,
                body=json.dumps(envelope).encode("utf-8"),
                headers=headers,
                redirect=False,  # a redirected POST would be re-sent elsewhere
                preload_content=False,
            )
            try:
                content = self._read_body(response)
            finally:
                response.release_conn()
                # "Connection: close" asks the server to close after its answer, but it need
                # not say so (RFC 9112 §9.6: SHOULD), and urllib3 hands a connection whose
                # answer was read back to the pool open: the next call would go out on it
                # while the server closes it, and end "may have been processed". The pool
                # is emptied instead (a connection another thread has out is closed when
                # it comes back).
                self._pool.clear()
            status, content_type = response.status, response.headers.get("Content-Type")
            retry_after = response.headers.get("Retry-After")
        except HTTPError as exc:
            raise self._transport_error(exc) from exc
        secrets = (self._token,)
        self.last_response = redact(content.decode("utf-8", "replace"), secrets)[
            :RAW_RESPONSE_CHARS
        ]
        logger.debug("pinpointe: %s answered HTTP %d", what, status)
        wait_s = net.parse_retry_after(retry_after, datetime.now(UTC))
        try:
            reply = decode_reply(status, content_type or "", content, secrets=secrets)
        except ApiUnavailable as exc:
            exc.retry_after_s = wait_s
            raise
        return dataclasses.replace(reply, retry_after_s=wait_s)

    def _read_body(self, response: urllib3.BaseHTTPResponse) -> bytes:
        """Read the answer within the size cap and a wall-clock deadline."""
        deadline = time.monotonic() + 2 * self._config.timeout_s
        chunks: list[bytes] = []
        total = 0
        for chunk in response.stream(64 * 1024):
            total += len(chunk)
            chunks.append(chunk)
            if total > MAX_RESPONSE_BYTES:
                raise ApiError(
                    f"Pinpointe's answer exceeds {MAX_RESPONSE_BYTES} bytes; the request may "
                    "have been processed",
                    status=response.status,
                    definitive=False,
                )
            if time.monotonic() > deadline:
                raise ApiError(
                    f"Pinpointe's answer took longer than {2 * self._config.timeout_s:.0f}s; "
                    "the request may have been processed",
                    status=response.status,
                    definitive=False,
                )
        return b"".join(chunks)

    def _transport_error(self, exc: HTTPError) -> ApiError:
        reason = redact(_root_reason(exc), (self._token,))
        if isinstance(exc, SSLError):
            if _caused_by(exc, ssl.SSLCertVerificationError):
                return ApiError(
                    f"TLS certificate verification failed for {self._where} ({reason}); "
                    "if the server uses a private CA, name it in pinpointe.ca_file"
                )
            return ApiError(f"the TLS handshake with {self._where} failed ({reason})")
        if isinstance(exc, ConnectTimeoutError | NewConnectionError):
            return ApiUnavailable(f"cannot connect to {self._where} ({reason}); nothing was sent")
        if isinstance(exc, ReadTimeoutError):
            return ApiError(
                f"no answer from {self._where} within {self._config.timeout_s:g}s; "
                "the request may have been processed",
                definitive=False,
            )
        return ApiError(
            f"the connection to {self._where} failed after the request was sent ({reason}); "
            "the request may have been processed",
            definitive=False,
        )


def _causes(exc: BaseException) -> Iterator[tuple[int, BaseException]]:
    """Walk an exception's causes with their depth, including urllib3's ``reason`` and the
    exceptions urllib3 wraps in its arguments."""
    seen: set[int] = set()
    queue: list[tuple[int, BaseException]] = [(0, exc)]
    while queue:
        depth, current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield depth, current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        nested += list(current.args)
        queue.extend((depth + 1, item) for item in nested if isinstance(item, BaseException))


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(cause, kind) for _, cause in _causes(exc))


def _root_reason(exc: BaseException) -> str:
    """Return the innermost cause as ``Type: message``, short and without the pool chatter."""
    _, innermost = max(_causes(exc), key=lambda pair: pair[0])
    text = str(innermost) or type(innermost).__name__
    if "(Caused by" in text:
        text = text.split("(Caused by", 1)[1]
    return f"{type(innermost).__name__}: {excerpt(text, 160)}"
