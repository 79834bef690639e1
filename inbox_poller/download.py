"""The safe HTTPS downloader: allow-listed hosts, pinned public addresses, streamed validation.

One download is one or more *tries* of the same URL (reliability.md 3, 4.1):

* before any connection, the URL and every redirect target pass ``urlpolicy.check_url``,
  the host is resolved once, and every address it resolves to must be public (or
  private/loopback with ``allow_private_addresses``); the TCP connection then goes to
  those validated addresses only, while SNI, the Host header and the certificate check
  use the host name (so a second, rebinding DNS answer is never used);
* the body streams through SHA-256, the sink and ijson's C parser in one pass, in
  bounded memory, with (connect, read) timeouts and a wall-clock deadline;
* 5xx, 429, resets, timeouts, stalls and short bodies are retried from byte zero with
  back-off; 403/404/410 mean the link expired.

urllib3 is used directly rather than through requests: ``requests.Session.send`` reads
the whole body of a 3xx response into memory even with ``allow_redirects=False``
(``resolve_redirects(yield_requests=True)`` calls ``resp.content``), and the Session's
cookies, ``.netrc`` and proxy environment are exactly what a download must not use.
A bare urllib3 pool has none of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import ipaddress
import logging
import queue
import random
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urljoin

import ijson
from urllib3 import BaseHTTPResponse, HTTPSConnectionPool, Timeout
from urllib3.connection import HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.util import parse_url
from urllib3.util.connection import create_connection

from inbox_poller import __version__
from inbox_poller.errors import (
    ArchiveError,
    DownloadError,
    DownloadRefused,
    DownloadTransient,
    InboxPollerError,
    LinkExpired,
    PayloadInvalid,
    PayloadTooLarge,
)
from inbox_poller.models import DownloadResult, utc_now
from inbox_poller.tls import client_context
from inbox_poller.urlpolicy import UrlRefused, check_url, redact_url

if TYPE_CHECKING:
    from inbox_poller.config import DownloadConfig

logger = logging.getLogger(__name__)

JSON_BACKEND = "yajl2_c"
"""The only ijson backend used: C, fast, and no ffi callbacks (MemoryDenyWriteExecute)."""
_JSON = ijson.get_backend(JSON_BACKEND)  # ImportError at start-up, never a silent fallback

MAX_REDIRECTS = 3
CHUNK_BYTES = 1 << 20
"""Bytes per network read: large, so the per-read Python overhead stays negligible."""
PARSE_SLICE_BYTES = 1 << 16
"""Bytes per parser call; measured faster than 1 MiB (cache-friendly item building)."""
HEAD_BYTES = 1 << 16
"""Where the main array must start to be counted ("near the start")."""
MAX_ITEM_BYTES = 4 << 20
"""Counting builds each item of the main array; a longer item (or stretch between items)
makes the download restart without counting, so memory stays bounded."""
MAX_RETRY_AFTER_S = 300.0
MAX_BACKOFF_S = 60.0
_PAUSE_SLICE_S = 0.25
_STOP_POLL_S = 0.1
_SPOOL_DEPTH = 8
_EXPIRED_STATUSES = frozenset({403, 404, 410})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})
_HEADERS = {
    "User-Agent": f"inbox-poller/{__version__}",
    "Accept": "application/json, */*;q=0.5",
    "Accept-Encoding": "gzip",
}
# No document can know this per-process random key, so items() under it only validates.
_NOWHERE = "\x00" + secrets.token_hex(16)
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> IP address strings``; the default is :func:`system_resolver`."""


class PayloadSink(Protocol):
    """Where the decoded payload goes: ``poller.PayloadSink``, restated so that this edge
    does not import the core (style.md layers)."""

    def write(self, data: bytes) -> None: ...

    def restart(self) -> None: ...


