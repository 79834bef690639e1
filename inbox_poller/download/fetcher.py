"""The safe HTTPS downloader: allow-listed hosts, pinned public addresses, validated JSON.

One download is one or more *tries* of the same URL (docs/reliability.md §3, §4.1):

* before any connection, the URL and every redirect target are checked and their host's
  addresses validated and pinned (``addresses.PinnedConnections``);
* the body streams in bounded memory, with (connect, read) timeouts and a wall-clock
  deadline, into reused buffers that two helper threads take in order
  (``spool.Spool``): one hashes (SHA-256) and writes to the sink, the other runs
  ``fastcheck.FastCheck`` (simdjson); a payload the fast check leaves undecided is then
  validated by ijson, the authority (``validation.validate``), read back from the sink
  (``PayloadSink.read_back``);
* 5xx, 429, resets, timeouts, stalls and short bodies are retried from byte zero with
  back-off (``failures``); 403/404/410 mean the link expired.

urllib3 is used directly rather than through requests: ``requests.Session.send`` reads
the whole body of a 3xx response into memory even with ``allow_redirects=False``
(``resolve_redirects(yield_requests=True)`` calls ``resp.content``), and the Session's
cookies, ``.netrc`` and proxy environment are exactly what a download must not use.
A bare urllib3 pool has none of them.
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from urllib3 import BaseHTTPResponse, Timeout
from urllib3.exceptions import HTTPError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util import parse_url

from inbox_poller import __version__
from inbox_poller.download import formats, validation
from inbox_poller.download.addresses import PinnedConnections, Resolver, system_resolver
from inbox_poller.download.failures import (
    RetryableFailure,
    describe,
    is_certificate_failure,
    status_problem,
)
from inbox_poller.download.formats import FormatCheck
from inbox_poller.download.shape import Shape
from inbox_poller.download.spool import Spool
from inbox_poller.download.validation import CountingAbandoned
from inbox_poller.errors import (
    ArchiveError,
    DownloadError,
    DownloadTransient,
    PayloadInvalid,
    PayloadTooLarge,
)
from inbox_poller.models import DownloadResult
from inbox_poller.net import client_context
from inbox_poller.ports import PayloadSink
from inbox_poller.urlpolicy import redact_url

if TYPE_CHECKING:
    from inbox_poller.config import DownloadConfig

logger = logging.getLogger("inbox_poller.download")

MAX_REDIRECTS = 3
CHUNK_BYTES = 1 << 20
"""Bytes per network read: large, so the per-read Python overhead stays negligible."""
_MIN_PIECE_BYTES = 1 << 12
MAX_RETRY_AFTER_S = 300.0
MAX_BACKOFF_S = 60.0
_PAUSE_SLICE_S = 0.25
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})
_HEADERS = {
    "User-Agent": f"inbox-poller/{__version__}",
    "Accept": "application/json, */*;q=0.5",
    "Accept-Encoding": "gzip",
}


@dataclass
class _Clock:
    """The download's wall-clock deadline and the daemon's stop request."""

    deadline_s: float
    stop: threading.Event | None
    started: float

    def remaining(self) -> float:
        return self.started + self.deadline_s - time.monotonic()

    def check(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise DownloadTransient("stopped")
        if self.remaining() <= 0:
            raise DownloadTransient(f"the download deadline ({self.deadline_s:g} s) passed")


def _encoding(response: BaseHTTPResponse) -> str:
    """The response's ``Content-Encoding``, trimmed and lower-cased ("" when absent)."""
    return str(response.headers.get("Content-Encoding", "")).strip().lower()


