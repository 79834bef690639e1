"""Which addresses a download may reach: refusals before any connection, and pinning.

Through ``SafeDownloader`` against the loopback HTTPS server: the URL and every address
its host resolves to are checked before connecting, and the connection goes to the
checked address under the URL's host name. "Public" and "private" hosts are stood in
for by an injected resolver; nothing but 127.0.0.1 is ever connected to (the connect spy
and the suite's guard both check).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from inbox_poller.download.addresses import METADATA_ADDRESSES, address_refusal
from inbox_poller.download.fetcher import SafeDownloader
from inbox_poller.errors import DownloadError, DownloadRefused, DownloadTransient
from tests.download.harness import (
    BIG,
    PAYLOAD,
    PAYLOAD_SHA,
    FakeResolver,
    RecordingSink,
    localhost_resolver,
    make_config,
)
from tests.plugins.https_servers import HttpsServer, Reply, redirect

# --- refusals before any connection (docs/reliability.md §9, items 27, 28) ----------------

RULES = ("files.example.test", ".cdn.example.test", "alt.example.test:8443")

URL_REFUSALS = [
    ("http://files.example.test/p", "not https"),
    ("ftp://files.example.test/p", "not https"),
    ("//files.example.test/p", "not https"),
    ("https://user:pw@files.example.test/p", "user info"),
    ("https://user@files.example.test/p", "user info"),
    ("https://93.184.216.34/p", "IP address"),
    ("https://[2606:4700::1111]/p", "IP address"),
    ("https://127.0.0.1/p", "IP address"),
    ("https://files.example.test:8443/p", "not in download.allowed_hosts"),
    ("https://alt.example.test/p", "not in download.allowed_hosts"),
    ("https://evilfiles.example.test/p", "not in download.allowed_hosts"),
    ("https://files.example.test.evil.test/p", "not in download.allowed_hosts"),
    ("https://cdn.example.test/p", "not in download.allowed_hosts"),
    ("https://xcdn.example.test/p", "not in download.allowed_hosts"),
    ("https://localhost/p", "not in download.allowed_hosts"),
    ("https://files.example.test\\@evil.test/p", "backslashes"),
    ("https://files.example.test /p", "spaces"),
    ("https://fïles.example.test/p", "plain ASCII"),
    ("https:///p", "no host"),
]


@pytest.mark.parametrize(("url", "reason"), URL_REFUSALS)
def test_a_url_outside_the_policy_is_refused_before_resolving(
    url: str, reason: str, connects: list[Any]
) -> None:
    resolver = FakeResolver({})
    downloader = SafeDownloader(make_config(extra_hosts=list(RULES)), resolver=resolver)
    sink = RecordingSink()
    with pytest.raises(DownloadRefused, match=reason):
        downloader.download(url, sink)
    assert resolver.calls == []
    assert connects == []
    assert sink.events == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "https://user:secret@files.example.test/p?sig=x",
            "https://<userinfo>@files.example.test/p?…: the URL carries user info "
            "(a client would connect to files.example.test)",
        ),
        (
            "https://files.example.test\\@evil.test/p?sig=x",
            "https://files.example.test\\@evil.test/p?…: the URL contains spaces, control "
            "characters or backslashes (a client would connect to files.example.test; "
            "urllib.parse sees evil.test)",
        ),
    ],
)
def test_a_refused_url_names_the_host_a_client_would_reach(url: str, message: str) -> None:
    downloader = SafeDownloader(make_config(extra_hosts=list(RULES)), resolver=FakeResolver({}))
    with pytest.raises(DownloadRefused) as refused:
        downloader.download(url, RecordingSink())
    assert str(refused.value) == message


ADDRESS_REFUSALS = [
    (["10.0.0.1"], False, "not a public address"),
    (["192.168.1.1"], False, "not a public address"),
    (["172.16.5.4"], False, "not a public address"),
    (["127.0.0.1"], False, "not a public address"),
    (["::1"], False, "not a public address"),
    (["100.64.0.1"], False, "not a public address"),
    (["fd12:3456::1"], False, "not a public address"),
    (["::ffff:127.0.0.1"], False, "127.0.0.1 is not a public address"),
    (["::ffff:10.1.1.1"], False, "10.1.1.1 is not a public address"),
    (["169.254.169.254"], True, "link-local"),
    (["::ffff:169.254.169.254"], True, "link-local"),
    (["2002:a9fe:a9fe::1"], True, "link-local"),  # 6to4 around the metadata address
    (["64:ff9b::a9fe:a9fe"], True, "link-local"),  # NAT64 around the metadata address
    (["fe80::1"], True, "link-local"),
    (["0.0.0.0"], True, "unspecified"),  # noqa: S104 - an answer to refuse, not a bind
    (["::"], True, "unspecified"),
    (["224.0.0.1"], True, "multicast"),
    (["ff02::1"], True, "multicast"),
    (["fec0::1"], True, "link-local, multicast"),  # deprecated site-local
    (["::7f00:1"], True, "not a public address"),  # IPv4-compatible, reserved
    (["240.0.0.1"], True, "not a public address"),
    (["255.255.255.255"], True, "not a public address"),
    (["2001:db8::1"], True, "not a public address"),
    (["93.184.216.34", "10.0.0.1"], False, "10.0.0.1 is not a public address"),
    (["93.184.216.34", "169.254.169.254"], True, "link-local"),
    # red-team 7: metadata endpoints inside the private ranges, or public, opted in or not
    (["fd00:ec2::254"], True, "fd00:ec2::254 is a cloud metadata address"),
    (["100.100.100.200"], True, "100.100.100.200 is a cloud metadata address"),
    (["fd20:ce::254"], True, "fd20:ce::254 is a cloud metadata address"),
    (["192.0.0.192"], True, "192.0.0.192 is a cloud metadata address"),
    (["168.63.129.16"], False, "168.63.129.16 is a cloud metadata address"),
    (["168.63.129.16"], True, "168.63.129.16 is a cloud metadata address"),
    (["::ffff:100.100.100.200"], True, "100.100.100.200 is a cloud metadata address"),
    (["64:ff9b::6464:64c8"], True, "100.100.100.200 is a cloud metadata address"),  # NAT64
    (["10.0.0.1", "fd00:ec2::254"], True, "fd00:ec2::254 is a cloud metadata address"),
]


@pytest.mark.parametrize(("answer", "allow_private", "reason"), ADDRESS_REFUSALS)
def test_a_host_resolving_to_a_forbidden_address_is_refused_before_connecting(
    answer: list[str], allow_private: bool, reason: str, connects: list[Any]
) -> None:
    resolver = FakeResolver({"files.example.test": [answer]})
    config = make_config(extra_hosts=list(RULES), allow_private_addresses=allow_private)
    downloader = SafeDownloader(config, resolver=resolver)
    with pytest.raises(DownloadRefused, match=reason):
        downloader.download("https://files.example.test/export.json?sig=x", RecordingSink())
    assert resolver.calls == ["files.example.test"]
    assert connects == []


@pytest.mark.parametrize("address", sorted(map(str, METADATA_ADDRESSES)))
@pytest.mark.parametrize("allow_private", [False, True])
def test_every_metadata_address_is_refused_whatever_allow_private_says(
    address: str, allow_private: bool
) -> None:
    assert address_refusal(address, allow_private=allow_private) is not None


@pytest.mark.parametrize("address", ["100.100.100.200", "fd00:ec2::254"])
def test_a_metadata_address_is_refused_even_when_listed_exactly(
    address: str, connects: list[Any]
) -> None:
    host = f"[{address}]" if ":" in address else address
    config = make_config(extra_hosts=[host], allow_private_addresses=True)
    downloader = SafeDownloader(config, resolver=FakeResolver({}))
    with pytest.raises(DownloadRefused, match="cloud metadata address"):
        downloader.download(f"https://{host}/latest/meta-data/", RecordingSink())
    assert connects == []


@pytest.mark.parametrize(
    ("address", "allow_private"),
    [
        ("93.184.216.34", False),
        ("2606:4700::1111", False),
        ("64:ff9b::808:808", False),  # NAT64 of a public address
        ("2002:5db8:d822::1", False),  # 6to4 of a public address
        ("127.0.0.1", True),
        ("::1", True),
        ("10.1.2.3", True),
        ("100.64.0.1", True),
        ("fd00::1", True),
        ("::ffff:192.168.0.1", True),
    ],
)
def test_public_and_opted_in_private_addresses_are_allowed(
    address: str, allow_private: bool
) -> None:
    assert address_refusal(address, allow_private=allow_private) is None


# --- redirects re-checked, connections pinned, the name kept for TLS ----------------------


@pytest.mark.parametrize(
    ("location", "error"),
    [
        ("http://localhost:{port}/p", "not https"),
        ("https://elsewhere.test/p", "not in download.allowed_hosts"),
        ("https://localhost:1/p", "not in download.allowed_hosts"),
        ("https://metadata.example.test:{port}/latest", "169.254.169.254 is a link-local"),
        ("https://mixed.example.test:{port}/p", "169.254.169.254 is a link-local"),
    ],
)
def test_a_redirect_out_of_policy_is_refused_before_connecting(
    https_server: HttpsServer,
    fetch: Callable[..., tuple[Any, RecordingSink]],
    connects: list[Any],
    location: str,
    error: str,
) -> None:
    https_server.route("/p", redirect(location.format(port=https_server.port)))
    resolver = FakeResolver(
        {
            "localhost": [["127.0.0.1"]],
            "metadata.example.test": [["169.254.169.254"]],
            "mixed.example.test": [["127.0.0.1", "169.254.169.254"]],
        }
    )
    with pytest.raises(DownloadRefused, match=error):
        fetch("/p", resolver=resolver, extra_hosts=[f".example.test:{https_server.port}"])
    assert {address[0] for address in connects} == {"127.0.0.1"}


def test_the_connection_uses_the_validated_address_not_a_second_lookup(
    https_server: HttpsServer,
    fetch: Callable[..., tuple[Any, RecordingSink]],
    connects: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The system would now answer 127.0.0.2, where nothing listens: a client that
    # resolved the name again at connect time would fail or go elsewhere.
    system_lookup = socket.getaddrinfo

    def rebound(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return system_lookup("127.0.0.2" if host == "localhost" else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebound)
    https_server.route("/p", Reply(body=PAYLOAD))
    resolver = localhost_resolver()
    result, _ = fetch("/p", resolver=resolver)
    assert result.sha256 == PAYLOAD_SHA
    assert resolver.calls == ["localhost"]
    assert {address[0] for address in connects} == {"127.0.0.1"}
    assert https_server.requests[0].server_name == "localhost"


def test_every_try_resolves_and_checks_again(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/p", Reply(status=503), Reply(body=PAYLOAD))
    resolver = FakeResolver({"localhost": [["127.0.0.1"], ["169.254.169.254"]]})
    with pytest.raises(DownloadRefused, match="link-local"):
        fetch("/p", resolver=resolver)
    assert https_server.hits("/p") == 1


def test_the_certificate_is_checked_against_the_url_host_name(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/p", Reply(body=PAYLOAD))
    name = "files.example.test"
    resolver = FakeResolver({name: [["127.0.0.1"]]})
    with pytest.raises(DownloadError, match="certificate check failed") as caught:
        fetch(
            f"https://{name}:{https_server.port}/p",
            resolver=resolver,
            extra_hosts=[f"{name}:{https_server.port}"],
        )
    assert not isinstance(caught.value, DownloadTransient)
    assert https_server.server_names == [name]  # SNI is the name, never the pinned IP
    assert https_server.hits("/p") == 0


def test_the_system_resolver_is_used_by_default(
    https_server: HttpsServer, fetch: Callable[..., tuple[Any, RecordingSink]]
) -> None:
    https_server.route("/p", Reply(body=PAYLOAD))
    result, _ = fetch("/p")
    assert result.sha256 == PAYLOAD_SHA


# --- connections kept between downloads (docs/reliability.md §3.1) ------------------------


@pytest.fixture
def downloader(https_server: HttpsServer, sleeps: list[float]) -> Iterator[SafeDownloader]:
    """One downloader for several downloads, as each download thread of the loop has."""
    made = SafeDownloader(
        make_config(
            https_server, extra_hosts=[f"127.0.0.1:{https_server.port}"], retries=1, backoff_s=1.0
        ),
        ca_file=https_server.ca_file,
        resolver=localhost_resolver(),
        sleep=sleeps.append,
    )
    yield made
    made.close()


def test_the_next_download_to_the_same_host_reuses_the_connection(
    https_server: HttpsServer, downloader: SafeDownloader
) -> None:
    https_server.route("/p", Reply(body=PAYLOAD))
    https_server.route("/q", Reply(body=PAYLOAD, chunked=True))
    for path in ("/p", "/q", "/p"):
        assert downloader.download(https_server.url(path), RecordingSink()).sha256 == PAYLOAD_SHA
    assert https_server.hits("/p") + https_server.hits("/q") == 3
    assert https_server.accepted == 1  # one TCP connection and TLS handshake for all three
    downloader.close()
    downloader.download(https_server.url("/p"), RecordingSink())
    assert https_server.accepted == 2


def test_a_connection_is_kept_per_host_never_shared_between_hosts(
    https_server: HttpsServer, downloader: SafeDownloader
) -> None:
    # localhost and 127.0.0.1 are the same server: a connection to one is still never
    # used for the other (another name is another TLS identity to check)
    https_server.route("/p", Reply(body=PAYLOAD))
    for host in ("localhost", "127.0.0.1", "localhost", "127.0.0.1"):
        downloader.download(https_server.url("/p", host=host), RecordingSink())
    assert https_server.accepted == 2
    assert https_server.server_names.count("localhost") == 1


def test_a_kept_connection_is_not_used_once_its_address_is_no_longer_the_checked_one(
    https_server: HttpsServer, sleeps: list[float], connects: list[Any]
) -> None:
    https_server.route("/p", Reply(body=PAYLOAD))
    # the name now resolves elsewhere (127.0.0.2: nothing listens there): the connection
    # kept to 127.0.0.1 must not carry the request, though it would succeed
    resolver = FakeResolver({"localhost": [["127.0.0.1"], ["127.0.0.2"], ["127.0.0.1"]]})
    downloader = SafeDownloader(
        make_config(https_server, retries=0),
        ca_file=https_server.ca_file,
        resolver=resolver,
        sleep=sleeps.append,
    )
    try:
        downloader.download(https_server.url("/p"), RecordingSink())
        with pytest.raises(DownloadTransient):
            downloader.download(https_server.url("/p"), RecordingSink())
        assert [address[0] for address in connects] == ["127.0.0.1", "127.0.0.2"]
        assert https_server.hits("/p") == 1
        downloader.download(https_server.url("/p"), RecordingSink())
    finally:
        downloader.close()
    assert https_server.accepted == 2  # the first connection was closed, not kept


@pytest.mark.parametrize(
    ("first", "config"),
    [
        (Reply(status=503), {}),
        (Reply(status=404), {}),
        (Reply(body=PAYLOAD, headers={"Connection": "close"}), {}),
        (Reply(body=BIG, chunked=True), {"max_bytes": 100_000}),
        (Reply(body=PAYLOAD, truncate_after=100), {}),
        (Reply(body=PAYLOAD, stall_after=100, stall_s=0.6), {"read_timeout_s": 0.3}),
        (
            Reply(body=PAYLOAD, stall_after=100, stall_s=0.6, close_after_cut=False),
            {"read_timeout_s": 0.3},
        ),
    ],
    ids=[
        "503",
        "404",
        "connection-close",
        "over-the-cap",
        "truncated",
        "stalled",
        "stalled-on-a-kept-connection",
    ],
)
def test_a_connection_is_not_kept_after_an_error_a_partial_body_or_connection_close(
    https_server: HttpsServer,
    sleeps: list[float],
    first: Reply,
    config: dict[str, Any],
) -> None:
    https_server.route("/first", first)
    https_server.route("/p", Reply(body=PAYLOAD))
    downloader = SafeDownloader(
        make_config(https_server, retries=0, **config),
        ca_file=https_server.ca_file,
        resolver=localhost_resolver(),
        sleep=sleeps.append,
    )
    try:
        with contextlib.suppress(DownloadError):
            downloader.download(https_server.url("/first"), RecordingSink())
        result = downloader.download(https_server.url("/p"), RecordingSink())
    finally:
        downloader.close()
    if first.stall_after is not None:
        time.sleep(first.stall_s + 0.2)  # the stalled reply ends: then it reads what came
    assert result.sha256 == PAYLOAD_SHA
    assert https_server.accepted == 2
    assert https_server.hits("/p") == 1  # never sent down the first connection


def test_an_invalid_payload_read_to_its_end_leaves_the_connection_usable(
    https_server: HttpsServer, downloader: SafeDownloader
) -> None:
    # the HTTP exchange ended cleanly; only the payload was refused
    https_server.route("/bad", Reply(body=b'{"a": 1} trailing'))
    https_server.route("/html", Reply(body=b"<html>not json</html>", chunked=True))
    https_server.route("/p", Reply(body=PAYLOAD))
    for refused in ("/bad", "/html"):
        with pytest.raises(DownloadError):
            downloader.download(https_server.url(refused), RecordingSink())
    assert downloader.download(https_server.url("/p"), RecordingSink()).sha256 == PAYLOAD_SHA
    assert https_server.accepted == 1


def test_a_kept_connection_the_server_ended_is_replaced_at_once_without_a_retry(
    https_server: HttpsServer, downloader: SafeDownloader, sleeps: list[float]
) -> None:
    # the server closes the kept connection as the next request arrives: the request is
    # sent again on a new connection, not counted as a failed try, no back-off
    https_server.route("/p", Reply(body=PAYLOAD), Reply(drop=True), Reply(body=PAYLOAD))
    downloader.download(https_server.url("/p"), RecordingSink())
    result = downloader.download(https_server.url("/p"), RecordingSink())
    assert (result.sha256, result.attempts, sleeps) == (PAYLOAD_SHA, 1, [])
    assert https_server.accepted == 2


def test_a_new_connection_that_fails_is_an_ordinary_failed_try(
    https_server: HttpsServer, downloader: SafeDownloader, sleeps: list[float]
) -> None:
    https_server.route("/p", Reply(drop=True), Reply(body=PAYLOAD))
    result = downloader.download(https_server.url("/p"), RecordingSink())
    assert result.attempts == 2
    assert sleeps  # backed off before the second try


def test_a_stop_request_cuts_a_stalled_read_on_a_kept_connection_short(
    https_server: HttpsServer, sleeps: list[float]
) -> None:
    # the kept connection's socket is handed to the stop watch of the download reusing it
    https_server.route("/p", Reply(body=PAYLOAD), Reply(body=PAYLOAD, stall_after=1000, stall_s=30))
    stop = threading.Event()
    downloader = SafeDownloader(
        make_config(https_server, read_timeout_s=20),
        ca_file=https_server.ca_file,
        resolver=localhost_resolver(),
        sleep=sleeps.append,
        stop=stop,
    )
    timer = threading.Timer(0.3, stop.set)
    try:
        downloader.download(https_server.url("/p"), RecordingSink())
        timer.start()
        started = time.monotonic()
        with pytest.raises(DownloadTransient, match="stopped"):
            downloader.download(https_server.url("/p"), RecordingSink())
        assert time.monotonic() - started < 1.5
    finally:
        timer.cancel()
        downloader.close()
    assert https_server.accepted == 1
