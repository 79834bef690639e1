"""Fixtures of the download tests: ``fetch`` runs SafeDownloader against ``https_server``.

``connects`` records every TCP connect a test attempts; ``sleeps`` every back-off pause.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from inbox_poller.download.fetcher import SafeDownloader
from inbox_poller.ports import Downloader
from tests.download.harness import RecordingSink, make_config
from tests.plugins.https_servers import HttpsServer


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address a TCP connect was attempted to, during the test."""
    seen: list[Any] = []
    guarded = socket.socket.connect

    def spy(self: socket.socket, address: Any) -> None:
        seen.append(address)
        guarded(self, address)

    monkeypatch.setattr(socket.socket, "connect", spy)
    return seen


@pytest.fixture
def sleeps() -> list[float]:
    """Every pause the downloader made through ``fetch`` (its ``sleep``), in seconds."""
    return []


@pytest.fixture
def fetch(
    https_server: HttpsServer, sleeps: list[float]
) -> Iterator[Callable[..., tuple[Any, RecordingSink]]]:
    """Download a path of ``https_server``; returns (result, sink) or raises."""
    made: list[Downloader] = []

    def run(
        path: str, *, resolver: Any = None, stop: Any = None, ca: Any = "server", **overrides: Any
    ) -> tuple[Any, RecordingSink]:
        downloader: Downloader = SafeDownloader(  # mypy: it implements the core's Protocol
            make_config(https_server, **overrides),
            ca_file=https_server.ca_file if ca == "server" else ca,
            resolver=resolver,
            sleep=sleeps.append,
            stop=stop,
        )
        made.append(downloader)
        sink = RecordingSink()
        url = path if path.startswith("https://") else https_server.url(path)
        return downloader.download(url, sink), sink

    yield run
    for downloader in made:
        assert isinstance(downloader, SafeDownloader)
        downloader.close()
