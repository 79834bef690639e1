"""Loopback HTTPS test servers with scripted replies and fault injection.

``HttpsServer`` is a threaded stdlib HTTP/1.1 server on 127.0.0.1, port 0, with a
certificate from ``localca.make_local_ca`` (SAN localhost, 127.0.0.1, ::1). Each path
gets a script: a list of :class:`Reply` values used in order, the last one repeating.
A reply can serve bytes or a file, with or without Content-Length, chunked or gzip
encoded, redirect, fail with a status, cut the body short, stall mid-body, or close the
connection without answering. Every request is recorded (path with query, headers, TLS
server name), and so is every connection accepted (``accepted``: a kept-alive
connection serves several requests).

Fixtures: ``https_ca`` (session-wide CA) and ``https_server`` (one server per test).
"""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest

from inbox_poller.sandbox.localca import LocalCA, make_local_ca

_FILE_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Reply:
    """One scripted response."""

    status: int = 200
    body: bytes = b""
    file: Path | None = None
    """Serve this file (streamed) instead of ``body``."""
    headers: Mapping[str, str] = field(default_factory=dict)
    length: Literal["auto", "none"] | int = "auto"
    """``auto``: the true Content-Length; ``none``: no length, the connection closes at the
    end; an int: declare that length whatever is sent."""
    chunked: bool = False
    gzip: bool = False
    """Compress ``body`` on the fly and send ``Content-Encoding: gzip``."""
    location: str | None = None
    truncate_after: int | None = None
    """Send this many body bytes, then close the connection."""
    stall_after: int | None = None
    """Send this many body bytes, then go silent for ``stall_s`` (or until shutdown)."""
    stall_s: float = 30.0
    close_after_cut: bool = True
    """Say ``Connection: close`` with a body cut short or stalled, as a server that cuts
    it means to; False: a server that stalls on a connection it would keep."""
    drop: bool = False
    """Close the connection without answering (as a server ending an idle keep-alive
    connection just as a request arrives)."""


def redirect(location: str, status: int = 302, **kwargs: Any) -> Reply:
    """A redirect reply to *location*."""
    return Reply(status=status, location=location, **kwargs)


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    server_name: str | None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        owner = self.server.owner
        reply = owner.take(urlsplit(self.path).path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        owner.record(Seen(self.path, headers, owner.server_name_of(self.connection)))
        if reply.drop:
            self.close_connection = True
            return
        body = gzip.compress(reply.body) if reply.gzip else reply.body
        size = reply.file.stat().st_size if reply.file is not None else len(body)
        self._send_head(reply, size)
        self._send_body(reply, body)

    def _send_head(self, reply: Reply, size: int) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.location is not None:
            self.send_header("Location", reply.location)
        if reply.gzip:
            self.send_header("Content-Encoding", "gzip")
        cut = reply.truncate_after is not None or reply.stall_after is not None
        if reply.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif reply.length == "auto":
            self.send_header("Content-Length", str(size))
        elif reply.length != "none":
            self.send_header("Content-Length", str(reply.length))
        if reply.length == "none" or (cut and reply.close_after_cut):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

    def _send_body(self, reply: Reply, body: bytes) -> None:
        limit = reply.truncate_after if reply.truncate_after is not None else reply.stall_after
        sent = 0
        for piece in self._pieces(reply, body):
            if limit is not None and sent + len(piece) >= limit:
                self._write(reply, piece[: limit - sent])
                self.wfile.flush()
                if reply.stall_after is not None:
                    self.server.stopping.wait(reply.stall_s)
                return
            self._write(reply, piece)
            sent += len(piece)
        if reply.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _write(self, reply: Reply, piece: bytes) -> None:
        if not piece:
            return
        if reply.chunked:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        else:
            self.wfile.write(piece)

    @staticmethod
    def _pieces(reply: Reply, body: bytes) -> Iterator[bytes]:
        if reply.file is None:
            step = 64 * 1024 if reply.chunked else _FILE_CHUNK_BYTES
            for start in range(0, len(body), step):
                yield body[start : start + step]
            return
        with reply.file.open("rb") as handle:
            while piece := handle.read(_FILE_CHUNK_BYTES):
                yield piece

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet; tests inspect ``HttpsServer.requests`` instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: HttpsServer, context: ssl.SSLContext) -> None:
        self.owner = owner
        self.context = context
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        raw, address = super().get_request()
        self.owner.count_connection()
        # the handshake happens in the handler thread, so a client that never finishes
        # it cannot block the accept loop
        return self.context.wrap_socket(
            raw, server_side=True, do_handshake_on_connect=False
        ), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that abort (failed certificate checks, stop tests) are expected."""


class HttpsServer:
    """A loopback HTTPS server whose paths follow scripts of :class:`Reply` values."""

    def __init__(self, ca: LocalCA) -> None:
        self.ca_file = ca.ca_cert
        self.requests: list[Seen] = []
        self.server_names: list[str | None] = []
        self.accepted = 0
        """TCP connections accepted so far."""
        self._sni: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()
        self._scripts: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(ca.server_cert, ca.server_key)
        context.sni_callback = self._on_sni
        self._server = _Server(self, context)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"

    @property
    def host_rule(self) -> str:
        """The ``allowed_hosts`` entry for this server."""
        return f"localhost:{self.port}"

    def route(self, path: str, *replies: Reply) -> None:
        """Answer *path* with *replies* in order; the last one repeats."""
        if not replies:
            raise ValueError("route() needs at least one reply")
        with self._lock:
            self._scripts[path] = list(replies)

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for seen in self.requests if urlsplit(seen.path).path == path)

    def take(self, path: str) -> Reply:
        with self._lock:
            script = self._scripts.get(path)
            if not script:
                return Reply(status=404, body=b"no such path")
            return script.pop(0) if len(script) > 1 else script[0]

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    def count_connection(self) -> None:
        with self._lock:
            self.accepted += 1

    def server_name_of(self, sock: Any) -> str | None:
        with self._lock:
            return self._sni.get(sock)

    def _on_sni(self, sock: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        with self._lock:
            self.server_names.append(server_name)
            self._sni[sock] = server_name

    def close(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="session")
def https_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    """A throwaway CA and loopback server certificate, shared by the whole run."""
    return make_local_ca(tmp_path_factory.mktemp("https-ca"))


@pytest.fixture
def https_server(https_ca: LocalCA) -> Iterator[HttpsServer]:
    """A fresh scripted HTTPS server on 127.0.0.1 for one test."""
    server = HttpsServer(https_ca)
    try:
        yield server
    finally:
        server.close()
