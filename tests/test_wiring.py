"""``wiring.DownloaderPool``: each download borrows a downloader, never shared at once.

The downloaders are stand-ins that record what they did (a pure unit test: the real
``SafeDownloader`` keeps its connections between downloads, tests/download/test_addresses.py).
"""

from __future__ import annotations

import threading
from typing import cast

from inbox_poller.download.fetcher import SafeDownloader
from inbox_poller.models import DownloadResult
from inbox_poller.ports import PayloadSink
from inbox_poller.wiring import DownloaderPool
from tests.download.harness import RecordingSink


class _Recorder:
    """Stands in for a SafeDownloader: notes each URL, can hold a download open."""

    def __init__(self, gate: threading.Event | None) -> None:
        self.urls: list[str] = []
        self.closed = False
        self.busy = False
        self._gate = gate

    def download(self, url: str, sink: PayloadSink, *, expected: str = "json") -> DownloadResult:
        assert not self.busy, "one download at a time"
        self.busy = True
        self.urls.append(url)
        if self._gate is not None and url == "slow":
            assert self._gate.wait(5)
        self.busy = False
        return cast(DownloadResult, None)

    def close(self) -> None:
        self.closed = True


def _pool(gate: threading.Event | None = None) -> tuple[DownloaderPool, list[_Recorder]]:
    made: list[_Recorder] = []

    def make() -> SafeDownloader:
        made.append(_Recorder(gate))
        return cast(SafeDownloader, made[-1])

    return DownloaderPool(make), made


def test_downloads_one_after_another_share_one_downloader_and_its_connections() -> None:
    pool, made = _pool()
    for url in ("a", "b", "c"):
        pool.download(url, RecordingSink())
    assert [recorder.urls for recorder in made] == [["a", "b", "c"]]
    pool.close()
    assert made[0].closed


def test_downloads_at_once_get_a_downloader_each_and_later_ones_reuse_them() -> None:
    gate = threading.Event()
    pool, made = _pool(gate)
    slow = threading.Thread(target=pool.download, args=("slow", RecordingSink()))
    slow.start()
    while not made or not made[0].busy:
        threading.Event().wait(0.01)
    pool.download("fast", RecordingSink())  # the first downloader is busy: a second one
    gate.set()
    slow.join(5)
    pool.download("next", RecordingSink())  # the one that finished last
    assert [recorder.urls for recorder in made] == [["slow", "next"], ["fast"]]
    pool.close()
    assert all(recorder.closed for recorder in made)
