"""A local Pinpointe for the sandbox and the integration tests.

One threaded HTTPS server on 127.0.0.1 (certificate from :mod:`inbox_poller.localca`)
plays all three parts Pinpointe plays:

* ``POST /apijson.php``: the JSON API (``Authentication``/``APITest``,
  ``Newsletters``/``GetNewsletterContactDataSummaryAsync``, ``API``/``AsyncJobStatus``),
  strict about the envelope, credentials, ``stat``, YYYYMMDD dates and ``notify``;
* ``GET /exports/<token>.json?expires=…&sig=…``: the export file behind a signed link,
  with ETag/Range support and per-job fault injection (:class:`Faults`);
* the notification mail, built by :mod:`inbox_poller.notification_styles` and handed to
  an injected ``deliver(bytes)`` callable (the tests APPEND it to an IMAP folder).

Payloads are written to disk while their SHA-256 is computed, and served from there,
so a 512 MiB export never sits in memory. Nothing here is used in production.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import logging
import secrets
import shutil
import socketserver
import ssl
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.utils import format_datetime, parseaddr
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qs, urlsplit

from inbox_poller.localca import make_local_ca
from inbox_poller.notification_styles import STYLES, MailParams

logger = logging.getLogger(__name__)

DEFAULT_USERNAME = "sim-user"
DEFAULT_TOKEN = "sim-token-7f3a9c1e5b2d4f60a8e1"  # noqa: S105 (a test credential)
DEFAULT_SENDER = "Pinpointe <noreply@mypinpointe.example>"
DEFAULT_AUTHSERV_ID = "mx.inbox.example"
SIM_USER_ID = "4711"
FIRST_JOB_ID = 500_000_001
CONTACT_METHOD = "GetNewsletterContactDataSummaryAsync"
MAX_API_BODY_BYTES = 1024**2
CHUNK_BYTES = 256 * 1024
PADDING_BLOCK_BYTES = 1024**2
SOCKET_TIMEOUT_S = 30.0
DEFAULT_LINK_TTL_S = 7 * 86400.0
_RECORD_BATCH = 10_000
_EPOCH_2025 = 1_735_689_600
_RECORD = (
    '{"subscriberid":"%d","emailaddress":"contact%07d@example.com","event":"%s",'
    '"eventtime":"%d","ipaddress":"192.0.2.%d","url":"%s","statid":"%s"}'
)
_GARBAGE = b'\n"trailing garbage"\n'

_Bytes = bytes  # SimJob has a field named "bytes"

SubmitShape = Literal["object", "string", "number"]
PayloadShape = Literal["object", "array"]


@dataclass
class Faults:
    """How one job's export link misbehaves. Counts are of that job's GET requests."""

    fail_first: int = 0
    """Answer the first N requests with ``fail_status``."""
    fail_status: int = 503
    retry_after: str | None = None
    gone_status: int | None = None
    """Answer every request with this status (403, 404 or 410: an expired link)."""
    redirect_to: str | None = None
    """Redirect every request to this path on the simulator (``/…``) or this URL; the
    job's ``mirror_url`` serves the same file without redirecting."""
    redirect_status: int = 302
    gzip: bool = False
    """Serve the body with ``Content-Encoding: gzip``."""
    truncate_first: int = 0
    """Close the connection after ``truncate_at`` body bytes in the first N bodies."""
    truncate_at: int = 0
    stall_first: int = 0
    """Pause for ``stall_s`` after ``stall_at`` body bytes in the first N bodies."""
    stall_at: int = 0
    stall_s: float = 0.0
    invalid_json: bool = False
    """Append garbage after the JSON document."""
    oversize_bytes: int | None = None
    """Pad the decoded body with whitespace up to this many bytes (still valid JSON)."""
    omit_content_length: bool = False
    """Send no Content-Length; the body ends when the connection closes."""
    ignore_range: bool = False
    """Answer 200 with the whole body even to a Range request."""


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


@dataclass(frozen=True)
class PayloadInfo:
    """What :func:`write_payload` wrote."""

    bytes: int
    sha256: str
    records: int


