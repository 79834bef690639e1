"""SafeDownloader against real loopback HTTPS servers with scripted faults.

"Public" and "private" hosts are stood in for by an injected resolver; nothing but
127.0.0.1 is ever connected to (the connect spy and the suite's guard both check).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import logging
import random
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from inbox_poller.download import fetcher, validation
from inbox_poller.download.fetcher import SafeDownloader
from inbox_poller.errors import (
    ArchiveError,
    DownloadError,
    DownloadTransient,
    PayloadInvalid,
    PayloadTooLarge,
)
from inbox_poller.models import utc_now
from tests.download.harness import (
    BIG,
    PAYLOAD,
    PAYLOAD_SHA,
    RecordingSink,
    localhost_resolver,
    make_config,
)
from tests.plugins.https_servers import HttpsServer, Reply, redirect

# --- the happy path -----------------------------------------------------------------------


def test_a_payload_is_streamed_validated_and_hashed(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/export.json", Reply(body=PAYLOAD))
    result, sink = fetch("/export.json?sig=s3cr3t")
    assert bytes(sink.data) == PAYLOAD
    assert result.bytes == len(PAYLOAD)
    assert result.sha256 == PAYLOAD_SHA
    assert (result.records, result.top_level, result.attempts) == (500, "object", 1)
    assert result.final_url == f"https://localhost:{https_server.port}/export.json?…"
    [seen] = https_server.requests
    assert seen.path == "/export.json?sig=s3cr3t"
    assert seen.server_name == "localhost"
    assert seen.headers["host"] == f"localhost:{https_server.port}"
    assert seen.headers["user-agent"].startswith("inbox-poller/")
    assert "authorization" not in seen.headers
    assert "cookie" not in seen.headers


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body=PAYLOAD, length="none"),
        Reply(body=PAYLOAD, chunked=True),
        Reply(body=PAYLOAD, gzip=True),
        Reply(body=PAYLOAD, gzip=True, chunked=True),
        Reply(body=PAYLOAD, gzip=True, length="none"),
    ],
    ids=["close-delimited", "chunked", "gzip", "gzip-chunked", "gzip-close-delimited"],
)
def test_every_transfer_form_stores_the_decoded_document(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]], reply: Reply
) -> None:
    https_server.route("/p", reply)
    result, sink = fetch("/p")
    assert bytes(sink.data) == PAYLOAD
    assert (result.bytes, result.sha256, result.records) == (len(PAYLOAD), PAYLOAD_SHA, 500)


def test_a_large_payload_arrives_whole_in_several_chunks(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]], tmp_path: Path
) -> None:
    body = BIG
    path = tmp_path / "big.json"
    path.write_bytes(body)
    https_server.route("/big", Reply(file=path))
    result, sink = fetch("/big")
    assert result.bytes == len(body) > 3 * fetcher.CHUNK_BYTES
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert result.records == 15_000
    assert sink.events.count("write") >= 3


# --- the fast check and ijson, the authority ----------------------------------------------


def test_a_huge_item_is_validated_again_without_counting_and_not_downloaded_again(
    https_server: HttpsServer,
    fetch: Callable[..., tuple[Any, RecordingSink]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(validation, "MAX_ITEM_BYTES", 256 * 1024)
    body = json.dumps([{"blob": "x" * 600_000}, 1, 2]).encode()
    https_server.route("/p", Reply(body=body))
    result, sink = fetch("/p")
    assert (result.records, result.top_level) == (None, "array")
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert bytes(sink.data) == body
    assert sink.restarts == 0
    assert sink.events.count("read_back") == 1
    assert https_server.hits("/p") == 1


def test_a_record_payload_is_validated_while_it_streams(
    https_server: HttpsServer,
    fetch: Callable[..., tuple[Any, RecordingSink]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    https_server.route("/p", Reply(body=BIG, chunked=True))
    caplog.set_level(logging.INFO, logger="inbox_poller.download")
    result, sink = fetch("/p")
    assert (result.records, result.top_level) == (15_000, "array")
    assert "read_back" not in sink.events  # ijson never ran
    assert not any("undecided" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("body", "records"),
    [
        (b'{"data": {"item": [18446744073709551616, 1, 2]}}', 3),  # beyond simdjson's 64 bits
        (b"[" + b"7" * 5000 + b"]", 1),  # beyond what ijson converts (shortened for it)
        (b'{"a": {"b": {"c": [1]}}}', None),  # no main array near the start
    ],
    ids=["bigint", "5000-digits", "no-main-array"],
)
def test_a_payload_the_fast_check_leaves_undecided_is_validated_from_the_sink(
    https_server: HttpsServer,
    fetch: Callable[..., tuple[Any, RecordingSink]],
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    records: int | None,
) -> None:
    https_server.route("/p", Reply(body=body))
    caplog.set_level(logging.INFO, logger="inbox_poller.download")
    result, sink = fetch("/p")
    assert result.records == records
    assert (result.sha256, sink.events.count("read_back")) == (hashlib.sha256(body).hexdigest(), 1)
    assert any("validating with ijson" in record.getMessage() for record in caplog.records)


def test_an_invalid_payload_is_refused_by_ijson_from_the_sink(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    body = BIG[:-2] + b",]"
    https_server.route("/p", Reply(body=body))
    with pytest.raises(PayloadInvalid, match=f"at or before byte {len(body)}"):
        fetch("/p")
    assert https_server.hits("/p") == 1


# --- red-team payloads: nesting, the end of the document, surrogates (reliability.md §3.5) --

NESTED = b"[" * 65536 + b"]" * 65536
"""128 KiB, 152 bytes deflated: ijson alone took 10 GiB over it."""
_NESTED_CHILD = """
import resource, sys
from pathlib import Path
limit = int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from inbox_poller.config import DownloadConfig
from inbox_poller.download.fetcher import SafeDownloader
from inbox_poller.errors import PayloadInvalid
from tests.download.harness import RecordingSink
config = DownloadConfig(allowed_hosts=(sys.argv[3],), allow_private_addresses=True)
resolver = lambda host, port: ["127.0.0.1"]
downloader = SafeDownloader(config, ca_file=Path(sys.argv[2]), resolver=resolver)
try:
    downloader.download(sys.argv[1], RecordingSink())