def _reader(response: BaseHTTPResponse) -> tuple[Callable[[memoryview], int], bool]:
    """``readinto`` for the decoded body, into the caller's buffer; and whether it reads
    the body as sent (then the bytes read are the bytes received).

    An uncompressed body is read from the ``http.client`` response under urllib3's, which
    would allocate a fresh ``bytes`` per read and copy it once more; a compressed one
    goes through urllib3's decoder and is copied into the buffer.
    """
    encoding = _encoding(response)
    raw = getattr(response, "_fp", None)
    if encoding in ("", "identity") and isinstance(raw, http.client.HTTPResponse):
        return raw.readinto, True
    chunks = response.stream(CHUNK_BYTES, decode_content=True)

    def read_decoded(buffer: memoryview) -> int:
        chunk = next(chunks, b"")  # at most CHUNK_BYTES (urllib3 buffers the rest)
        buffer[: len(chunk)] = chunk
        return len(chunk)

    return read_decoded, False


def _piece_bytes(response: BaseHTTPResponse) -> int:
    """The size of the spool's buffers: ``CHUNK_BYTES``, or less for a body sent as it is
    whose declared length is less (a fresh buffer is zeroed for each download: 1 MiB for
    a 100 KB payload cost more than reading it)."""
    encoding = _encoding(response)
    declared = response.length_remaining
    if declared is None or encoding not in ("", "identity"):
        return CHUNK_BYTES
    return min(max(declared, _MIN_PIECE_BYTES), CHUNK_BYTES)


def _stream_body(response: BaseHTTPResponse, spool: Spool, max_bytes: int, clock: _Clock) -> int:
    """Read the decoded body into the spool, checking the size cap, the deadline and the
    stop request before each read; return its size. Raise RetryableFailure if it ends short
    of its Content-Length."""
    declared = response.length_remaining  # None when chunked or absent
    readinto, as_sent = _reader(response)
    decoded = 0
    while True:
        clock.check()
        buffer = spool.buffer()
        size = readinto(buffer)
        if not size:
            break
        decoded += size
        if decoded > max_bytes:
            raise PayloadTooLarge(f"the payload exceeds download.max_bytes ({max_bytes})")
        spool.put(size)
        if as_sent and decoded == declared:
            break  # all of it: a further read would only take a buffer to learn so
    clock.check()  # a read cut short by a stop request is not the end
    received = decoded if as_sent else response.tell()
    if declared is not None and received != declared:
        raise RetryableFailure(f"the body ended after {received} of {declared} bytes")
    return decoded


def _keeps_alive(response: BaseHTTPResponse) -> bool:
    """Whether the connection of *response*, whose body was read without a failure, may
    carry another request: the body was read to its end (``http.client`` closes the
    response then) and the server did not announce that it closes the connection."""
    raw = getattr(response, "_fp", None)
    return isinstance(raw, http.client.HTTPResponse) and raw.isclosed() and not raw.will_close


@dataclass(frozen=True)
class _Fetched:
    shape: Shape
    sha256: str
    size: int
    final_url: str