@dataclass
class SimJob:
    """One accepted export: what was asked, what will be served, and what happened."""

    job_id: str
    token: str
    """The opaque part of the export link."""
    stat: str
    startdate: str | None
    enddate: str | None
    notify_email: str
    created_at: datetime
    expires_at: datetime
    download_url: str
    mirror_url: str
    style: str
    faults: Faults
    payload_path: Path
    status: str = "waiting"
    """What AsyncJobStatus reports: ``waiting``, then ``complete``; tests may set ``failed``."""
    sha256: str = ""
    bytes: int = 0
    records: int = 0
    mail: _Bytes | None = None
    """The first notification sent for this job."""
    mails_sent: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    """Headers (lower-case names) of every GET of the export link."""
    bodies_served: int = 0
    error: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    """Set when the payload is on disk and ``sha256``/``bytes``/``records`` are final."""
    delivered: threading.Event = field(default_factory=threading.Event)

    def wait_ready(self, timeout_s: float = 60.0) -> SimJob:
        if not self.ready.wait(timeout_s):
            raise TimeoutError(f"job {self.job_id}: payload not ready after {timeout_s}s")
        return self

    def wait_delivered(self, timeout_s: float = 60.0) -> _Bytes:
        if not self.delivered.wait(timeout_s) or self.mail is None:
            raise TimeoutError(f"job {self.job_id}: no notification after {timeout_s}s")
        return self.mail


# ---- payloads -----------------------------------------------------------------------------


def _records_text(start: int, end: int, stat: str) -> str:
    return ",\n".join(
        _RECORD
        % (
            1_000_000 + k,
            k,
            "click" if k % 3 == 0 else "open",
            _EPOCH_2025 + k * 37,
            k % 254 + 1,
            f"https://www.example.com/offer/{k % 50}" if k % 3 == 0 else "",
            stat,
        )
        for k in range(start, end)
    )


def write_payload(
    path: Path,
    *,
    stat: str,
    records: int,
    min_bytes: int | None = None,
    shape: PayloadShape = "object",
) -> PayloadInfo:
    """Write a deterministic export of per-contact open/click records to *path*.

    ``shape`` ``object`` is ``{"status":"SUCCESS","data":{"item":[…]}}`` and ``array`` a
    bare list. With *min_bytes*, records are added until the file is at least that large.
    """
    head, tail = (b"[\n", b"\n]\n")
    if shape == "object":
        head, tail = (b'{"status":"SUCCESS","data":{"item":[\n', b"\n]}}\n")
    digest = hashlib.sha256()
    size = count = 0
    with path.open("wb") as out:

        def emit(data: bytes) -> None:
            nonlocal size
            out.write(data)
            digest.update(data)
            size += len(data)

        emit(head)
        while count < records or (min_bytes is not None and size + len(tail) < min_bytes):
            # honour *records* exactly first; beyond it, whole batches until min_bytes
            end = min(count + _RECORD_BATCH, records) if count < records else count + _RECORD_BATCH
            emit((",\n" if count else "").encode() + _records_text(count, end, stat).encode())
            count = end
        emit(tail)
    return PayloadInfo(bytes=size, sha256=digest.hexdigest(), records=count)


class _Segment(NamedTuple):
    """Part of a served body: a file, or a block of bytes repeated ``repeat`` times."""

    path: Path | None
    block: bytes
    repeat: int
    length: int


def _file_segment(path: Path) -> _Segment:
    return _Segment(path, b"", 1, path.stat().st_size)


def _bytes_segment(block: bytes, count: int = 1) -> _Segment:
    return _Segment(None, block, count, len(block) * count)


def _read_segments(segments: list[_Segment], start: int, end: int) -> Iterator[bytes]:
    """Yield bytes ``[start, end)`` of the concatenated segments in chunks."""
    offset = 0
    for segment in segments:
        seg_start, seg_end = max(start, offset), min(end, offset + segment.length)
        if seg_start < seg_end:
            yield from _read_segment(segment, seg_start - offset, seg_end - offset)
        offset += segment.length


def _read_segment(segment: _Segment, start: int, end: int) -> Iterator[bytes]:
    if segment.path is not None:
        with segment.path.open("rb") as source:
            source.seek(start)
            while start < end:
                chunk = source.read(min(CHUNK_BYTES, end - start))
                if not chunk:
                    return
                start += len(chunk)
                yield chunk
        return
    size = len(segment.block)
    while start < end:
        inner = start % size
        chunk = segment.block[inner : min(size, inner + end - start)]
        start += len(chunk)
        yield chunk