# --- which addresses may be connected to -------------------------------------------------


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve *host* with ``getaddrinfo``, keeping the answer's order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _unwrap(ip: _Address) -> _Address:
    """Return the IPv4 address an IPv4-mapped, 6to4 or NAT64 address carries, else *ip*."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return ip


def address_refusal(address: str, *, allow_private: bool) -> str | None:
    """Return why connecting to *address* is not allowed, or None when it is.

    Only global addresses pass (``is_global``, judged on the IPv4 address inside mapped,
    6to4 and NAT64 forms). With *allow_private*, loopback, RFC 1918, 100.64/10 and
    fc00::/7 pass too. Link-local (the cloud metadata address), multicast, unspecified,
    site-local and reserved addresses never do.
    """
    try:
        ip = _unwrap(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return f"{address!r} is not an IP address"
    site_local = isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified or site_local:
        return f"{ip} is a link-local, multicast or unspecified address"
    if allow_private and (ip.is_loopback or any(ip in net for net in _PRIVATE_NETWORKS)):
        return None
    if ip.is_reserved or not ip.is_global:
        return f"{ip} is not a public address"
    return None


# --- connections pinned to validated addresses -------------------------------------------


class _Sockets:
    """The sockets opened during one download, so a stop request can cut a blocked read short.

    A socket stays listed after its connection object is closed: http.client closes the
    connection of a ``Connection: close`` response while the body is still being read
    through it. Shutting down a socket that is really closed is a harmless OSError.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opened: list[socket.socket] = []

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._opened.append(sock)

    def forget(self) -> None:
        """Drop the list at the end of a download (the sockets are closed by then)."""
        with self._lock:
            self._opened.clear()

    def shut_all(self) -> None:
        with self._lock:
            opened = list(self._opened)
        for sock in opened:
            with contextlib.suppress(OSError):
                # the base-class call shuts the descriptor under the TLS layer: a read
                # blocked in another thread wakes up, and its SSL object is left alone
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _PinnedHTTPSConnection(HTTPSConnection):
    """An HTTPS connection whose TCP socket goes only to addresses validated beforehand.

    Everything else (Host header, SNI, certificate and host name check) uses the URL's
    host name, exactly as for an ordinary connection.
    """

    def __init__(
        self, *args: Any, pinned: tuple[str, ...], sockets: _Sockets, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._pinned = pinned
        self._sockets = sockets

    def _new_conn(self) -> socket.socket:
        failure: OSError | None = None
        for address in self._pinned:
            try:
                return create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:
                failure = exc
        if isinstance(failure, TimeoutError):
            raise ConnectTimeoutError(self, f"connecting to {self.host} timed out") from failure
        raise NewConnectionError(self, f"cannot connect to {self.host}: {failure}") from failure

    def connect(self) -> None:
        super().connect()
        if self.sock is not None:
            self._sockets.add(self.sock)


class _PinnedPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


# --- the body: spool, pull reader, shape ---------------------------------------------------


class _Spool:
    """Hash and store decoded chunks on a helper thread, overlapping with parsing.

    SHA-256 and file writes release the GIL, so they run beside the parser, which holds
    it. The sink is only ever written from this thread, one chunk at a time.
    """

    def __init__(self, sink: PayloadSink) -> None:
        self._sink = sink
        self._sha = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_SPOOL_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="download-spool", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:  # after a failure, keep draining so put() never blocks
                try:
                    self._sha.update(chunk)
                    self._sink.write(chunk)
                except BaseException as exc:  # re-raised in the downloading thread
                    self._error = exc

    def put(self, chunk: bytes) -> None:
        self._raise_error()
        self._queue.put(chunk)

    def finish(self) -> str:
        """Wait until everything is written; return the SHA-256 hex digest."""
        self.close()
        self._raise_error()
        return self._sha.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _raise_error(self) -> None:
        if self._error is None:
            return
        if isinstance(self._error, InboxPollerError):
            raise self._error
        raise ArchiveError(f"writing the payload failed: {self._error}") from self._error


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


class _Retry(Exception):
    """One try failed for a reason that may go away."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _CountingAbandoned(Exception):
    """An item of the main array is too large to build: validate again without counting."""


class _Body:
    """The decoded payload as a file for the parser, hashed and stored on the way.

    The parser pulls. Each network chunk it pulls is checked against the size cap, the
    deadline and the stop request, and goes to the spool.
    """

    def __init__(
        self, response: BaseHTTPResponse, spool: _Spool, max_bytes: int, clock: _Clock
    ) -> None:
        self._response = response
        self._chunks = response.stream(CHUNK_BYTES, decode_content=True)
        self._declared = response.length_remaining  # None when chunked or absent
        self._spool = spool
        self._max_bytes = max_bytes
        self._clock = clock
        self._buffer = b""
        self._pos = 0
        self.decoded = 0
        self.fed = 0
        self.item_mark = 0
        self.guard_items = False

    def head(self, size: int) -> bytes:
        """Return up to *size* first bytes without consuming them."""
        while len(self._buffer) < size and (chunk := self._pull()):
            self._buffer += chunk
        return self._buffer[:size]

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson probes the type with read(0)
            return b""
        if self._pos >= len(self._buffer):
            self._buffer, self._pos = self._pull(), 0
        if self.guard_items and self.fed - self.item_mark > MAX_ITEM_BYTES:
            raise _CountingAbandoned
        piece = self._buffer[self._pos : self._pos + PARSE_SLICE_BYTES]
        self._pos += len(piece)
        self.fed += len(piece)
        return piece

    def _pull(self) -> bytes:
        self._clock.check()
        chunk = next(self._chunks, b"")
        if not chunk:
            self._clock.check()  # a read cut short by a stop request is not the end
            self._check_complete()
            return b""
        self.decoded += len(chunk)
        if self.decoded > self._max_bytes:
            raise PayloadTooLarge(f"the payload exceeds download.max_bytes ({self._max_bytes})")
        self._spool.put(chunk)
        return chunk

    def _check_complete(self) -> None:
        received = self._response.tell()
        if self._declared is not None and received != self._declared:
            raise _Retry(f"the body ended after {received} of {self._declared} bytes")


@dataclass(frozen=True)
class _Shape:
    top_level: str
    records: int | None


def _item_prefix(prefix: str) -> str:
    return f"{prefix}.item" if prefix else "item"


def sniff_shape(head: bytes) -> tuple[str, str | None]:
    """Return the top-level type and the ijson prefix of the main array's items.

    The main array is the top-level array; in a top-level object, the first array at
    depth <= 2 whose items are objects or arrays (records), else the first one with any
    items, else the first empty one: ``{"errors": [], "meta": {"fields": ["a"]},
    "data": {"item": [{...}]}}`` counts ``data.item``. Only *head* is looked at; an
    invalid head is left for the parser to report.
    """
    kinds: list[str] = []  # the containers enclosing the current event
    top = "unknown"
    found: dict[str, str] = {}  # "empty" / "scalars" -> the first such array's item prefix
    opened: str | None = None  # an array just opened, not yet classified
    with contextlib.suppress(ijson.JSONError):
        for prefix, event, _ in _JSON.parse(io.BytesIO(head)):
            if opened is not None:
                if event in ("start_map", "start_array"):
                    return top, opened
                found.setdefault("empty" if event == "end_array" else "scalars", opened)
                opened = None
            if top == "unknown":
                top = {"start_map": "object", "start_array": "array"}.get(event, event)
                if top != "object":
                    return top, "item" if top == "array" else None
            if event == "start_array" and len(kinds) <= 2 and set(kinds) == {"start_map"}:
                opened = _item_prefix(prefix)
            if event in ("start_map", "start_array"):
                kinds.append(event)
            elif event in ("end_map", "end_array"):
                kinds.pop()
    return top, opened or found.get("scalars") or found.get("empty")


def _short_reason(exc: Exception) -> str:
    """The first line of an ijson error, without the payload excerpt yajl appends."""
    text = str(exc)
    if text[:2] in ("b'", 'b"'):
        text = text[2:]
    return text.replace("\\n", "\n").split("\n", 1)[0].strip().rstrip(".")


def _validate(body: _Body, *, count: bool) -> _Shape:
    """Drive the parser over the whole body; return its shape or raise PayloadInvalid."""
    top_level, prefix = sniff_shape(body.head(HEAD_BYTES))
    counting = count and prefix is not None
    body.guard_items = counting
    records = 0
    try:
        for _ in _JSON.items(body, prefix if counting else _NOWHERE, buf_size=PARSE_SLICE_BYTES):
            records += 1
            body.item_mark = body.fed
    except ijson.JSONError as exc:
        # "from None": yajl's message quotes the payload (contact data) next to the error
        raise PayloadInvalid(
            f"not one valid JSON document (at or before byte {body.fed}): {_short_reason(exc)}"
        ) from None
    return _Shape(top_level, records if counting else None)


# --- reading library errors without their URLs ---------------------------------------------


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 12:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(arg for arg in current.args if isinstance(arg, BaseException))
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


_REASONS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (ssl.SSLCertVerificationError, "TLS certificate check failed"),
    (NewConnectionError, "cannot connect"),
    (ConnectTimeoutError, "connecting timed out"),
    ((ReadTimeoutError, TimeoutError), "read timed out"),
    (http.client.IncompleteRead, "the body ended early"),
    (ConnectionResetError, "connection reset"),
    (DecodeError, "the compressed body is corrupt"),
    (ssl.SSLError, "TLS error"),
    ((ProtocolError, http.client.HTTPException), "the connection broke"),
)


def _describe(exc: BaseException) -> str:
    """A short reason built from exception types: library messages quote the URL."""
    causes = list(_causes(exc))
    for kind, reason in _REASONS:
        for cause in causes:
            if isinstance(cause, kind):
                if isinstance(cause, ssl.SSLCertVerificationError):
                    return f"{reason}: {cause.verify_message}"
                return reason
    return type(exc).__name__


def retry_after_seconds(value: str | None) -> float | None:
    """Parse ``Retry-After`` (delay seconds or an HTTP-date); None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - utc_now()).total_seconds())


