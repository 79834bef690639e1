"""What a final status means (``status_problem``): an expired link, a definitive refusal,
or a retry after the delay the Retry-After header asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from inbox_poller.errors import DownloadError, DownloadTransient, LinkExpired
from tests.download.harness import RecordingSink
from tests.plugins.https_servers import HttpsServer, Reply


@pytest.mark.parametrize("status", [403, 404, 410])
def test_an_expired_link_is_reported_at_once(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]], status: int
) -> None:
    https_server.route("/p", Reply(status=status, body=b"AccessDenied"))
    with pytest.raises(LinkExpired) as caught:
        fetch("/p")
    assert caught.value.status == status
    assert https_server.hits("/p") == 1


@pytest.mark.parametrize("status", [400, 401, 405, 206])
def test_other_refusals_are_definitive(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]], status: int
) -> None:
    https_server.route("/p", Reply(status=status, body=b"no"))
    with pytest.raises(DownloadError, match=f"HTTP {status}") as caught:
        fetch("/p")
    assert not isinstance(caught.value, LinkExpired | DownloadTransient)
    assert https_server.hits("/p") == 1
