"""The sandbox's HTTPS servers' common base: a threaded TLS server on 127.0.0.1.

The Pinpointe simulator and the OAuth2 server both serve HTTPS on loopback; this is
the part they share. Nothing here is used in production.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

logger = logging.getLogger("inbox_poller.sandbox")

SOCKET_TIMEOUT_S = 30.0
"""How long a connection may sit idle (handshake included) before it is dropped."""


class LoopbackTlsServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 (a free port) that does each TLS handshake in
    the connection's own thread, so one slow client never holds up the others."""

    daemon_threads = True

    def __init__(
        self, context: ssl.SSLContext, handler: type[BaseHTTPRequestHandler], name: str
    ) -> None:
        self.context = context
        self.name = name
        """Who is serving, for the debug log."""
        super().__init__(("127.0.0.1", 0), handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would reverse-resolve the address (getfqdn): skip that
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]

    def finish_request(self: Self, request: Any, client_address: Any) -> None:
        request.settimeout(SOCKET_TIMEOUT_S)
        try:
            # An answer is written as its head, then its body. With Nagle's algorithm on,
            # the body's last short segment waited for the client's delayed ACK: up to
            # 40 ms per download on a kept-alive connection, which made the backlog
            # benchmark measure this server (bench/README.md). Servers in production
            # send at once (nginx's tcp_nodelay is on by default).
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            logger.debug("%s: TLS handshake failed: %s", self.name, exc)
            return
        try:
            self.RequestHandlerClass(connection, client_address, self)
        finally:
            connection.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # clients that give up mid-body are expected here; never print tracebacks to stderr
        logger.debug("%s: connection error", self.name, exc_info=True)


class LoopbackHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive and the idle timeout, and one way to send a whole answer."""

    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S

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
