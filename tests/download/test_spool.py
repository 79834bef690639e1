"""The spool: a failure of the sink's write stops the download, never retried."""

from __future__ import annotations

import pytest

from inbox_poller.download.fetcher import SafeDownloader
from inbox_poller.errors import ArchiveError
from tests.download.harness import BIG, RecordingSink, make_config
from tests.plugins.https_servers import HttpsServer, Reply


class FailingSink(RecordingSink):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def write(self, data: bytes) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error", [ArchiveError("disk full"), OSError(28, "No space left on device")], ids=repr
)
def test_a_failing_sink_stops_the_download_without_retrying(
    https_server: HttpsServer, error: Exception
) -> None:
    https_server.route("/big", Reply(body=BIG))
    downloader = SafeDownloader(make_config(https_server), ca_file=https_server.ca_file)
    with pytest.raises(ArchiveError, match=r"disk full|No space left"):
        downloader.download(https_server.url("/big"), FailingSink(error))
    assert https_server.hits("/big") == 1
