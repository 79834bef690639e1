"""The simulator's export jobs: what was asked, what is served, and how the link misbehaves.

A :class:`SimJob` is created for every accepted submit and read by the tests; its
:class:`Faults` say what the export link does wrong on the wire. Nothing here is used
in production.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

_Bytes = bytes  # SimJob has a field named "bytes"


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
    replace_body: bytes | None = None
    """Serve these bytes instead of the payload (an HTML page, a truncated CSV, an XML
    bomb: the red-team payloads)."""


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
    method: str = "GetNewsletterContactDataSummaryAsync"
    format: str = "json"
    """The payload format requested (``details.format``, default ``json``)."""
    details: dict[str, object] = field(default_factory=dict)
    """The request's ``details``, as received."""
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
