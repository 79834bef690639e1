"""The spool: every piece reaches the sink and the check in order, from a few reused
buffers; a failure of the sink's write stops the download, never retried."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from inbox_poller.download.fetcher import SafeDownloader
from inbox_poller.download.spool import BUFFERS, Spool
from inbox_poller.errors import ArchiveError
from tests.download.harness import BIG, PAYLOAD, RecordingSink, make_config
from tests.plugins.https_servers import HttpsServer, Reply


class FailingSink(RecordingSink):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def write(self, data: bytes | memoryview) -> None:
        raise self.error


@pytest.mark.parametrize("body", [BIG, PAYLOAD], ids=["many pieces", "one piece"])
@pytest.mark.parametrize(
    "error", [ArchiveError("disk full"), OSError(28, "No space left on device")], ids=repr
)
def test_a_failing_sink_stops_the_download_without_retrying(
    https_server: HttpsServer, error: Exception, body: bytes
) -> None:
    https_server.route("/payload", Reply(body=body))
    downloader = SafeDownloader(make_config(https_server), ca_file=https_server.ca_file)
    with pytest.raises(ArchiveError, match=r"disk full|No space left"):
        downloader.download(https_server.url("/payload"), FailingSink(error))
    assert https_server.hits("/payload") == 1


def test_the_writer_and_the_check_get_every_piece_in_order_from_a_few_reused_buffers() -> None:
    written = bytearray()
    checked = bytearray()

    def slow_write(piece: memoryview) -> None:
        time.sleep(0.001)  # the reader gets ahead: it must wait for a free buffer
        written.extend(piece)

    class Check:
        def feed(self, piece: memoryview) -> None:
            checked.extend(piece)

    spool = Spool(slow_write, Check(), chunk_bytes=64)
    buffers: set[int] = set()
    sent = bytearray()
    for n in range(10 * BUFFERS):
        buffer = spool.buffer()
        buffers.add(id(buffer.obj))
        piece = bytes([n % 256]) * (1 + n % 64)
        buffer[: len(piece)] = piece
        spool.put(len(piece))
        sent += piece
    digest = spool.finish()
    assert written == sent and checked == sent
    assert len(buffers) <= BUFFERS
    assert digest == hashlib.sha256(sent).hexdigest()


def test_a_payload_of_one_piece_makes_one_buffer_not_all_of_them() -> None:
    checked = bytearray()

    class Check:
        def feed(self, piece: memoryview) -> None:
            checked.extend(piece)

    spool = Spool(lambda piece: None, Check(), chunk_bytes=1 << 20)
    buffer = spool.buffer()
    buffer[:5] = b"[1,2]"
    spool.put(5)
    assert spool.finish() == hashlib.sha256(b"[1,2]").hexdigest()
    assert checked == b"[1,2]"
    assert len(spool._views) == 1  # 1 MiB, not BUFFERS MiB, for a small payload


def test_one_piece_is_stored_by_the_calling_thread_and_a_second_starts_the_helpers() -> None:
    writers: list[str] = []
    checkers: list[str] = []

    class Check:
        def feed(self, piece: memoryview) -> None:
            checkers.append(threading.current_thread().name)

    def write(piece: memoryview) -> None:
        writers.append(threading.current_thread().name)

    one = Spool(write, Check(), chunk_bytes=16)
    one.buffer()[:2] = b"[]"
    one.put(2)
    assert writers == checkers == []  # held until the spool knows whether more comes
    one.finish()
    assert writers == checkers == [threading.current_thread().name]

    writers.clear()
    checkers.clear()
    two = Spool(write, Check(), chunk_bytes=16)
    for piece in (b"[1,", b"2]"):
        two.buffer()[: len(piece)] = piece
        two.put(len(piece))
    two.finish()
    assert writers == ["download-write"] * 2 and checkers == ["download-check"] * 2
