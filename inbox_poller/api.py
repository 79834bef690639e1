"""The Pinpointe JSON API client: submit an async export, check credentials, ask job status.

Pinpointe documents little about its answers (pinpointe-api.md, gaps 3, 5 and 10), so
the parsing is lenient about shapes and strict about meaning:

* a call succeeded only if the HTTP status is 2xx **and** ``status`` is ``SUCCESS``;
* a refusal (``FAILED``/``ERROR``, HTTP 4xx) is *definitive*: no export was created;
* anything else after the request may have left (timeout, dropped connection, 5xx, an
  unreadable body, ``SUCCESS`` without a usable job ID) is *not* definitive: the export
  may exist, so the submit POST is never retried, by us or by urllib3.

The parsing functions are pure (bytes in, values or ``ApiError`` out) and
table-tested; :class:`PinpointeApi` only adds the one HTTPS POST around them.
The API token never appears in a message or a log line: every text taken from
an answer is redacted first, in case the server echoes the request back.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import logging
import re
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError
from urllib3.util.retry import Retry

from inbox_poller import __version__, tls
from inbox_poller.config import PinpointeConfig
from inbox_poller.errors import ApiAuthError, ApiError
from inbox_poller.models import DATE_RE, JOB_ID_RE, STAT_ID_RE, ExportRequest
from inbox_poller.urlpolicy import redact_url

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
"""Upper bound of the connect timeout; the read timeout is ``pinpointe.timeout_s``."""
MAX_RESPONSE_BYTES = 8 * 1024**2
"""API answers are small; a larger one is a misbehaving server, not data."""
EXCERPT_CHARS = 200
"""How much of an unreadable body an error message quotes."""
RAW_RESPONSE_CHARS = 4096
"""How much of the last (redacted) answer is kept for the ledger."""
REDACTED = "***"
NOT_FOUND = "not found"
"""The status :meth:`PinpointeApi.job_status` reports for a job Pinpointe does not know."""

_AUTH_FAILURE = "unable to verify user credentials"
_JOBS_NOT_FOUND = "jobs not found"
_FAILURE_STATUSES = frozenset({"FAILED", "ERROR"})
# normalised key names (lower case, "_" and "-" removed), best first
_JOB_ID_KEYS = ("jobid", "id")
_STATUS_KEYS = ("status", "jobstatus", "state")
_USER_ID_KEYS = ("userid", "id")
_USER_NAME_KEYS = ("username", "name", "useremail")
_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"\s+")


class ApiUnavailable(ApiError):
    """Raised when the request never reached Pinpointe (connection refused, connect timeout,
    name not resolved) or Pinpointe answered HTTP 429: nothing was created; try again later."""

    retryable = True

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, status=status, definitive=True)
        self.retry_after_s = retry_after_s


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


# ---- pure helpers -------------------------------------------------------------------------


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
    """Return the request envelope every Pinpointe method shares (pinpointe-api.md §2)."""
    return {
        "username": username,
        "usertoken": token,
        "requesttype": requesttype,
        "requestmethod": requestmethod,
        "details": dict(details),
    }


def submit_details(request: ExportRequest, notify_email: str) -> dict[str, Any]:
    """Return ``details`` for an async contact-data export; raise ``ApiError`` on bad input.

    Scalars are strings, and unused optional elements are left out rather than sent
    empty, as the method pages ask.
    """
    if not STAT_ID_RE.match(request.stat):
        raise ApiError(f"stat {request.stat!r} is not a stat ID (digits only); nothing was sent")
    details: dict[str, Any] = {"stat": request.stat}
    for name, value in (("startdate", request.startdate), ("enddate", request.enddate)):
        if value is None:
            continue
        if not DATE_RE.match(value) or not _is_calendar_date(value):
            raise ApiError(f"{name} {value!r} is not a YYYYMMDD date; nothing was sent")
        details[name] = value
    details["notify"] = {"type": "email", "value": notify_email}
    return details


def _is_calendar_date(value: str) -> bool:
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        return False
    return True


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


def parse_response(
    status_code: int, content_type: str, body: bytes, *, secrets: Iterable[str] = ()
) -> object:
    """Return ``data`` of a successful answer; raise ``ApiError`` for every other answer."""
    return check_reply(decode_reply(status_code, content_type, body, secrets=secrets))


def _normalise_key(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def _scalar_text(value: object) -> str | None:
    """Return a job-ID-like scalar as text: strings stripped, integral numbers as digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _keyed(obj: Mapping[str, object], wanted: str) -> list[object]:
    return [value for key, value in obj.items() if _normalise_key(str(key)) == wanted]


def _children(data: object) -> list[Mapping[str, object]]:
    """Return the objects one level below *data* (``data.item[...]``, ``data.result``...)."""
    values: list[object] = list(data.values()) if isinstance(data, dict) else []
    if isinstance(data, list):
        values = list(data)
    found: list[Mapping[str, object]] = []
    for value in values:
        if isinstance(value, dict):
            found.append(value)
        elif isinstance(value, list):
            found.extend(item for item in value if isinstance(item, dict))
    return found


