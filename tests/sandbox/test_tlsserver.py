"""The sandbox's HTTPS servers' common base (``sandbox/tlsserver.py``), over loopback."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import pytest
import requests

from inbox_poller.sandbox.localca import LocalCA
from inbox_poller.sandbox.tlsserver import LoopbackHandler, LoopbackTlsServer


class _SocketOptions(LoopbackHandler):
    """Answers with the server side's TCP_NODELAY option of the connection it runs on."""

    def do_GET(self) -> None:
        nodelay = self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        self._send(200, str(nodelay).encode(), "text/plain")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(https_ca: LocalCA) -> Iterator[LoopbackTlsServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(https_ca.server_cert, https_ca.server_key)
    httpd = LoopbackTlsServer(context, _SocketOptions, "socket options")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_answers_are_sent_without_waiting_for_the_clients_ack(
    server: LoopbackTlsServer, https_ca: LocalCA
) -> None:
    # with Nagle's algorithm on, a body's last short segment waits for the client's
    # delayed ACK on a kept-alive connection: the server must not measure that
    with requests.Session() as session:
        session.trust_env = False
        url = f"https://127.0.0.1:{server.server_port}/"
        for _ in range(2):  # the first connection, then the same one kept alive
            answer = session.get(url, verify=str(https_ca.ca_cert), timeout=10)
            assert answer.status_code == 200
            assert int(answer.text) != 0