def _padding(pad: int, compress: bool) -> list[_Segment]:
    """Whitespace padding; gzip'd as repeated members, so a bomb stays tiny on the wire."""
    full, rest = divmod(pad, PADDING_BLOCK_BYTES)
    segments: list[_Segment] = []
    if full:
        block = b" " * PADDING_BLOCK_BYTES
        segments.append(
            _bytes_segment(gzip.compress(block, 9, mtime=0) if compress else block, full)
        )
    if rest:
        segments.append(
            _bytes_segment(gzip.compress(b" " * rest, 9, mtime=0) if compress else b" " * rest)
        )
    return segments


# ---- the HTTPS server ---------------------------------------------------------------------


class _TlsServer(ThreadingHTTPServer):
    """A threaded HTTP server that does each TLS handshake in the connection's own thread."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, sim: PinpointeSimulator) -> None:
        self.context = context
        self.sim = sim
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would reverse-resolve the address (getfqdn): skip that
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(SOCKET_TIMEOUT_S)
        try:
            connection = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            logger.debug("simulator: TLS handshake failed: %s", exc)
            return
        try:
            _Handler(connection, client_address, self)
        finally:
            connection.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # clients that give up mid-body are expected here; never print tracebacks to stderr
        logger.debug("simulator: connection error", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S
    server: _TlsServer

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug("simulator: %s %s -> %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("simulator: " + format, *args)  # noqa: G003

    def do_POST(self) -> None:
        sim = self.server.sim
        if urlsplit(self.path).path != "/apijson.php":
            self._send(404, b"not found\n", "text/plain")
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_API_BODY_BYTES:
            self._send(413 if length.isdigit() else 411, b"bad length\n", "text/plain")
            return
        raw = self.rfile.read(int(length))
        fault = sim._take_api_fault()
        sim._record_api_call(raw, self.headers.get("Content-Type", ""), fault)
        if fault is not None and fault.delay_s:
            sim._stopping.wait(fault.delay_s)
        if sim._stopping.is_set() or (fault is not None and fault.close):
            self.close_connection = True
            return
        if fault is not None and fault.body is not None:
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else None
            self._send(fault.status, fault.body, fault.content_type, extra)
            return
        status, answer = sim.handle_api(raw)
        self._send(status, json.dumps(answer).encode(), "application/json")

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        segments = parts.path.strip("/").split("/")
        if parts.path == "/click":
            self._click(query.get("u", ""))
        elif len(segments) == 2 and segments[0] in ("exports", "mirror"):
            self._export(segments[1].removesuffix(".json"), query, segments[0] == "mirror")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _click(self, target: str) -> None:
        sim = self.server.sim
        if not target.startswith(sim.base_url + "/"):
            self._send(400, b"bad target\n", "text/plain")
            return
        self._send(302, b"", "text/plain", {"Location": target})

    def _export(self, token: str, query: dict[str, str], mirror: bool) -> None:
        sim = self.server.sim
        job, refusal = sim._authorise_link(token, query.get("expires", ""), query.get("sig", ""))
        if job is None:
            self._send(refusal, f"link refused ({refusal})\n".encode(), "text/plain")
            return
        with sim._lock:
            job.requests.append({key.lower(): value for key, value in self.headers.items()})
            hit = len(job.requests)
        faults = job.faults
        if faults.gone_status is not None:
            self._send(faults.gone_status, b"this link has expired\n", "text/plain")
        elif hit <= faults.fail_first:
            extra = {"Retry-After": faults.retry_after} if faults.retry_after else None
            self._send(faults.fail_status, b"temporarily unavailable\n", "text/plain", extra)
        elif faults.redirect_to is not None and not mirror:
            target = faults.redirect_to
            location = sim.base_url + target if target.startswith("/") else target
            self._send(faults.redirect_status, b"", "text/plain", {"Location": location})
        else:
            self._serve_body(job)

    def _serve_body(self, job: SimJob) -> None:
        sim = self.server.sim
        faults = job.faults
        segments, etag = sim._body(job)
        total = sum(segment.length for segment in segments)
        start, end, status = 0, total, 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        last_modified = format_datetime(job.created_at, usegmt=True)
        if wanted and not faults.ignore_range and if_range in (None, etag, last_modified):
            parsed = _parse_range(wanted, total)
            if parsed is None:
                self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{total}"})
                return
            start, end, status = parsed[0], parsed[1], 206
        with sim._lock:
            job.bodies_served += 1
            body_index = job.bodies_served
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        self.send_header("Accept-Ranges", "bytes")
        if faults.gzip:
            self.send_header("Content-Encoding", "gzip")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{total}")
        if faults.omit_content_length:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(end - start))
        self.end_headers()
        self._write_body(segments, start, end, faults, body_index)

    def _write_body(
        self, segments: list[_Segment], start: int, end: int, faults: Faults, body_index: int
    ) -> None:
        stopping = self.server.sim._stopping
        truncate = faults.truncate_at if body_index <= faults.truncate_first else None
        stall = faults.stall_at if body_index <= faults.stall_first else None
        sent = 0
        for chunk in _read_segments(segments, start, end):
            if stall is not None and sent + len(chunk) > stall:
                self.wfile.write(chunk[: stall - sent])
                chunk, sent = chunk[stall - sent :], stall
                stall = None
                stopping.wait(faults.stall_s)
            if truncate is not None and sent + len(chunk) >= truncate:
                self.wfile.write(chunk[: truncate - sent])
                self.close_connection = True
                return
            self.wfile.write(chunk)
            sent += len(chunk)


def _parse_range(header: str, total: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=a-b`` / ``bytes=a-`` range; None when it cannot be satisfied."""
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip() != "bytes" or not dash or not first.isdigit() or "," in spec:
        return None
    start = int(first)
    end = int(last) + 1 if last.isdigit() else total
    if start >= total or end <= start:
        return None
    return start, min(end, total)