def _job_id_candidates(data: object) -> list[str]:
    if (scalar := _scalar_text(data)) is not None:
        return [scalar]
    if isinstance(data, list) and len(data) == 1 and _scalar_text(data[0]) is not None:
        return [str(_scalar_text(data[0]))]
    levels: list[list[Mapping[str, object]]] = [
        [data] if isinstance(data, dict) else [],
        _children(data),
    ]
    for level in levels:
        for key in _JOB_ID_KEYS:
            found = [
                text
                for obj in level
                for value in _keyed(obj, key)
                if (text := _scalar_text(value)) is not None
            ]
            if found:
                return list(dict.fromkeys(found))
    return []


def extract_job_id(data: object) -> str:
    """Return the job ID held by a submit answer's ``data``; raise ``ApiError`` if there is none.

    Accepts a bare string or number, or an object holding it under a key such as
    ``jobid``, ``jobId``, ``job_id`` or ``id`` (case-insensitive), directly or one level
    down (``data.item[0].jobid``). The failure is never definitive: Pinpointe said
    SUCCESS, so the export may exist.
    """
    candidates = _job_id_candidates(data)
    shown = excerpt(json.dumps(data, default=str))
    if not candidates:
        problem = "without a recognisable job ID"
    elif len(candidates) > 1:
        problem = f"with several job IDs ({', '.join(candidates[:5])})"
    elif not JOB_ID_RE.match(candidates[0]):
        problem = f"with an unusable job ID {excerpt(candidates[0], 70)!r}"
    else:
        return candidates[0]
    raise ApiError(
        f"Pinpointe answered SUCCESS {problem} (data: {shown}); the export may exist, "
        "so it is not submitted again",
        definitive=False,
    )


def describe_account(data: object) -> str:
    """Return ``authenticated as NAME (user id N)`` from an ``APITest`` answer, as far as known."""
    objects: list[Mapping[str, object]] = [data] if isinstance(data, dict) else []
    objects += _children(data)
    name = _first_scalar(objects, _USER_NAME_KEYS)
    user_id = _first_scalar(objects, _USER_ID_KEYS)
    text = f"authenticated as {name}" if name else "authenticated"
    return f"{text} (user id {user_id})" if user_id else text


def _first_scalar(objects: Sequence[Mapping[str, object]], keys: Sequence[str]) -> str | None:
    for key in keys:
        for obj in objects:
            for value in _keyed(obj, key):
                if (text := _scalar_text(value)) is not None:
                    return excerpt(text, 80)
    return None


def parse_job_statuses(data: object, job_ids: Sequence[str]) -> dict[str, str]:
    """Map job ID to its lower-cased status from an ``AsyncJobStatus`` answer's ``data``.

    A requested job the answer does not mention is :data:`NOT_FOUND`. An answer with
    no recognisable job at all raises ``ApiError``, because reading it as "none of the
    jobs exists" could make a caller submit an export twice.
    """
    statuses: dict[str, str] = {}
    for job_id, status in _status_pairs(data, job_ids):
        statuses.setdefault(job_id, status.lower())
    if not statuses:
        raise ApiError(
            f"cannot read job statuses from AsyncJobStatus (data: {excerpt(json.dumps(data))})",
            definitive=False,
        )
    for job_id in job_ids:
        statuses.setdefault(job_id, NOT_FOUND)
    return statuses


def _status_pairs(data: object, job_ids: Sequence[str]) -> Iterator[tuple[str, str]]:
    items = ([data] if isinstance(data, dict) else []) + _children(data)
    for item in items:
        job_id = _first_scalar([item], _JOB_ID_KEYS[:1]) or _first_scalar([item], _JOB_ID_KEYS)
        status = _first_scalar([item], _STATUS_KEYS)
        if job_id is not None and status is not None:
            yield job_id, status
    # a single unlabelled status object answers a question about a single job
    if len(job_ids) == 1 and isinstance(data, dict):
        status = _first_scalar([data], _STATUS_KEYS)
        if status is not None and not _first_scalar([data], _JOB_ID_KEYS):
            yield job_ids[0], status
    # or a mapping {"<job id>": "<status>" | {"status": ...}}
    if isinstance(data, dict):
        for key, value in data.items():
            if str(key) in job_ids:
                text = _scalar_text(value) or _first_scalar(_children([value]), _STATUS_KEYS)
                if text is not None:
                    yield str(key), text


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


# ---- the client ---------------------------------------------------------------------------