class SafeDownloader:
    """Download allow-listed HTTPS payloads safely (``ports.Downloader``).

    One instance serves one thread at a time. The sink is written from a helper thread
    (never concurrently, each piece a memoryview valid during the call only),
    ``sink.restart()`` is called before each retry, and
    ``sink.read_back()`` when the fast check leaves the payload to ijson.
    """

    def __init__(
        self,
        config: DownloadConfig,
        *,
        ca_file: Path | None = None,
        resolver: Resolver | None = None,
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
    ) -> None:
        self._config = config
        self._connections = PinnedConnections(
            config.host_rules,
            allow_private=config.allow_private_addresses,
            context=client_context(ca_file),
            resolver=resolver or system_resolver,
        )
        self._sleep = sleep
        self._stop = stop

    def download(self, url: str, sink: PayloadSink, *, expected: str = "json") -> DownloadResult:
        """Fetch *url* into *sink*, validating the payload to its end (``ports.Downloader``);
        *expected* is the format requested (``download.formats``).

        A failure is raised, not logged: the caller logs it once, with its export.
        """
        clock = _Clock(self._config.deadline_s, self._stop, time.monotonic())
        shown = redact_url(url)
        # the archiver logs the start at INFO, with the export and its attempt
        logger.debug("download %s: starting", shown)
        tries = failures = 0
        with self._connections.stop_watch(self._stop):
            try:
                while True:
                    tries += 1
                    try:
                        fetched = self._try(url, sink, clock, shown, expected)
                        return self._result(fetched, shown, tries, clock)
                    except RetryableFailure as exc:
                        failures += 1
                        self._before_retry(exc, shown, failures, clock)
                    sink.restart()
            finally:
                self._connections.finish()

    def close(self) -> None:
        """Close idle connections; never raises."""
        self._connections.close()

    def _before_retry(
        self, exc: RetryableFailure, shown: str, failures: int, clock: _Clock
    ) -> None:
        """Wait before the next try, or raise DownloadTransient when none is left."""
        delay = self._retry_delay(exc, failures)
        if failures > self._config.retries:
            error = DownloadTransient(f"{exc.reason} (after {failures} failed tries)")
        elif delay >= clock.remaining():
            error = DownloadTransient(
                f"{exc.reason} (a retry in {delay:.0f} s would pass the deadline)"
            )
        else:
            logger.warning(
                "download %s: try failed (%s); retry %d of %d in %.1f s",
                shown,
                exc.reason,
                failures,
                self._config.retries,
                delay,
            )
            self._pause(delay, clock)
            return
        raise error from exc

    def _retry_delay(self, exc: RetryableFailure, failures: int) -> float:
        if exc.retry_after is not None:
            return min(exc.retry_after, MAX_RETRY_AFTER_S)
        ceiling = min(self._config.backoff_s * 2.0 ** (failures - 1), MAX_BACKOFF_S)
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # jitter spreads a herd of clients

    def _pause(self, delay: float, clock: _Clock) -> None:
        # in slices, so a stop request is noticed while backing off
        while delay > 0:
            clock.check()
            step = min(delay, _PAUSE_SLICE_S)
            self._sleep(step)
            delay -= step
        clock.check()

    def _result(self, fetched: _Fetched, shown: str, tries: int, clock: _Clock) -> DownloadResult:
        elapsed = time.monotonic() - clock.started
        # debug: the archived line (inbox_poller.loop) gives the same facts at INFO, so a
        # download is reported once there (one line per step)
        logger.debug(
            "download %s: %d bytes, sha256 %s, top level %s, %s records, %d tries, %.1f s",
            shown,
            fetched.size,
            fetched.sha256,
            fetched.shape.top_level,
            fetched.shape.records,
            tries,
            elapsed,
            extra={
                "bytes": fetched.size,
                "sha256": fetched.sha256,
                "records": fetched.shape.records,
                "duration_s": round(elapsed, 3),
            },
        )
        return DownloadResult(
            bytes=fetched.size,
            sha256=fetched.sha256,
            records=fetched.shape.records,
            top_level=fetched.shape.top_level,
            final_url=redact_url(fetched.final_url),
            attempts=tries,
            elapsed_s=elapsed,
            format=fetched.shape.format,
        )

    def _try(
        self, url: str, sink: PayloadSink, clock: _Clock, shown: str, expected: str = "json"
    ) -> _Fetched:
        """One try: follow redirects, then stream, store and validate the body."""
        response, final_url = self._open(url, clock)
        check = FormatCheck(expected)
        spool = Spool(sink.write, check, chunk_bytes=_piece_bytes(response))
        reusable = False
        try:
            size = _stream_body(response, spool, self._config.max_bytes, clock)
            digest = spool.finish()
            reusable = _keeps_alive(response)
        except (HTTPError, OSError, http.client.HTTPException) as exc:
            clock.check()  # a read cut short by a stop request
            raise RetryableFailure(describe(exc)) from exc
        finally:
            spool.close()
            if reusable:
                response.release_conn()  # back to its pool, for the next request
            else:
                response.close()  # and its connection
        arrived = check.arrived()
        if arrived != "json":
            shape = formats.validate_stored(arrived, sink.read_back)
        else:
            shape = check.fast_shape() or self._validate_written(sink, clock, shown, check.reason)
        return _Fetched(shape, digest, size, final_url)

    def _validate_written(
        self, sink: PayloadSink, clock: _Clock, shown: str, reason: str | None
    ) -> Shape:
        """Validate the stored payload with ijson, the authority; raise PayloadInvalid.

        Counting builds each record; one over ``MAX_ITEM_BYTES`` makes ijson validate
        the payload again without counting (``records`` None), from the same bytes.
        """
        logger.info("download %s: fast check undecided (%s); validating with ijson", shown, reason)
        try:
            with sink.read_back() as stream:

                def read(size: int) -> bytes:
                    clock.check()
                    return stream.read(size)

                try:
                    return validation.validate(read)
                except CountingAbandoned:
                    logger.info(
                        "download %s: an item is over %d bytes; not counting",
                        shown,
                        validation.MAX_ITEM_BYTES,
                    )
                    stream.seek(0)
                    return validation.validate(read, count=False)
        except OSError as exc:
            raise ArchiveError(f"cannot read the payload back: {exc}") from exc

    def _open(self, url: str, clock: _Clock) -> tuple[BaseHTTPResponse, str]:
        """Request *url*, following up to MAX_REDIRECTS redirects, each one re-checked."""
        seen = {url}
        for _ in range(MAX_REDIRECTS + 1):
            response = self._request(url, clock)
            if response.status not in _REDIRECT_STATUSES:
                return self._accept(response), url
            location = response.headers.get("Location")
            response.close()  # never read: a redirect body may be anything
            if not location:
                raise DownloadError(f"HTTP {response.status} redirect without a Location")
            url = urljoin(url, location)
            if url in seen:
                raise DownloadError(f"redirect loop at {redact_url(url)}")
            seen.add(url)
        raise DownloadError(f"more than {MAX_REDIRECTS} redirects")

    def _request(self, url: str, clock: _Clock) -> BaseHTTPResponse:
        """Send the GET; a request that fails on a reused idle connection (the server
        may have ended it as the request left) is sent once more, at once, on a new one."""
        clock.check()
        pool = self._connections.pool_for(url)
        sent_again = False
        while True:
            remaining = max(clock.remaining(), 0.001)
            timeout = Timeout(
                connect=min(self._config.connect_timeout_s, remaining),
                read=min(self._config.read_timeout_s, remaining),
            )
            try:
                return pool.urlopen(
                    "GET",
                    parse_url(url).request_uri,
                    headers=_HEADERS,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    decode_content=True,
                    timeout=timeout,
                )
            except (HTTPError, OSError, http.client.HTTPException) as exc:
                clock.check()
                if is_certificate_failure(exc):
                    raise DownloadError(f"{pool.host}: {describe(exc)}") from exc  # not transient
                stale = pool.reused and not isinstance(exc, TimeoutError | Urllib3Timeout)
                if stale and not sent_again:
                    logger.debug("download %s: a kept connection had ended; a new one", pool.host)
                    sent_again = True
                    continue
                raise RetryableFailure(describe(exc)) from exc

    def _accept(self, response: BaseHTTPResponse) -> BaseHTTPResponse:
        """Return a 200 response whose headers allow reading; close it and raise otherwise."""
        retry_after = response.headers.get("Retry-After")
        problem = status_problem(response.status, retry_after) or self._header_problem(response)
        if problem is not None:
            response.close()
            raise problem
        return response

    def _header_problem(self, response: BaseHTTPResponse) -> Exception | None:
        encoding = _encoding(response)
        if encoding not in _ENCODINGS:
            return PayloadInvalid(f"unsupported Content-Encoding {encoding!r}")
        declared = response.length_remaining
        limit = self._config.max_bytes
        if encoding in ("", "identity") and declared is not None and declared > limit:
            return PayloadTooLarge(
                f"Content-Length {declared} exceeds download.max_bytes ({limit})"
            )
        return None