except PayloadInvalid as exc:
    print("refused:", exc)
else:
    print("accepted")
# VmHWM, not getrusage's ru_maxrss: that one starts at the peak of the process this one
# was forked from (Linux keeps it across exec), so it measured the test runner
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print("peak KiB", hwm.split()[1])
"""
_NESTED_AS_LIMIT = 2 << 30
"""The child's address space: far above what it needs, far below what ijson alone took."""
_NESTED_MAX_RSS_KIB = 200 * 1024


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body=NESTED),
        Reply(body=NESTED, gzip=True),
        Reply(body=zlib.compress(NESTED, 9), headers={"Content-Encoding": "deflate"}),
    ],
    ids=["plain-128KiB", "gzip", "deflate-152B"],
)
def test_deeply_nested_json_is_refused_in_bounded_memory(
    https_server: HttpsServer, reply: Reply
) -> None:
    https_server.route("/nested.json", reply)
    argv = [https_server.url("/nested.json"), str(https_server.ca_file), https_server.host_rule]
    child = subprocess.run(
        [sys.executable, "-c", _NESTED_CHILD, *argv, str(_NESTED_AS_LIMIT)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    verdict, peak = child.stdout.splitlines()
    assert verdict.startswith("refused: ") and "nested deeper than 512" in verdict
    assert int(peak.split()[-1]) < _NESTED_MAX_RSS_KIB


def test_a_document_followed_by_an_unterminated_string_is_refused(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    records = [{"contactid": i, "emailaddress": f"user{i}@example.test"} for i in range(60_000)]
    body = json.dumps(records).encode() + b'"ERROR: export incomplete'
    https_server.route("/p", Reply(body=body, chunked=True))
    with pytest.raises(PayloadInvalid, match="trailing garbage") as caught:
        fetch("/p")
    assert f"byte {len(body) - 25}" in str(caught.value)


@pytest.mark.parametrize("escape", [b"\\ud800", b"\\udc00"], ids=["high", "low"])
def test_a_lone_surrogate_escape_is_refused_high_or_low(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]], escape: bytes
) -> None:
    https_server.route("/pair", Reply(body=b'[{"name": "\\ud83d\\ude00"}]'))
    assert fetch("/pair")[0].records == 1
    https_server.route("/lone", Reply(body=b'[{"name": "' + escape + b'"}, {"name": "x"}]'))
    with pytest.raises(PayloadInvalid, match="unpaired UTF-16 surrogate escape"):
        fetch("/lone")


class StoppingStream(io.BytesIO):
    """A read-back stream that raises the stop request on its first read."""

    def __init__(self, data: bytes, stop: threading.Event) -> None:
        super().__init__(data)
        self.stop = stop

    def read(self, size: int | None = -1) -> bytes:
        self.stop.set()
        return super().read(size)


def test_a_stop_request_interrupts_the_validation_from_the_sink(
    https_server: HttpsServer,
) -> None:
    stop = threading.Event()

    class Sink(RecordingSink):
        def read_back(self) -> BinaryIO:
            return StoppingStream(bytes(self.data), stop)

    https_server.route("/p", Reply(body=b'{"a": {"b": {"c": [1]}}}'))
    downloader = SafeDownloader(make_config(https_server), ca_file=https_server.ca_file, stop=stop)
    with pytest.raises(DownloadTransient, match="stopped"):
        downloader.download(https_server.url("/p"), Sink())


def test_a_sink_that_cannot_be_read_back_is_an_archive_error(
    https_server: HttpsServer,
) -> None:
    class Sink(RecordingSink):
        def read_back(self) -> BinaryIO:
            raise PermissionError(13, "Permission denied")

    https_server.route("/p", Reply(body=b"[1e400]"))
    downloader = SafeDownloader(make_config(https_server), ca_file=https_server.ca_file)
    with pytest.raises(ArchiveError, match="cannot read the payload back"):
        downloader.download(https_server.url("/p"), Sink())


# --- invalid payloads and sizes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (PAYLOAD[:-40], "premature EOF"),
        (PAYLOAD + b" {}", "trailing garbage"),
        (b'{"a": 1}{"b": 2}', "trailing garbage"),
        (b'["caf\xe9 au lait"]', "invalid bytes in UTF8"),
        # issue 12: an HTML page is named as such, whatever was asked for
        (b"<html><body>Service temporarily unavailable</body></html>", "an HTML page arrived"),
        (b"", "premature EOF"),
        (b"[NaN]", "invalid char"),
        (b"[1, 2,]", "unallowed token"),
    ],
    ids=["truncated", "trailing", "two-documents", "bad-utf8", "html", "empty", "nan", "comma"],
)
def test_an_invalid_document_is_refused_without_retrying(
    https_server: HttpsServer,
    fetch: Callable[..., tuple[Any, RecordingSink]],
    body: bytes,
    reason: str,
) -> None:
    https_server.route("/p", Reply(body=body, headers={"Content-Type": "application/json"}))
    with pytest.raises(PayloadInvalid, match=reason) as caught:
        fetch("/p")
    assert "byte" in str(caught.value)
    assert "example.test" not in str(caught.value)  # no payload excerpt
    assert https_server.hits("/p") == 1