class _VerifyingAdapter(HTTPAdapter):
    """An adapter that uses our TLS context and never retries (the submit is not idempotent)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        # total=0: no retry of any kind; read=False: re-raise read errors as they are
        super().__init__(max_retries=Retry(total=0, read=False, redirect=False))

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs["ssl_context"] = self._context
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # Verification comes from our context alone: requests would otherwise add
        # certifi's bundle to it (and turn verification off if a caller passed verify=False).
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None


class PinpointeApi:
    """Pinpointe's JSON API over HTTPS (implements ``poller.ExportApi``)."""

    def __init__(
        self,
        config: PinpointeConfig,
        token: str,
        *,
        ca_file: Path | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self._config = config
        self._token = token
        self._timeout = (min(CONNECT_TIMEOUT_S, config.timeout_s), config.timeout_s)
        self._where = redact_url(config.api_url)
        self._session = session if session is not None else requests.Session()
        self._session.trust_env = False  # no ~/.netrc, no proxy variables
        adapter = _VerifyingAdapter(tls.client_context(ca_file))
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self.last_response: str | None = None
        """The last answer's body, redacted and cut short, for the ledger and diagnosis."""

    def submit(self, request: ExportRequest) -> str:
        """POST the async export request once (never retried) and return the job ID.

        :raises ApiError: ``definitive`` when Pinpointe refused the request (or it never
            left), not ``definitive`` when the export may exist.
        """
        details = submit_details(request, self._config.notify_email)
        data = check_reply(self._post("Newsletters", request.method, details))
        job_id = extract_job_id(data)
        logger.info(
            "pinpointe: %s stat=%s accepted as job %s", request.method, request.stat, job_id
        )
        return job_id

    def check(self) -> str:
        """Call ``Authentication``/``APITest``; return a one-line description of the account."""
        data = check_reply(self._post("Authentication", "APITest", {}))
        return describe_account(data)

    def job_status(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Ask ``API``/``AsyncJobStatus`` about *job_ids* (all jobs when empty).

        Returns each job's raw status lower-cased, or :data:`NOT_FOUND` for a job
        Pinpointe no longer knows ("Jobs not found").
        :raises ApiError:
        """
        details: dict[str, Any] = {"jobids": list(job_ids)} if job_ids else {}
        reply = self._post("API", "AsyncJobStatus", details)
        if reply.http_status < 500 and _JOBS_NOT_FOUND in (reply.error or "").lower():
            return dict.fromkeys(job_ids, NOT_FOUND)
        return parse_job_statuses(check_reply(reply), list(job_ids))

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

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
            with self._session.post(
                self._config.api_url,
                data=json.dumps(envelope).encode("utf-8"),
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,  # a redirected POST would be re-sent elsewhere
                stream=True,
            ) as response:
                content = self._read_body(response)
                status, content_type = response.status_code, response.headers.get("Content-Type")
                retry_after = response.headers.get("Retry-After")
        except requests.RequestException as exc:
            raise self._transport_error(exc) from exc
        secrets = (self._token,)
        self.last_response = redact(content.decode("utf-8", "replace"), secrets)[
            :RAW_RESPONSE_CHARS
        ]
        logger.debug("pinpointe: %s answered HTTP %d", what, status)
        wait_s = parse_retry_after(retry_after, datetime.now(UTC))
        try:
            reply = decode_reply(status, content_type or "", content, secrets=secrets)
        except ApiUnavailable as exc:
            exc.retry_after_s = wait_s
            raise
        return dataclasses.replace(reply, retry_after_s=wait_s)

    def _read_body(self, response: requests.Response) -> bytes:
        """Read the answer within the size cap and a wall-clock deadline."""
        deadline = time.monotonic() + 2 * self._config.timeout_s
        chunks: list[bytes] = []
        total = 0
        for chunk in response.iter_content(64 * 1024):
            total += len(chunk)
            chunks.append(chunk)
            if total > MAX_RESPONSE_BYTES:
                raise ApiError(
                    f"Pinpointe's answer exceeds {MAX_RESPONSE_BYTES} bytes; the request may "
                    "have been processed",
                    status=response.status_code,
                    definitive=False,
                )
            if time.monotonic() > deadline:
                raise ApiError(
                    f"Pinpointe's answer took longer than {2 * self._config.timeout_s:.0f}s; "
                    "the request may have been processed",
                    status=response.status_code,
                    definitive=False,
                )
        return b"".join(chunks)

    def _transport_error(self, exc: requests.RequestException) -> ApiError:
        reason = redact(_root_reason(exc), (self._token,))
        if isinstance(exc, requests.exceptions.SSLError):
            if _caused_by(exc, ssl.SSLCertVerificationError):
                return ApiError(
                    f"TLS certificate verification failed for {self._where} ({reason}); "
                    "if the server uses a private CA, name it in pinpointe.ca_file"
                )
            return ApiError(f"the TLS handshake with {self._where} failed ({reason})")
        if isinstance(exc, requests.exceptions.ConnectTimeout) or _caused_by(
            exc, NewConnectionError
        ):
            return ApiUnavailable(f"cannot connect to {self._where} ({reason}); nothing was sent")
        if isinstance(exc, requests.exceptions.Timeout):
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
    exceptions requests wraps in its first argument."""
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
