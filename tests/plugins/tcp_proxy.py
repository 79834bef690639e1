"""A loopback TCP proxy that can stall, cut or refuse connections, for fault injection.

Real servers do not go silent on demand. Put ``TcpProxy`` between a client and
a real server (Dovecot, an HTTPS test server) and it forwards bytes both ways
until told otherwise:

* ``stall()``: the connections open now stop forwarding in both directions
  without closing, like a NAT that dropped its state or a hung peer; the
  client's socket stays ESTABLISHED and only its own timeouts can notice.
  ``stall(new_connections=True)`` also stalls every later connection.
* ``resume()``: forward again (stalled bytes are delivered late, unharmed).
* ``cut(reset=False)``: close every open connection (FIN, or RST with *reset*).
* ``refuse()`` / ``accept()``: while refusing, a new connection is accepted and
  reset at once, as a server that is down would (the port stays ours, so no
  other process can take it in the meantime).

The fixture ``make_tcp_proxy(port, host="127.0.0.1")`` starts one in front of
*port* and closes it at teardown. TLS passes through untouched, so a client
connecting to ``127.0.0.1:<proxy port>`` still verifies the server's certificate.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

_POLL_S = 0.02
"""How often a pump re-checks its link's flags; bounds the reaction to stall() and cut()."""
_CHUNK = 65536
_CONNECT_TIMEOUT_S = 5.0
_JOIN_TIMEOUT_S = 5.0


def _reset_on_close(sock: socket.socket) -> None:
    """Make ``close()`` send RST instead of FIN (SO_LINGER with a zero timeout)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _Link:
    """One proxied connection: the client's socket, the upstream socket and two pumps."""

    def __init__(self, downstream: socket.socket, upstream: socket.socket, stalled: bool) -> None:
        self.downstream = downstream
        self.upstream = upstream
        self.stalled = stalled
        self.closing = False
        self.reset = False
        self._done = 0
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._pump, args=(downstream, upstream), daemon=True),
            threading.Thread(target=self._pump, args=(upstream, downstream), daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    @property
    def finished(self) -> bool:
        return all(not thread.is_alive() for thread in self.threads)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while not self.closing:
                if self.stalled:
                    # read nothing: the bytes wait in the kernel buffers, as on a hung path
                    time.sleep(_POLL_S)
                    continue
                readable, _, _ = select.select([source], [], [], _POLL_S)
                if not readable or self.stalled or self.closing:
                    continue
                data = source.recv(_CHUNK)
                if not data:
                    # pass the half-close on, so the other side sees EOF too
                    with contextlib.suppress(OSError):
                        target.shutdown(socket.SHUT_WR)
                    return
                target.sendall(data)
        except (OSError, ValueError):  # reset by a peer, or closed by cut() after a timeout
            self.closing = True
        finally:
            self._finish_one()

    def _finish_one(self) -> None:
        """Close both sockets once both pumps are done (only the last one out does it)."""
        with self._lock:
            self._done += 1
            last = self._done == len(self.threads)
        if last:
            self.close_sockets()

    def close_sockets(self) -> None:
        self.closing = True
        for sock in (self.downstream, self.upstream):
            if self.reset:
                _reset_on_close(sock)
            with contextlib.suppress(OSError):
                sock.close()


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to *target_host*:*target_port*, with faults on demand."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(_POLL_S * 5)
        self.host, self.port = self._listener.getsockname()[:2]
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._closed = False
        self._refusing = False
        self._stall_new = False
        self.accepted = 0
        """Connections forwarded so far (refused ones are not counted)."""
        self.refused = 0
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    # ---- faults -----------------------------------------------------------------------

    def stall(self, *, new_connections: bool = False) -> int:
        """Stop forwarding on every open connection (and later ones too, if asked).

        Returns how many open connections were stalled.
        """
        with self._lock:
            self._stall_new = new_connections
            links = self._live_links()
            for link in links:
                link.stalled = True
        return len(links)

    def resume(self) -> None:
        """Forward again on every connection, and do not stall new ones."""
        with self._lock:
            self._stall_new = False
            for link in self._live_links():
                link.stalled = False

    def cut(self, *, reset: bool = False) -> int:
        """Close every open connection, with FIN (or RST when *reset*); return how many."""
        with self._lock:
            links = self._live_links()
        for link in links:
            link.reset = reset
            link.closing = True
        for link in links:
            for thread in link.threads:
                thread.join(_JOIN_TIMEOUT_S)
            if not link.finished:  # a pump stuck in sendall(): force it out
                link.close_sockets()
        return len(links)

    def refuse(self) -> None:
        """Reset new connections at once, as a stopped server would."""
        self._refusing = True

    def accept(self) -> None:
        """Forward new connections again."""
        self._refusing = False

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._live_links())

    def close(self) -> None:
        """Stop listening and cut every connection."""
        self._closed = True
        self._thread.join(_JOIN_TIMEOUT_S)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut(reset=True)

    # ---- internals --------------------------------------------------------------------

    def _live_links(self) -> list[_Link]:
        self._links = [link for link in self._links if not link.finished]
        return list(self._links)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                downstream, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._refusing:
                self.refused += 1
                _reset_on_close(downstream)
                downstream.close()
                continue
            self._forward(downstream)

    def _forward(self, downstream: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=_CONNECT_TIMEOUT_S)
        except OSError:
            _reset_on_close(downstream)
            downstream.close()
            return
        for sock in (downstream, upstream):
            sock.settimeout(None)  # the pumps select() before every recv
        with self._lock:
            link = _Link(downstream, upstream, stalled=self._stall_new)
            link.start()  # under the lock: an unstarted link would look finished
            self._links.append(link)
            self.accepted += 1


MakeTcpProxy = Callable[..., TcpProxy]


@pytest.fixture
def make_tcp_proxy() -> Iterator[MakeTcpProxy]:
    """Return ``make(port, host="127.0.0.1")``: a started ``TcpProxy``, closed at teardown."""
    proxies: list[TcpProxy] = []

    def make(port: int, host: str = "127.0.0.1") -> TcpProxy:
        proxy = TcpProxy(port, host)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()
