"""A local Pinpointe for the sandbox and the integration tests.

One threaded HTTPS server on 127.0.0.1 (certificate from :mod:`inbox_poller.sandbox.localca`)
plays all three parts Pinpointe plays:

* ``POST /apijson.php``: the JSON API (``Authentication``/``APITest``,
  ``Newsletters``/``GetNewsletterContactDataSummaryAsync``, ``API``/``AsyncJobStatus``),
  strict about the envelope, credentials, ``stat``, YYYYMMDD dates and ``notify``;
* ``GET /exports/<token>.json?expires=…&sig=…``: the export file behind a signed link,
  with ETag/Range support and per-job fault injection (:class:`.jobs.Faults`);
* the notification mail, built by :mod:`.notifications`, stamped by :mod:`.mta` and
  handed to an injected ``deliver(bytes)`` callable (the tests APPEND it to an IMAP folder);
  :meth:`PinpointeSimulator.deliver_digest` sends one mail for several jobs.

This module holds the simulator's state and the controls the tests use: its jobs, the
API calls and faults, and the mails it sent. The records it keeps are in :mod:`.jobs`
and :mod:`.calls`, the API's request rules in :mod:`.rules`, link signing in
:mod:`.links`, payload files and served bodies in :mod:`.payloads`, and the HTTPS
server in :mod:`.https`. Nothing here is used in production.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import ssl
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from types import TracebackType
from typing import Any

from inbox_poller.sandbox.localca import make_local_ca
from inbox_poller.sandbox.simulator.calls import ApiCall, ApiFault
from inbox_poller.sandbox.simulator.https import TlsServer
from inbox_poller.sandbox.simulator.jobs import Faults, SimJob
from inbox_poller.sandbox.simulator.links import LinkSigner
from inbox_poller.sandbox.simulator.mta import stamp
from inbox_poller.sandbox.simulator.notifications import STYLES, MailParams, build_digest
from inbox_poller.sandbox.simulator.payloads import (
    GARBAGE,
    PayloadShape,
    Segment,
    bytes_segment,
    file_segment,
    gzip_copy,
    padding,
    write_payload,
    write_table_payload,
)
from inbox_poller.sandbox.simulator.rules import (
    CONTACT_METHOD,
    METHODS,
    SENT_METHOD,
    SIM_USER_ID,
    Answer,
    SubmitShape,
    envelope_problem,
    failed,
    interval_s,
    jobids_problem,
    method_problem,
    sent_problem,
    submit_data,
    success,
)

logger = logging.getLogger("inbox_poller.sandbox")

DEFAULT_USERNAME = "sim-user"
DEFAULT_TOKEN = "sim-token-7f3a9c1e5b2d4f60a8e1"  # noqa: S105 (a test credential)
DEFAULT_SENDER = "Pinpointe <noreply@mypinpointe.example>"
DEFAULT_AUTHSERV_ID = "mx.inbox.example"
FIRST_JOB_ID = 500_000_001
DEFAULT_LINK_TTL_S = 7 * 86400.0


def _target_of(method: str, details: dict[str, Any]) -> str:
    """The ID (or IDs, joined by "+") an export request names."""
    value = details[METHODS[method].target]
    return "+".join(value) if isinstance(value, list) else str(value)


def digest_link(job: SimJob) -> str:
    """Return *job*'s link as a digest names it: with its job ID in the query."""
    if "jobid=" in job.download_url:
        return job.download_url
    return f"{job.download_url}&jobid={job.job_id}"


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
        self._by_token: dict[str, SimJob] = {}  # each job's link token: a lookup per request
        self.sends: list[dict[str, str]] = []
        """What GetNewslettersSent lists (items as Pinpointe's page shows them; the tests
        set it); only sends whose ``starttime`` falls in the asked interval are listed."""
        self.sent_calls = 0
        self.unknown_ids: set[str] = {"999999"}
        """IDs (of lists, segments, tags, stats) the simulated account does not have."""
        self.api_calls: list[ApiCall] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._links = LinkSigner()
        self._api_faults: deque[ApiFault] = deque()
        self._next_faults: Faults | None = None
        self._next_job = FIRST_JOB_ID
        self._workers: list[threading.Thread] = []
        self._server: TlsServer | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None

    # ---- life cycle ---------------------------------------------------------------------

    def start(self) -> PinpointeSimulator:
        """Create the CA (once per ``ca_dir``) and start serving on 127.0.0.1, port 0.

        Job IDs continue after those of the payloads already in the directory, so that a
        simulator started again on it (``inbox-poller sandbox`` run twice in one
        ``--dir``) never hands out a job ID the ledger already holds.
        """
        payloads = self.directory / "payloads"
        payloads.mkdir(parents=True, exist_ok=True)
        earlier = [int(p.stem) for p in payloads.iterdir() if p.stem.isdigit()]
        self._next_job = max([self._next_job - 1, *earlier]) + 1
        ca = make_local_ca(self.ca_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(ca.server_cert, ca.server_key)
        self.ca_file = ca.ca_cert
        self._server = TlsServer(context, self)
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

    @property
    def stopping(self) -> threading.Event:
        """Set by :meth:`stop`; the server's stalls and delays wait on it, so they end too."""
        return self._stopping

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

    def deliver_notification(self, job_id: str) -> bytes:
        """Build and deliver (again) the notification of *job_id*; return the mail."""
        job = self.job(job_id)
        job.wait_ready()
        mail = self._render_mail(job)
        self.deliver(mail)
        self._sent(job, mail)
        return mail

    def _sent(self, job: SimJob, mail: bytes) -> None:
        """Record that *mail* announced *job*: the job is complete and delivered."""
        with self._lock:
            job.mails_sent += 1
            if job.mail is None:
                job.mail = mail
            if job.status == "waiting":
                job.status = "complete"
        job.delivered.set()

    def deliver_digest(self, job_ids: Sequence[str]) -> bytes:
        """Build and deliver one digest mail announcing every job of *job_ids*; return it.

        Each job's link gets ``jobid=<job ID>`` in its query (ignored when the file is
        served) unless its style already put it there, so that the link names its job.
        """
        jobs = [self.job(job_id).wait_ready() for job_id in job_ids]
        with self._lock:
            number = sum(job.mails_sent for job in jobs)
        entries = [
            replace(
                self._mail_params(job),
                download_url=digest_link(job),
                message_id=f"<digest-{'-'.join(job_ids)}.{number}@{self._sender_domain()}>",
            )
            for job in jobs
        ]
        mail = self._stamp(build_digest(entries), entries[0].date)
        self.deliver(mail)
        for job in jobs:
            self._sent(job, mail)
        return mail

    # ---- the API ----------------------------------------------------------------------------

    def handle_api(self, raw: bytes) -> Answer:
        """Answer one API request body: ``(HTTP status, JSON envelope)``."""
        try:
            envelope = json.loads(raw)
        except ValueError:
            return 400, failed("Invalid JSON -- the request body is not JSON")
        problem = envelope_problem(envelope)
        if problem is not None:
            return 400, failed(problem)
        details = envelope.get("details", {})
        user_ok = hmac.compare_digest(envelope["username"].encode(), self.username.encode())
        token_ok = hmac.compare_digest(envelope["usertoken"].encode(), self.token.encode())
        if not (user_ok and token_ok):
            return 401, failed("Unable to verify user credentials")
        method = (envelope["requesttype"].lower(), envelope["requestmethod"].lower())
        if method == ("authentication", "apitest"):
            return 200, success({"userid": SIM_USER_ID, "username": self.username})
        for name, spec in METHODS.items():
            if method == (spec.requesttype, name.lower()):
                return self._submit(name, details)
        if method == ("newsletters", SENT_METHOD.lower()):
            return self._newsletters_sent(details)
        if method == ("api", "asyncjobstatus"):
            return self._job_status(details)
        return 400, failed("Unknown requesttype or requestmethod")

    def _newsletters_sent(self, details: dict[str, Any]) -> Answer:
        problem = sent_problem(details)
        if problem is not None:
            return 400, failed(problem)
        since = datetime.now(UTC).timestamp() - interval_s(details)
        with self._lock:
            self.sent_calls += 1
            recent = [s for s in self.sends if int(s.get("starttime", "0")) >= since]
        pagination = details.get("pagination", {})
        start = int(pagination.get("next", "0"))
        limit = int(pagination.get("limit", "0")) or len(recent) or 1
        page = recent[start : start + limit]
        following = start + limit if start + limit < len(recent) else 0
        return 200, success({"item": page, "pagination": {"next": str(following)}})

    def _submit(self, name: str, details: dict[str, Any]) -> Answer:
        problem = method_problem(name, details, frozenset(self.unknown_ids))
        if problem is not None:
            return 400, failed(problem)
        job = self._new_job(details, name)
        if self.notify_before_response:
            self._prepare(job, notify=self.send_notifications, delay_s=0.0)
        else:
            self._spawn(job)
        return 200, success(submit_data(job.job_id, job.created_at, self.submit_shape))

    def _new_job(self, details: dict[str, Any], method: str = CONTACT_METHOD) -> SimJob:
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
        fmt = str(details.get("format", "json"))
        query = f"expires={expires}&sig={self._links.sign(token, str(expires))}"
        if STYLES[style].job_id_in_link:
            query += f"&jobid={job_id}"
        job = SimJob(
            job_id=job_id,
            token=token,
            stat=_target_of(method, details),
            startdate=details.get("startdate"),
            enddate=details.get("enddate"),
            notify_email=details["notify"]["value"],
            created_at=now,
            expires_at=datetime.fromtimestamp(expires, UTC),
            download_url=f"{self.base_url}/exports/{token}.{fmt}?{query}",
            mirror_url=f"{self.base_url}/mirror/{token}.{fmt}?{query}",
            style=style,
            faults=faults,
            payload_path=self.directory / "payloads" / f"{job_id}.{fmt}",
            method=method,
            format=fmt,
            details=dict(details),
        )
        with self._lock:
            self.jobs[job_id] = job
            self._by_token[job.token] = job
        return job

    def _job_status(self, details: dict[str, Any]) -> Answer:
        problem = jobids_problem(details)
        if problem is not None:
            return 400, failed(problem)
        wanted = details.get("jobids")
        with self._lock:
            jobs = [job for job in self.jobs.values() if wanted is None or job.job_id in wanted]
            items = [
                {
                    "jobid": job.job_id,
                    "status": job.status,
                    "requestmethod": job.method,
                    "stat": job.stat,
                    "created": str(int(job.created_at.timestamp())),
                }
                for job in jobs
            ]
        if not items:
            return 400, failed("Jobs not found")
        return 200, success({"item": items})

    def receive_api_call(self, raw: bytes, content_type: str, peer: str) -> ApiFault | None:
        """Record one API request (from *peer*, ``host:port``) and return the fault queued
        for it, if any."""
        fault = self._take_api_fault()
        self._record_api_call(raw, content_type, fault, peer)
        return fault

    def _take_api_fault(self) -> ApiFault | None:
        with self._lock:
            return self._api_faults.popleft() if self._api_faults else None

    def _record_api_call(
        self, raw: bytes, content_type: str, fault: ApiFault | None, peer: str
    ) -> None:
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
            peer=peer,
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
            if job.method == CONTACT_METHOD and job.format == "json":
                info = write_payload(
                    job.payload_path,
                    stat=job.stat,
                    records=self.payload_records,
                    min_bytes=self.payload_bytes,
                    shape=self.payload_shape,
                )
            else:
                info = write_table_payload(
                    job.payload_path,
                    method=job.method,
                    target=job.stat,
                    fmt=job.format,
                    records=self.payload_records,
                )
            job.sha256, job.bytes, job.records = info.sha256, info.bytes, info.records
            job.ready.set()
            if notify and not self._stopping.wait(delay_s):
                self.deliver_notification(job.job_id)
        except Exception as exc:  # a failing deliver callback must show in the test, not vanish
            logger.exception("simulator: job %s: preparing or delivering failed", job.job_id)
            job.error = f"{type(exc).__name__}: {exc}"

    def _sender_domain(self) -> str:
        return parseaddr(self.sender)[1].rpartition("@")[2] or "mypinpointe.example"

    def _mail_params(self, job: SimJob) -> MailParams:
        return MailParams(
            job_id=job.job_id,
            download_url=job.download_url,
            click_url=f"{self.base_url}/click",
            sender=self.sender,
            recipient=job.notify_email,
            message_id=f"<export-{job.job_id}.{job.mails_sent}@{self._sender_domain()}>",
            date=datetime.now(UTC),
            stat=job.stat,
            records=job.records,
            expires_at=job.expires_at,
        )

    def _stamp(self, message: EmailMessage, date: datetime) -> bytes:
        return stamp(
            message,
            domain=self._sender_domain(),
            date=date,
            authserv_id=self.authserv_id,
            dmarc=self.dmarc,
        )

    def _render_mail(self, job: SimJob) -> bytes:
        params = self._mail_params(job)
        return self._stamp(STYLES[job.style].build(params), params.date)

    # ---- export links -------------------------------------------------------------------------

    def authorise_link(self, token: str, expires: str, sig: str) -> tuple[SimJob | None, int]:
        """Return the job a signed link names, or None and the status refusing it."""
        with self._lock:
            job = self._by_token.get(token)
        if job is None or not job.ready.is_set():
            return None, 404
        refusal = self._links.refusal(token, expires, sig)
        if refusal is not None:
            return None, refusal
        return job, 200

    def record_link_request(self, job: SimJob, headers: dict[str, str]) -> int:
        """Record one GET of *job*'s link (lower-case header names); return its number."""
        with self._lock:
            job.requests.append(headers)
            return len(job.requests)

    def count_body_served(self, job: SimJob) -> int:
        """Count one more body of *job* on its way out; return its number."""
        with self._lock:
            job.bodies_served += 1
            return job.bodies_served

    def served_body(self, job: SimJob) -> tuple[list[Segment], str]:
        """Return the segments of the body to serve for *job*'s faults, and its ETag."""
        faults = job.faults
        if faults.replace_body is not None:
            tag = hashlib.sha256(faults.replace_body).hexdigest()[:32]
            return [bytes_segment(faults.replace_body, compress=faults.gzip)], f'"{tag}"'
        source = gzip_copy(job.payload_path, self._lock) if faults.gzip else job.payload_path
        segments = [file_segment(source)]
        decoded = job.bytes
        if faults.invalid_json:
            segments.append(bytes_segment(GARBAGE, compress=faults.gzip))
            decoded += len(GARBAGE)
        if faults.oversize_bytes is not None and faults.oversize_bytes > decoded:
            segments += padding(faults.oversize_bytes - decoded, faults.gzip)
        variant = f"{job.sha256}:{faults.gzip}:{faults.invalid_json}:{faults.oversize_bytes}"
        return segments, '"' + hashlib.sha256(variant.encode()).hexdigest()[:32] + '"'