def _status_problem(response: BaseHTTPResponse) -> Exception | None:
    """What a non-200 status means: expired link, retry, or a definitive failure."""
    status = response.status
    if status == 200:
        return None
    if status in _EXPIRED_STATUSES:
        return LinkExpired(status)
    if status in (408, 429) or 500 <= status <= 599:
        return _Retry(f"HTTP {status}", retry_after_seconds(response.headers.get("Retry-After")))
    return DownloadError(f"unexpected HTTP {status}")


# --- the downloader ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Fetched:
    shape: _Shape
    sha256: str
    size: int
    final_url: str


class SafeDownloader:
    """Download allow-listed HTTPS payloads safely (``poller.Downloader``).

    One instance serves one thread at a time. The sink is written from a helper thread
    (never concurrently) and ``sink.restart()`` is called before each retry.
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
        self._rules = config.host_rules
        self._context = client_context(ca_file)
        self._resolver = resolver or system_resolver
        self._sleep = sleep
        self._stop = stop
        self._sockets = _Sockets()
        self._pools: dict[tuple[str, int, tuple[str, ...]], _PinnedPool] = {}

    def download(self, url: str, sink: PayloadSink) -> DownloadResult:
        """Fetch *url* into *sink*, validating the JSON to its end (see ``poller.Downloader``)."""
        clock = _Clock(self._config.deadline_s, self._stop, time.monotonic())
        shown = redact_url(url)
        logger.info("download %s: starting", shown)
        tries = failures = 0
        count = True
        with self._stop_watch(), contextlib.ExitStack() as cleanup:
            cleanup.callback(self._close_pools)
            while True:
                tries += 1
                try:
                    return self._result(self._try(url, sink, clock, count), shown, tries, clock)
                except _CountingAbandoned:
                    logger.info(
                        "download %s: an item is over %d bytes; not counting", shown, MAX_ITEM_BYTES
                    )
                    count = False
                except _Retry as exc:
                    failures += 1
                    self._before_retry(exc, shown, failures, clock)
                except DownloadError as exc:
                    logger.warning("download %s: failed after %d tries: %s", shown, tries, exc)
                    raise
                sink.restart()

    def close(self) -> None:
        """Close idle connections; never raises."""
        self._close_pools()

    def _before_retry(self, exc: _Retry, shown: str, failures: int, clock: _Clock) -> None:
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
        logger.warning("download %s: giving up: %s", shown, error)
        raise error from exc

    def _retry_delay(self, exc: _Retry, failures: int) -> float:
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
        logger.info(
            "download %s: %d bytes, sha256 %s, top level %s, %s records, %d tries, %.1f s",
            shown,
            fetched.size,
            fetched.sha256,
            fetched.shape.top_level,
            fetched.shape.records,
            tries,
            elapsed,
        )
        return DownloadResult(
            bytes=fetched.size,
            sha256=fetched.sha256,
            records=fetched.shape.records,
            top_level=fetched.shape.top_level,
            final_url=redact_url(fetched.final_url),
            attempts=tries,
            elapsed_s=elapsed,
        )

    def _try(self, url: str, sink: PayloadSink, clock: _Clock, count: bool) -> _Fetched:
        """One try: follow redirects, then stream and validate the body."""
        response, final_url = self._open(url, clock)
        spool = _Spool(sink)
        try:
            body = _Body(response, spool, self._config.max_bytes, clock)
            shape = _validate(body, count=count)
            digest = spool.finish()
        except (HTTPError, OSError, http.client.HTTPException) as exc:
            clock.check()  # a read cut short by a stop request
            raise _Retry(_describe(exc)) from exc
        finally:
            spool.close()
            response.close()
        return _Fetched(shape, digest, body.decoded, final_url)

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
        clock.check()
        target_host, port, addresses = self._authorize(url)
        pool = self._pool(target_host, port, addresses)
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
            if any(isinstance(cause, ssl.SSLCertVerificationError) for cause in _causes(exc)):
                raise DownloadError(f"{target_host}: {_describe(exc)}") from exc  # not transient
            raise _Retry(_describe(exc)) from exc

    def _authorize(self, url: str) -> tuple[str, int, tuple[str, ...]]:
        """Check the URL and every address its host resolves to; raise DownloadRefused."""
        try:
            target = check_url(url, self._rules)
        except UrlRefused as exc:
            raise DownloadRefused(f"{redact_url(url)}: {exc}") from exc
        addresses = (target.host,) if target.ip_literal else self._resolve(target.host, target.port)
        for address in addresses:
            reason = address_refusal(address, allow_private=self._config.allow_private_addresses)
            if reason is not None:
                raise DownloadRefused(f"{target.host}: {reason}")
        return target.host, target.port, addresses

    def _resolve(self, host: str, port: int) -> tuple[str, ...]:
        try:
            addresses = tuple(self._resolver(host, port))
        except OSError as exc:
            raise _Retry(f"cannot resolve {host}") from exc
        if not addresses:
            raise _Retry(f"{host} resolved to no address")
        return addresses

    def _pool(self, host: str, port: int, addresses: tuple[str, ...]) -> _PinnedPool:
        key = (host, port, addresses)
        pool = self._pools.get(key)
        if pool is None:
            pool = _PinnedPool(
                host,
                port,
                maxsize=1,
                block=False,
                retries=False,
                ssl_context=self._context,
                pinned=addresses,
                sockets=self._sockets,
            )
            self._pools[key] = pool
        return pool

    def _accept(self, response: BaseHTTPResponse) -> BaseHTTPResponse:
        """Return a 200 response whose headers allow reading; close it and raise otherwise."""
        problem = _status_problem(response) or self._header_problem(response)
        if problem is not None:
            response.close()
            raise problem
        return response

    def _header_problem(self, response: BaseHTTPResponse) -> Exception | None:
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in _ENCODINGS:
            return PayloadInvalid(f"unsupported Content-Encoding {encoding!r}")
        declared = response.length_remaining
        limit = self._config.max_bytes
        if encoding in ("", "identity") and declared is not None and declared > limit:
            return PayloadTooLarge(
                f"Content-Length {declared} exceeds download.max_bytes ({limit})"
            )
        return None

    @contextlib.contextmanager
    def _stop_watch(self) -> Iterator[None]:
        """While downloading, shut the live sockets down as soon as ``stop`` is set."""
        stop = self._stop
        if stop is None:
            yield
            return
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                if stop.wait(_STOP_POLL_S):
                    self._sockets.shut_all()
                    return

        watcher = threading.Thread(target=watch, name="download-stop-watch", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()

    def _close_pools(self) -> None:
        for pool in self._pools.values():
            with contextlib.suppress(Exception):
                pool.close()
        self._pools.clear()
        self._sockets.forget()