def test_a_declared_length_over_the_cap_is_refused_before_reading(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/p", Reply(body=PAYLOAD))
    with pytest.raises(PayloadTooLarge, match="Content-Length"):
        fetch("/p", max_bytes=1000)
    assert https_server.hits("/p") == 1


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "close-delimited"])
def test_decoded_bytes_over_the_cap_stop_the_download(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]], chunked: bool
) -> None:
    https_server.route("/p", Reply(body=PAYLOAD, chunked=chunked, length="none"))
    with pytest.raises(PayloadTooLarge, match="max_bytes"):
        fetch("/p", max_bytes=1000)


@functools.cache
def _gzip_bomb(size: int) -> bytes:
    """A small gzip body that decodes to *size* bytes of a valid-looking JSON array."""
    return gzip.compress(b"[" + b" " * size, compresslevel=9)


def test_a_gzip_bomb_stops_at_the_cap_in_bounded_memory(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    bomb = _gzip_bomb(128 * 1024 * 1024)
    assert len(bomb) < 200 * 1024
    https_server.route("/p", Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
    started = time.monotonic()
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            fetch("/p", max_bytes=4 * 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 * 1024 * 1024
    assert time.monotonic() - started < 5


def test_a_redirect_body_is_never_read(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    bomb = _gzip_bomb(128 * 1024 * 1024)
    https_server.route("/go", redirect("/p", body=bomb, headers={"Content-Encoding": "gzip"}))
    https_server.route("/p", Reply(body=PAYLOAD))
    tracemalloc.start()
    try:
        result, _ = fetch("/go")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.sha256 == PAYLOAD_SHA
    assert peak < 24 * 1024 * 1024


def test_an_unsupported_content_encoding_is_refused(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/p", Reply(body=PAYLOAD, headers={"Content-Encoding": "br"}))
    with pytest.raises(PayloadInvalid, match="Content-Encoding"):
        fetch("/p")


# --- retries, truncation, stalls ----------------------------------------------------------


def test_server_errors_are_retried_then_the_download_succeeds(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/p", Reply(status=500), Reply(status=503), Reply(body=PAYLOAD))
    result, sink = fetch("/p")
    assert (result.attempts, result.sha256) == (3, PAYLOAD_SHA)
    assert bytes(sink.data) == PAYLOAD  # equal to an uninterrupted download
    assert sink.restarts == 2


@pytest.mark.parametrize(("pick", "total"), [(min, 0.5 + 1 + 2), (max, 1 + 2 + 4)])
def test_back_off_doubles_with_jitter(
    https_server: HttpsServer,
    fetch: Callable[..., tuple[Any, RecordingSink]],
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
    pick: Callable[[float, float], float],
    total: float,
) -> None:
    # jitter draws from [delay/2, delay]; pin the draw to either end of the range
    monkeypatch.setattr(random, "uniform", lambda low, high: low + pick(0, high - low))
    https_server.route(
        "/p", Reply(status=502), Reply(status=502), Reply(status=502), Reply(body=PAYLOAD)
    )
    result, _ = fetch("/p", backoff_s=1.0)
    assert result.attempts == 4
    assert sum(sleeps) == pytest.approx(total)
    assert max(sleeps) <= fetcher._PAUSE_SLICE_S


def test_retries_are_bounded(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/p", Reply(status=503))
    with pytest.raises(DownloadTransient, match=r"HTTP 503 \(after 3 failed tries\)") as caught:
        fetch("/p", retries=2)
    assert caught.value.retryable
    assert https_server.hits("/p") == 3


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        ("in 20 s as an HTTP-date", 20.0),
        ("100000", fetcher.MAX_RETRY_AFTER_S),
    ],
    ids=["seconds", "http-date", "capped"],
)
def test_retry_after_is_honoured(
    https_server: HttpsServer,
    fetch: Callable[..., tuple[Any, RecordingSink]],
    sleeps: list[float],
    header: str,
    expected: float,
) -> None:
    if "HTTP-date" in header:
        header = format_datetime(utc_now() + timedelta(seconds=20), usegmt=True)
    https_server.route(
        "/p", Reply(status=429, headers={"Retry-After": header}), Reply(body=PAYLOAD)
    )
    result, _ = fetch("/p")
    assert result.attempts == 2
    assert sum(sleeps) == pytest.approx(expected, abs=2.0)


def test_a_retry_after_beyond_the_deadline_gives_up_at_once(
    https_server: HttpsServer,
    fetch: Callable[..., tuple[Any, RecordingSink]],
    sleeps: list[float],
) -> None:
    https_server.route("/p", Reply(status=503, headers={"Retry-After": "120"}))
    with pytest.raises(DownloadTransient, match=r"HTTP 503.*deadline"):
        fetch("/p", deadline_s=60)
    assert sleeps == []
    assert https_server.hits("/p") == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_truncated_body_is_retried_and_the_result_is_whole(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]], chunked: bool
) -> None:
    https_server.route(
        "/p", Reply(body=BIG, chunked=chunked, truncate_after=len(BIG) - 100), Reply(body=BIG)
    )
    result, sink = fetch("/p")
    assert (result.attempts, result.sha256) == (2, hashlib.sha256(BIG).hexdigest())
    assert bytes(sink.data) == BIG
    first_restart = sink.events.index("restart")
    assert first_restart > 0  # part of the first try was written, then discarded


def test_a_body_that_is_always_truncated_is_never_accepted(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/p", Reply(body=PAYLOAD, truncate_after=len(PAYLOAD) - 1))
    with pytest.raises(DownloadTransient, match="ended"):
        fetch("/p", retries=2)
    assert https_server.hits("/p") == 3


def test_a_stall_mid_body_is_retried_within_the_read_timeout(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/p", Reply(body=PAYLOAD, stall_after=1000, stall_s=30), Reply(body=PAYLOAD))
    started = time.monotonic()
    result, _ = fetch("/p", read_timeout_s=0.3)
    assert (result.attempts, result.sha256) == (2, PAYLOAD_SHA)
    assert time.monotonic() - started < 0.3 + 1.0


def test_an_unreachable_server_is_transient(
    fetch: Callable[..., tuple[Any, RecordingSink]], https_server: HttpsServer
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(DownloadTransient, match="cannot connect"):
        fetch(f"https://localhost:{port}/p", retries=1, extra_hosts=[f"localhost:{port}"])


def test_the_deadline_bounds_the_whole_download(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/p", Reply(body=PAYLOAD, stall_after=1000, stall_s=30))
    started = time.monotonic()
    with pytest.raises(DownloadTransient, match="deadline"):
        fetch("/p", read_timeout_s=20, deadline_s=0.5)
    assert time.monotonic() - started < 2


# --- redirects and TLS --------------------------------------------------------------------


def test_up_to_three_redirects_are_followed_each_one_checked(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/a", redirect(https_server.url("/b"), status=301))
    https_server.route("/b", redirect("/dir/c", status=307))
    https_server.route("/dir/c", redirect("../d?sig=2", status=308))
    https_server.route("/d", Reply(body=PAYLOAD))
    resolver = localhost_resolver()
    result, _ = fetch("/a?sig=1", resolver=resolver)
    assert result.sha256 == PAYLOAD_SHA
    assert result.final_url == f"https://localhost:{https_server.port}/d?…"
    assert resolver.calls == ["localhost"] * 4
    assert [seen.path for seen in https_server.requests] == ["/a?sig=1", "/b", "/dir/c", "/d?sig=2"]


def test_a_fourth_redirect_is_refused(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    for hop in range(4):
        https_server.route(f"/{hop}", redirect(f"/{hop + 1}"))
    https_server.route("/4", Reply(body=PAYLOAD))
    with pytest.raises(DownloadError, match="more than 3 redirects"):
        fetch("/0")
    assert https_server.hits("/4") == 0


def test_a_redirect_loop_is_refused(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/a", redirect("/b"))
    https_server.route("/b", redirect("/a"))
    with pytest.raises(DownloadError, match="loop"):
        fetch("/a")


def test_an_unknown_certificate_authority_is_refused(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/p", Reply(body=PAYLOAD))
    with pytest.raises(DownloadError, match="certificate check failed"):
        fetch("/p", ca=None)
    assert https_server.hits("/p") == 0
    assert len(https_server.server_names) == 1


# --- no ambient credentials, proxies or cookies (docs/reliability.md §9, item 29) ---------


def test_netrc_and_proxy_settings_in_the_environment_are_ignored(
    https_server: HttpsServer,
    fetch: Callable[..., tuple[Any, RecordingSink]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine localhost login canary-user password canary-pass\n")
    netrc.chmod(0o600)
    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(5)
    proxy.settimeout(0.2)
    proxy_url = f"http://canary:canary@127.0.0.1:{proxy.getsockname()[1]}"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    https_server.route("/p", Reply(body=PAYLOAD))
    try:
        result, _ = fetch("/p")
        with pytest.raises(TimeoutError):
            proxy.accept()
    finally:
        proxy.close()
    assert result.sha256 == PAYLOAD_SHA
    [seen] = https_server.requests
    assert "authorization" not in seen.headers
    assert "proxy-authorization" not in seen.headers


def test_cookies_are_never_sent_back(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/a", redirect("/b", headers={"Set-Cookie": "session=canary; Path=/"}))
    https_server.route(
        "/b", Reply(status=503, headers={"Set-Cookie": "other=canary; Path=/"}), Reply(body=PAYLOAD)
    )
    result, _ = fetch("/a")
    assert result.attempts == 2
    assert all("cookie" not in seen.headers for seen in https_server.requests)


# --- stop request and logging -------------------------------------------------------------


def test_a_stop_request_aborts_a_stalled_read_promptly(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/p", Reply(body=PAYLOAD, stall_after=1000, stall_s=30))
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(DownloadTransient, match="stopped"):
            fetch("/p", stop=stop, read_timeout_s=20)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 1.5


def test_a_stop_request_interrupts_the_back_off(
    https_server: HttpsServer, https_ca: Any, tmp_path: Path
) -> None:
    https_server.route("/p", Reply(status=503, headers={"Retry-After": "60"}))
    stop = threading.Event()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        stop.set()

    downloader = SafeDownloader(
        make_config(https_server), ca_file=https_server.ca_file, sleep=sleep, stop=stop
    )
    with pytest.raises(DownloadTransient, match="stopped"):
        downloader.download(https_server.url("/p"), RecordingSink())
    assert slept == [fetcher._PAUSE_SLICE_S]


def test_a_stop_set_before_starting_connects_nowhere(
    https_server: HttpsServer,
    fetch: Callable[..., tuple[Any, RecordingSink]],
    connects: list[Any],
) -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(DownloadTransient, match="stopped"):
        fetch("/p", stop=stop)
    assert connects == []


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body=PAYLOAD),
        Reply(status=503),
        Reply(status=404),
        Reply(body=b"<html>"),
        Reply(body=PAYLOAD, truncate_after=100),
    ],
    ids=["ok", "503", "404", "invalid", "truncated"],
)
def test_logs_and_errors_never_show_the_query_string(
    https_server: HttpsServer,
    fetch: Callable[..., tuple[Any, RecordingSink]],
    caplog: pytest.LogCaptureFixture,
    reply: Reply,
) -> None:
    https_server.route("/p", reply)
    caplog.set_level(logging.DEBUG, logger="inbox_poller")
    message = ""
    try:
        fetch("/p?X-Amz-Signature=CANARY-SIG", retries=1)
    except DownloadError as exc:
        message = f"{exc} {exc.__cause__!r}"
    ours = [record for record in caplog.records if record.name.startswith("inbox_poller")]
    assert any("starting" in record.getMessage() for record in ours)
    assert all("CANARY" not in record.getMessage() for record in ours)
    assert "CANARY" not in message
