"""The simulator's HTTPS front: a threaded TLS server on 127.0.0.1 and its handler.

The handler only speaks HTTP: it reads requests, asks the :class:`Simulator` behind it
what to answer (API envelopes, link checks, the body to serve), and writes the answer
with the job's :class:`~.jobs.Faults` applied on the wire (failures, redirects, Range,
stalls, truncation). Nothing here is used in production.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from email.utils import format_datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from inbox_poller.sandbox.simulator.calls import ApiFault
from inbox_poller.sandbox.simulator.jobs import Faults, SimJob
from inbox_poller.sandbox.simulator.payloads import Segment, read_segments
from inbox_poller.sandbox.simulator.rules import Answer
from inbox_poller.sandbox.tlsserver import LoopbackHandler, LoopbackTlsServer

logger = logging.getLogger("inbox_poller.sandbox")

MAX_API_BODY_BYTES = 1024**2
_CONTENT_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "xml": "application/xml",
}


class Simulator(Protocol):
    """What the handler asks of the simulator it fronts (the ``PinpointeSimulator``)."""

    @property
    def base_url(self) -> str: ...

    @property
    def stopping(self) -> threading.Event:
        """Set when the simulator stops; stalls and delays wait on it, so they end too."""
        ...

    def receive_api_call(self, raw: bytes, content_type: str, peer: str) -> ApiFault | None:
        """Record one API request (from *peer*, ``host:port``) and return the fault queued
        for it, if any."""
        ...

    def handle_api(self, raw: bytes) -> Answer:
        """Answer one API request body: ``(HTTP status, JSON envelope)``."""
        ...

    def authorise_link(self, token: str, expires: str, sig: str) -> tuple[SimJob | None, int]:
        """Return the job a signed link names, or None and the status refusing it."""
        ...

    def record_link_request(self, job: SimJob, headers: dict[str, str]) -> int:
        """Record one GET of *job*'s link; return its number."""
        ...

    def count_body_served(self, job: SimJob) -> int:
        """Count one more body of *job* on its way out; return its number."""
        ...

    def served_body(self, job: SimJob) -> tuple[list[Segment], str]:
        """Return the segments of the body to serve for *job*'s faults, and its ETag."""
        ...


class TlsServer(LoopbackTlsServer):
    """The simulator's HTTPS server: its handler asks *sim* what to answer."""

    def __init__(self, context: ssl.SSLContext, sim: Simulator) -> None:
        self.sim = sim
        super().__init__(context, _Handler, "simulator")


def _retry_after(value: str | None) -> dict[str, str] | None:
    return {"Retry-After": value} if value else None


class _Handler(LoopbackHandler):
    server: TlsServer

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug("simulator: %s %s -> %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("simulator: " + format, *args)  # noqa: G003

    def do_POST(self) -> None:
        sim = self.server.sim
        if urlsplit(self.path).path != "/apijson.php":
            self._send_text(404, b"not found\n")
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_API_BODY_BYTES:
            self._send_text(413 if length.isdigit() else 411, b"bad length\n")
            return
        raw = self.rfile.read(int(length))
        host, port = self.client_address[:2]
        fault = sim.receive_api_call(raw, self.headers.get("Content-Type", ""), f"{host}:{port}")
        if fault is not None and fault.delay_s:
            sim.stopping.wait(fault.delay_s)
        if sim.stopping.is_set() or (fault is not None and fault.close):
            self.close_connection = True
            return
        if fault is not None and fault.body is not None:
            extra = _retry_after(fault.retry_after)
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
            token = segments[1].rsplit(".", 1)[0] if "." in segments[1] else segments[1]
            self._export(token, query, segments[0] == "mirror")
        else:
            self._send_text(404, b"not found\n")

    def _send_text(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self._send(status, body, "text/plain", headers)

    def _click(self, target: str) -> None:
        if not target.startswith(self.server.sim.base_url + "/"):
            self._send_text(400, b"bad target\n")
            return
        self._send_text(302, b"", {"Location": target})

    def _export(self, token: str, query: dict[str, str], mirror: bool) -> None:
        sim = self.server.sim
        job, refusal = sim.authorise_link(token, query.get("expires", ""), query.get("sig", ""))
        if job is None:
            self._send_text(refusal, f"link refused ({refusal})\n".encode())
            return
        headers = {key.lower(): value for key, value in self.headers.items()}
        hit = sim.record_link_request(job, headers)
        faults = job.faults
        if faults.gone_status is not None:
            self._send_text(faults.gone_status, b"this link has expired\n")
        elif hit <= faults.fail_first:
            extra = _retry_after(faults.retry_after)
            self._send_text(faults.fail_status, b"temporarily unavailable\n", extra)
        elif faults.redirect_to is not None and not mirror:
            target = faults.redirect_to
            location = sim.base_url + target if target.startswith("/") else target
            self._send_text(faults.redirect_status, b"", {"Location": location})
        else:
            self._serve_body(job)

    def _serve_body(self, job: SimJob) -> None:
        sim = self.server.sim
        faults = job.faults
        segments, etag = sim.served_body(job)
        total = sum(segment.length for segment in segments)
        start, end, status = 0, total, 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        last_modified = format_datetime(job.created_at, usegmt=True)
        if wanted and not faults.ignore_range and if_range in (None, etag, last_modified):
            parsed = _parse_range(wanted, total)
            if parsed is None:
                self._send_text(416, b"", {"Content-Range": f"bytes */{total}"})
                return
            start, end, status = parsed[0], parsed[1], 206
        body_index = sim.count_body_served(job)
        self.send_response(status)
        self.send_header("Content-Type", _CONTENT_TYPES.get(job.format, "application/json"))
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
        self, segments: list[Segment], start: int, end: int, faults: Faults, body_index: int
    ) -> None:
        stopping = self.server.sim.stopping
        truncate = faults.truncate_at if body_index <= faults.truncate_first else None
        stall = faults.stall_at if body_index <= faults.stall_first else None
        sent = 0
        for chunk in read_segments(segments, start, end):
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
