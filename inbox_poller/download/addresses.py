"""Which addresses a download may connect to, and connections pinned to them.

Each URL (and redirect target) first passes ``urlpolicy.check_url``; its host is then
resolved once, and every address it resolves to must pass :func:`address_refusal`. The
TCP connection goes to those validated addresses only, while SNI, the Host header and
the certificate check keep using the host name, so a second, rebinding DNS answer is
never used (docs/reliability.md §4.1). All of it happens before any connection to the host.

A connection whose response was read to its end is kept for the next request to the same
host and port (keep-alive, docs/reliability.md §3.1), and reused only after that request's
URL passed the same checks, and only if the address it is connected to is one of the
addresses just checked for it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from urllib3 import HTTPSConnectionPool
from urllib3.connection import HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import create_connection

from inbox_poller.download.failures import RetryableFailure
from inbox_poller.errors import DownloadRefused
from inbox_poller.urlpolicy import HostRule, UrlRefused, check_url, redact_url

_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, Oracle, OpenStack, DigitalOcean... (link-local)
        "169.254.170.2",  # AWS ECS task metadata (link-local)
        "169.254.0.23",  # Tencent Cloud (link-local)
        "fd00:ec2::254",  # AWS instance metadata over IPv6 (in fc00::/7)
        "fd20:ce::254",  # Google Cloud metadata over IPv6 (in fc00::/7)
        "100.100.100.200",  # Alibaba Cloud (in 100.64/10)
        "192.0.0.192",  # Oracle Cloud, the older metadata address
        "168.63.129.16",  # Azure WireServer, the platform's host endpoint (a public address)
    )
)
"""The cloud metadata endpoints: never connected to, whatever ``allow_private_addresses``
says (docs/reliability.md §4.1). The one list; the docs and config.example.toml point here."""
_STOP_POLL_S = 0.1
MAX_IDLE_S = 15.0
"""An idle connection kept longer than this is closed, not reused: servers end idle
keep-alive connections after 5 to 75 s, and one that has already ended it is noticed
before use anyway (urllib3's ``is_connection_dropped``)."""
MAX_HOSTS = 4
"""Hosts (host, port) a downloader keeps an idle connection to; the least recently used
beyond these is closed. Enough for a download host and the hosts it redirects to."""

Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> IP address strings``; the default is :func:`system_resolver`."""

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve *host* with ``getaddrinfo``, keeping the answer's order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


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
    fc00::/7 pass too. Link-local, multicast, unspecified, site-local and reserved
    addresses never do, nor any of ``METADATA_ADDRESSES``.
    """
    try:
        ip = _unwrap(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return f"{address!r} is not an IP address"
    site_local = isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified or site_local:
        return f"{ip} is a link-local, multicast or unspecified address"
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if allow_private and (ip.is_loopback or any(ip in net for net in _PRIVATE_NETWORKS)):
        return None
    if ip.is_reserved or not ip.is_global:
        return f"{ip} is not a public address"
    return None


class OpenSockets:
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
        """Drop the list at the end of a download (its sockets are closed by then, or
        idle and kept for the next request, which adds its socket again)."""
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


class _Pins:
    """The addresses a pool's connections may go to: those checked for the request under
    way (``PinnedConnections.pool_for`` sets them before each request)."""

    def __init__(self) -> None:
        self.addresses: tuple[str, ...] = ()


class _PinnedHTTPSConnection(HTTPSConnection):
    """An HTTPS connection whose TCP socket goes only to addresses validated beforehand.

    Everything else (Host header, SNI, certificate and host name check) uses the URL's
    host name, exactly as for an ordinary connection. ``peer`` is the address it is
    connected to; ``idle_since`` when its last response was read to the end.
    """

    def __init__(self, *args: Any, pins: _Pins, sockets: OpenSockets, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pins = pins
        self._sockets = sockets
        self.peer: str | None = None
        self.idle_since = 0.0

    def _new_conn(self) -> socket.socket:
        failure: OSError | None = None
        self.peer = None
        for address in self._pins.addresses:
            try:
                sock = create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:
                failure = exc
                continue
            self.peer = address
            return sock
        if isinstance(failure, TimeoutError):
            raise ConnectTimeoutError(self, f"connecting to {self.host} timed out") from failure
        raise NewConnectionError(self, f"cannot connect to {self.host}: {failure}") from failure

    def connect(self) -> None:
        super().connect()
        if self.sock is not None:
            self._sockets.add(self.sock)


class PinnedPool(HTTPSConnectionPool):
    """An HTTPS pool to one host and port whose connections go only to the addresses
    last checked for it (``pin``), holding at most one idle connection.

    An idle connection is reused only when the address it is connected to is among the
    addresses pinned for the new request and it has been idle less than ``MAX_IDLE_S``;
    otherwise it is closed and a new one opened. ``reused`` says which the last request
    got.
    """

    ConnectionCls = _PinnedHTTPSConnection

    def __init__(self, host: str, port: int, *, sockets: OpenSockets, **kwargs: Any) -> None:
        self._pins = _Pins()
        self._sockets = sockets
        self.reused = False
        super().__init__(host, port, pins=self._pins, sockets=sockets, **kwargs)

    def pin(self, addresses: tuple[str, ...]) -> None:
        """Allow the next request's connection to go to *addresses* only."""
        self._pins.addresses = addresses

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # an idle connection the server ended is closed
        self.reused = False
        if isinstance(conn, _PinnedHTTPSConnection) and conn.sock is not None:
            fresh = time.monotonic() - conn.idle_since < MAX_IDLE_S
            if fresh and conn.peer in self._pins.addresses:
                self.reused = True
                self._sockets.add(conn.sock)  # the stop watch of this download
            else:
                conn.close()  # connects again, to the addresses pinned now
        return conn

    def _put_conn(self, conn: Any) -> None:
        if isinstance(conn, _PinnedHTTPSConnection):
            conn.idle_since = time.monotonic()
        super()._put_conn(conn)


class PinnedConnections:
    """HTTPS pools to allow-listed hosts, each pinned to the addresses checked for it.

    One instance serves one download at a time; between downloads it keeps an idle
    connection to each of the last ``MAX_HOSTS`` hosts; ``close`` ends its connections.
    """

    def __init__(
        self,
        rules: tuple[HostRule, ...],
        *,
        allow_private: bool,
        context: ssl.SSLContext,
        resolver: Resolver,
    ) -> None:
        self._rules = rules
        self._allow_private = allow_private
        self._context = context
        self._resolver = resolver
        self._sockets = OpenSockets()
        self._pools: OrderedDict[tuple[str, int], PinnedPool] = OrderedDict()

    def pool_for(self, url: str) -> PinnedPool:
        """Check *url* and resolve its host; return its host's pool, pinned to the addresses.

        :raises DownloadRefused: the URL or one of the addresses is not allowed.
        :raises RetryableFailure: the host cannot be resolved now.
        """
        try:
            target = check_url(url, self._rules)
        except UrlRefused as exc:
            raise DownloadRefused(f"{redact_url(url)}: {exc}") from exc
        addresses = (target.host,) if target.ip_literal else self._resolve(target.host, target.port)
        for address in addresses:
            reason = address_refusal(address, allow_private=self._allow_private)
            if reason is not None:
                raise DownloadRefused(f"{target.host}: {reason}")
        return self._pool(target.host, target.port, addresses)

    def _resolve(self, host: str, port: int) -> tuple[str, ...]:
        try:
            addresses = tuple(self._resolver(host, port))
        except OSError as exc:
            raise RetryableFailure(f"cannot resolve {host}") from exc
        if not addresses:
            raise RetryableFailure(f"{host} resolved to no address")
        return addresses

    def _pool(self, host: str, port: int, addresses: tuple[str, ...]) -> PinnedPool:
        key = (host, port)
        pool = self._pools.pop(key, None)
        if pool is None:
            pool = PinnedPool(
                host,
                port,
                maxsize=1,
                block=False,
                retries=False,
                ssl_context=self._context,
                sockets=self._sockets,
            )
        self._pools[key] = pool  # the most recently used last
        while len(self._pools) > MAX_HOSTS:
            _, oldest = self._pools.popitem(last=False)
            with contextlib.suppress(Exception):
                oldest.close()
        pool.pin(addresses)
        return pool

    @contextlib.contextmanager
    def stop_watch(self, stop: threading.Event | None) -> Iterator[None]:
        """While inside, shut the live sockets down as soon as *stop* is set."""
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

    def finish(self) -> None:
        """End a download: its sockets are no longer the stop watch's (an idle one kept
        for the next download is handed to that download's watch when reused)."""
        self._sockets.forget()

    def close(self) -> None:
        """Close every pool; never raises."""
        for pool in self._pools.values():
            with contextlib.suppress(Exception):
                pool.close()
        self._pools.clear()
        self._sockets.forget()
