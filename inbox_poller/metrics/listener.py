"""``/metrics`` over HTTP: prometheus_client's WSGI app on a small threaded server.

Only ``GET /metrics`` (and ``/metrics?name[]=…``) is served; every other path is 404.
Requests are not logged (a scrape every 15 s would fill the journal). The listener binds
the configured address only; 127.0.0.1 unless ``[metrics] listen`` says otherwise.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.exposition import make_wsgi_app
from prometheus_client.registry import Collector

from inbox_poller.errors import MetricsError

logger = logging.getLogger("inbox_poller.metrics")

METRICS_PATH = "/metrics"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("metrics: serving %s failed", client_address)


class MetricsListener:
    """Serve *collector* on ``http://host:port/metrics`` from a daemon thread."""

    def __init__(self, host: str, port: int, collector: Collector) -> None:
        app = make_wsgi_app(collector)

        def only_metrics(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            if environ.get("PATH_INFO") != METRICS_PATH:
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"only /metrics is served here\n"]
            result: Iterable[bytes] = app(environ, start_response)
            return result

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("MetricsServer", (_Server,), {"address_family": family})
        try:
            self._server: WSGIServer = make_server(
                host, port, only_metrics, server_class=server_class, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise MetricsError(
                f"metrics.listen: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-listener", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port bound (the configured one, or the kernel's choice for port 0)."""
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