# ---- the simulator --------------------------------------------------------------------------


def _failed(message: str) -> dict[str, Any]:
    return {"status": "FAILED", "errormessage": message}


def _success(data: object) -> dict[str, Any]:
    return {"status": "SUCCESS", "data": data}


def _valid_date(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 8 or not value.isdigit():
        return False
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        return False
    return True


class PinpointeSimulator:
    """A local Pinpointe over real HTTPS; see the module docstring.

    Attributes meant to be changed by tests between calls: ``notification_style``,
    ``payload_records``, ``payload_bytes``, ``payload_shape``, ``submit_shape``,
    ``notify_delay_s``, ``send_notifications``, ``notify_before_response``,
    ``link_ttl_s``, ``dmarc``, ``sender`` and ``deliver``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        username: str = DEFAULT_USERNAME,
        token: str = DEFAULT_TOKEN,
        deliver: Callable[[bytes], None] | None = None,
        ca_dir: Path | None = None,
        notification_style: str = "multipart",
        payload_records: int = 100,
        payload_bytes: int | None = None,
        payload_shape: PayloadShape = "object",
        submit_shape: SubmitShape = "object",
        notify_delay_s: float = 0.0,
    ) -> None:
        self.directory = directory
        self.username = username
        self.token = token
        self.delivered: list[bytes] = []
        self.deliver: Callable[[bytes], None] = deliver or self.delivered.append
        self.ca_dir = ca_dir or directory / "ca"
        self.ca_file = self.ca_dir / "ca.pem"
        """The CA certificate clients must trust (written by :meth:`start`)."""
        self.notification_style = notification_style
        self.payload_records = payload_records
        self.payload_bytes = payload_bytes
        self.payload_shape: PayloadShape = payload_shape
        self.submit_shape: SubmitShape = submit_shape
        self.notify_delay_s = notify_delay_s
        self.send_notifications = True
        self.notify_before_response = False
        """Deliver the mail before answering the submit (a mail that beats the ledger commit)."""
        self.link_ttl_s = DEFAULT_LINK_TTL_S
        self.dmarc: str | None = "pass"
        """The ``dmarc=`` result stamped by the simulated receiving MTA; None for no header."""
        self.authserv_id = DEFAULT_AUTHSERV_ID
        self.sender = DEFAULT_SENDER
        self.jobs: dict[str, SimJob] = {}
        self.api_calls: list[ApiCall] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._secret = secrets.token_bytes(32)
        self._api_faults: deque[ApiFault] = deque()
        self._next_faults: Faults | None = None
        self._next_job = FIRST_JOB_ID
        self._workers: list[threading.Thread] = []
        self._server: _TlsServer | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None

    # ---- life cycle ---------------------------------------------------------------------

    def start(self) -> PinpointeSimulator:
        """Create the CA (once per ``ca_dir``) and start serving on 127.0.0.1, port 0."""
        (self.directory / "payloads").mkdir(parents=True, exist_ok=True)
        ca = make_local_ca(self.ca_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(ca.server_cert, ca.server_key)
        self.ca_file = ca.ca_cert
        self._server = _TlsServer(context, self)
        self._port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="pinpointe-simulator",
            daemon=True,
        )
        self._thread.start()
        logger.debug("simulator: listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, interrupt stalls and delays, and wait for delivery threads."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for worker in self._workers:
            worker.join(timeout=10)
        self._server = None

    def __enter__(self) -> PinpointeSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator was never started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/apijson.php"

    @property
    def host_rule(self) -> str:
        """The ``download.allowed_hosts`` entry that admits this simulator's links."""
        return f"localhost:{self.port}"

    # ---- controls for tests ---------------------------------------------------------------

    def faults_for_next_job(self, faults: Faults) -> None:
        """Give the next accepted export these link faults."""
        with self._lock:
            self._next_faults = faults

    def set_faults(self, job_id: str, faults: Faults) -> None:
        """Replace a job's link faults (its request counters keep counting)."""
        with self._lock:
            self.jobs[job_id].faults = faults

    def queue_api_fault(self, fault: ApiFault) -> None:
        """Make the next API request (of any method) misbehave as *fault* says."""
        with self._lock:
            self._api_faults.append(fault)

    def job(self, job_id: str) -> SimJob:
        with self._lock:
            return self.jobs[job_id]

    def only_job(self) -> SimJob:
        """The single job submitted so far (a test helper)."""
        with self._lock:
            if len(self.jobs) != 1:
                raise AssertionError(f"expected exactly one job, have {sorted(self.jobs)}")
            return next(iter(self.jobs.values()))

    def deliver_notification(self, job_id: str) -> bytes:
        """Build and deliver (again) the notification of *job_id*; return the mail."""
        job = self.job(job_id)
        job.wait_ready()
        mail = self._render_mail(job)
        self.deliver(mail)
        with self._lock:
            job.mails_sent += 1
            if job.mail is None:
                job.mail = mail
            if job.status == "waiting":
                job.status = "complete"
        job.delivered.set()
        return mail

    # ---- the API ----------------------------------------------------------------------------

    def handle_api(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        """Answer one API request body: ``(HTTP status, JSON envelope)``."""
        try:
            envelope = json.loads(raw)
        except ValueError:
            return 400, _failed("Invalid JSON -- the request body is not JSON")
        if not isinstance(envelope, dict):
            return 400, _failed("Invalid JSON -- expected an object")
        for key in ("username", "usertoken", "requesttype", "requestmethod"):
            if not isinstance(envelope.get(key), str) or not envelope[key]:
                return 400, _failed(f"Invalid JSON -- missing: {key}")
        details = envelope.get("details", {})
        if not isinstance(details, dict):
            return 400, _failed("Invalid JSON -- details must be an object")
        user_ok = hmac.compare_digest(envelope["username"].encode(), self.username.encode())
        token_ok = hmac.compare_digest(envelope["usertoken"].encode(), self.token.encode())
        if not (user_ok and token_ok):
            return 401, _failed("Unable to verify user credentials")
        method = (envelope["requesttype"].lower(), envelope["requestmethod"].lower())
        if method == ("authentication", "apitest"):
            return 200, _success({"userid": SIM_USER_ID, "username": self.username})
        if method == ("newsletters", CONTACT_METHOD.lower()):
            return self._submit(details)
        if method == ("api", "asyncjobstatus"):
            return self._job_status(details)
        return 400, _failed("Unknown requesttype or requestmethod")

    def _submit(self, details: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        problem = self._submit_problem(details)
        if problem is not None:
            return 400, _failed(problem)
        job = self._new_job(details)
        if self.notify_before_response:
            self._prepare(job, notify=self.send_notifications, delay_s=0.0)
        else:
            self._spawn(job)
        if self.submit_shape == "string":
            data: object = job.job_id
        elif self.submit_shape == "number":
            data = int(job.job_id)
        else:
            stamp = job.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
            data = {"jobid": job.job_id, "elapsed": "0.012", "timestamp": stamp}
        return 200, _success(data)

    @staticmethod
    def _submit_problem(details: dict[str, Any]) -> str | None:
        unknown = sorted(set(details) - {"stat", "startdate", "enddate", "notify"})
        if unknown:
            return f"Unknown parameter: {unknown[0]}"
        stat = details.get("stat")
        if not isinstance(stat, str) or not stat.isdigit():
            return "Invalid stat: expected a stat ID as a string of digits"
        for name in ("startdate", "enddate"):
            if name in details and not _valid_date(details[name]):
                return f"Invalid {name}: expected YYYYMMDD"
        if details.get("startdate", "") > details.get("enddate", "99999999"):
            return "Invalid date range: startdate is after enddate"
        notify = details.get("notify")
        if not isinstance(notify, dict) or notify.get("type") != "email":
            return "Invalid notify: type must be email"
        value = notify.get("value")
        if not isinstance(value, str) or "@" not in value:
            return "Invalid notify: value must be an e-mail address"
        return None

    def _new_job(self, details: dict[str, Any]) -> SimJob:
        now = datetime.now(UTC).replace(microsecond=0)
        expires = int((now + timedelta(seconds=self.link_ttl_s)).timestamp())
        token = secrets.token_urlsafe(18)
        style = self.notification_style
        if style not in STYLES:
            raise ValueError(f"unknown notification style {style!r}; have {sorted(STYLES)}")
        with self._lock:
            job_id = str(self._next_job)
            self._next_job += 1
            faults, self._next_faults = self._next_faults or Faults(), None
        query = f"expires={expires}&sig={self._sign(token, str(expires))}"
        if STYLES[style].job_id_in_link:
            query += f"&jobid={job_id}"
        job = SimJob(
            job_id=job_id,
            token=token,
            stat=details["stat"],
            startdate=details.get("startdate"),
            enddate=details.get("enddate"),
            notify_email=details["notify"]["value"],
            created_at=now,
            expires_at=datetime.fromtimestamp(expires, UTC),
            download_url=f"{self.base_url}/exports/{token}.json?{query}",
            mirror_url=f"{self.base_url}/mirror/{token}.json?{query}",
            style=style,
            faults=faults,
            payload_path=self.directory / "payloads" / f"{job_id}.json",
        )
        with self._lock:
            self.jobs[job_id] = job
        return job

    def _job_status(self, details: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        wanted = details.get("jobids")
        if wanted is not None and (
            not isinstance(wanted, list) or not all(isinstance(item, str) for item in wanted)
        ):
            return 400, _failed("Invalid jobids: expected an array of job IDs")
        with self._lock:
            jobs = [job for job in self.jobs.values() if wanted is None or job.job_id in wanted]
            items = [
                {
                    "jobid": job.job_id,
                    "status": job.status,
                    "requestmethod": CONTACT_METHOD,
                    "stat": job.stat,
                    "created": str(int(job.created_at.timestamp())),
                }
                for job in jobs
            ]
        if not items:
            return 400, _failed("Jobs not found")
        return 200, _success({"item": items})

    def _take_api_fault(self) -> ApiFault | None:
        with self._lock:
            return self._api_faults.popleft() if self._api_faults else None

    def _record_api_call(self, raw: bytes, content_type: str, fault: ApiFault | None) -> None:
        try:
            envelope = json.loads(raw)
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict):
            envelope = {}
        call = ApiCall(
            requesttype=str(envelope.get("requesttype", "")),
            requestmethod=str(envelope.get("requestmethod", "")),
            details=envelope.get("details"),
            content_type=content_type,
            fault=fault,
        )
        with self._lock:
            self.api_calls.append(call)

    # ---- payloads and notifications -----------------------------------------------------------

    def _spawn(self, job: SimJob) -> None:
        worker = threading.Thread(
            target=self._prepare,
            args=(job, self.send_notifications, self.notify_delay_s),
            name=f"pinpointe-job-{job.job_id}",
            daemon=True,
        )
        with self._lock:
            self._workers.append(worker)
        worker.start()

    def _prepare(self, job: SimJob, notify: bool, delay_s: float) -> None:
        """Write the payload, then (after *delay_s*) deliver the notification."""
        try:
            info = write_payload(
                job.payload_path,
                stat=job.stat,
                records=self.payload_records,
                min_bytes=self.payload_bytes,
                shape=self.payload_shape,
            )
            job.sha256, job.bytes, job.records = info.sha256, info.bytes, info.records
            job.ready.set()
            if notify and not self._stopping.wait(delay_s):
                self.deliver_notification(job.job_id)
        except Exception as exc:  # a failing deliver callback must show in the test, not vanish
            logger.exception("simulator: job %s: preparing or delivering failed", job.job_id)
            job.error = f"{type(exc).__name__}: {exc}"

    def _render_mail(self, job: SimJob) -> bytes:
        domain = parseaddr(self.sender)[1].rpartition("@")[2] or "mypinpointe.example"
        params = MailParams(
            job_id=job.job_id,
            download_url=job.download_url,
            click_url=f"{self.base_url}/click",
            sender=self.sender,
            recipient=job.notify_email,
            message_id=f"<export-{job.job_id}.{job.mails_sent}@{domain}>",
            date=datetime.now(UTC),
            stat=job.stat,
            records=job.records,
            expires_at=job.expires_at,
        )
        message = STYLES[job.style].build(params)
        received = format_datetime(params.date)
        trace = f"Received: from mta1.{domain} by {self.authserv_id}; {received}\r\n"
        if self.dmarc is not None:
            dkim = "pass" if self.dmarc == "pass" else "fail"
            trace += (
                f"Authentication-Results: {self.authserv_id}; dkim={dkim} header.d={domain}; "
                f"spf=pass smtp.mailfrom={domain}; dmarc={self.dmarc} header.from={domain}\r\n"
            )
        return trace.encode("ascii") + message.as_bytes(policy=policy.SMTP)

    # ---- export links -------------------------------------------------------------------------

    def _sign(self, token: str, expires: str) -> str:
        mac = hmac.new(self._secret, f"{token}.{expires}".encode(), hashlib.sha256)
        return mac.hexdigest()[:40]

    def _authorise_link(self, token: str, expires: str, sig: str) -> tuple[SimJob | None, int]:
        """Return the job a signed link names, or None and the status refusing it."""
        with self._lock:
            job = next((job for job in self.jobs.values() if job.token == token), None)
        if job is None or not job.ready.is_set():
            return None, 404
        if not expires.isdigit() or not hmac.compare_digest(sig, self._sign(token, expires)):
            return None, 403
        if int(expires) < datetime.now(UTC).timestamp():
            return None, 410
        return job, 200

    def _body(self, job: SimJob) -> tuple[list[_Segment], str]:
        """Return the segments of the body to serve for *job*'s faults, and its ETag."""
        faults = job.faults
        if faults.gzip:
            segments = [_file_segment(self._gzipped(job))]
        else:
            segments = [_file_segment(job.payload_path)]
        decoded = job.bytes
        if faults.invalid_json:
            segments.append(
                _bytes_segment(gzip.compress(_GARBAGE, mtime=0) if faults.gzip else _GARBAGE)
            )
            decoded += len(_GARBAGE)
        if faults.oversize_bytes is not None and faults.oversize_bytes > decoded:
            segments += _padding(faults.oversize_bytes - decoded, faults.gzip)
        variant = f"{job.sha256}:{faults.gzip}:{faults.invalid_json}:{faults.oversize_bytes}"
        return segments, '"' + hashlib.sha256(variant.encode()).hexdigest()[:32] + '"'

    def _gzipped(self, job: SimJob) -> Path:
        target = job.payload_path.with_suffix(".json.gz")
        with self._lock:
            if not target.exists():
                partial = target.with_suffix(".part")
                with (
                    job.payload_path.open("rb") as source,
                    partial.open("wb") as raw,
                    gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as out,
                ):
                    shutil.copyfileobj(source, out, CHUNK_BYTES)
                partial.replace(target)
        return target
