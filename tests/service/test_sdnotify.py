"""The notify protocol against real datagram sockets the tests own (path and abstract)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inbox_poller.service.sdnotify import MAX_DATAGRAM_BYTES, STATUS_MAX_CHARS, Notifier, one_line

RECV_TIMEOUT_S = 2.0


@dataclass
class FakeManager:
    """The service manager's end: a bound ``SOCK_DGRAM`` socket and the variable naming it."""

    sock: socket.socket
    notify_socket: str

    def env(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.notify_socket, **extra}

    def receive(self) -> bytes:
        return self.sock.recv(MAX_DATAGRAM_BYTES * 2)

    def assert_nothing_queued(self) -> None:
        self.sock.setblocking(False)
        try:
            with pytest.raises(BlockingIOError):
                self.sock.recv(MAX_DATAGRAM_BYTES * 2)
        finally:
            self.sock.settimeout(RECV_TIMEOUT_S)


def _bound(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(RECV_TIMEOUT_S)
    return sock


@pytest.fixture
def sd_path_manager(tmp_path: Path) -> Iterator[FakeManager]:
    """A notify socket on the filesystem, like systemd's /run/systemd/notify."""
    path = tmp_path / "notify"
    with _bound(str(path)) as sock:
        yield FakeManager(sock, str(path))


@pytest.fixture
def sd_abstract_manager() -> Iterator[FakeManager]:
    """A notify socket in the abstract namespace (``@name``), as systemd-run and nspawn use."""
    name = f"inbox-poller-test/{os.getpid()}/{secrets.token_hex(8)}"
    with _bound("\0" + name) as sock:
        yield FakeManager(sock, "@" + name)


@pytest.fixture(params=["path", "abstract"])
def sd_manager(
    request: pytest.FixtureRequest,
    sd_path_manager: FakeManager,
    sd_abstract_manager: FakeManager,
) -> FakeManager:
    return sd_path_manager if request.param == "path" else sd_abstract_manager


def test_ready_stopping_watchdog_are_exact_datagrams(sd_manager: FakeManager) -> None:
    notifier = Notifier(sd_manager.env())
    assert notifier.enabled
    assert notifier.ready()
    assert notifier.watchdog()
    assert notifier.stopping()
    assert sd_manager.receive() == b"READY=1"
    assert sd_manager.receive() == b"WATCHDOG=1"
    assert sd_manager.receive() == b"STOPPING=1"
    sd_manager.assert_nothing_queued()


def test_reloading_sends_the_monotonic_stamp_in_the_same_datagram(
    sd_manager: FakeManager,
) -> None:
    notifier = Notifier(sd_manager.env())
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = sd_manager.receive().decode().split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    sd_manager.assert_nothing_queued()


def test_status_is_one_line(sd_path_manager: FakeManager) -> None:
    notifier = Notifier(sd_path_manager.env())
    notifier.status("3 pending exports,\noldest 12m\r\n\tlast poll 20s ago ")
    assert sd_path_manager.receive() == b"STATUS=3 pending exports, oldest 12m last poll 20s ago"


def test_long_status_is_cut_with_an_ellipsis(sd_path_manager: FakeManager) -> None:
    notifier = Notifier(sd_path_manager.env())
    notifier.status("é" * 5000)
    text = sd_path_manager.receive().decode("utf-8").removeprefix("STATUS=")
    assert len(text) == STATUS_MAX_CHARS
    assert text == "é" * (STATUS_MAX_CHARS - 1) + "…"


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("", 5, ""),
        ("ok", 5, "ok"),
        ("a\nb", 5, "a b"),
        ("  x  ", 5, "x"),
        ("xxxxx", 5, "xxxxx"),
        ("x" * 10, 5, "xxxx…"),
        ("abc defgh", 5, "abc…"),
        ("a\x00b\x1b[31mc", 20, "a b [31mc"),
    ],
)
def test_one_line(text: str, limit: int, expected: str) -> None:
    assert one_line(text, limit) == expected


def test_send_puts_several_lines_in_one_datagram(sd_path_manager: FakeManager) -> None:
    notifier = Notifier(sd_path_manager.env())
    assert notifier.send("READY=1", "STATUS=idle")
    assert sd_path_manager.receive() == b"READY=1\nSTATUS=idle"


@pytest.mark.parametrize("line", ["READY=1\nSTOPPING=1", "READY", "X=" + "y" * MAX_DATAGRAM_BYTES])
def test_malformed_lines_are_programming_errors(sd_path_manager: FakeManager, line: str) -> None:
    with pytest.raises(ValueError, match=r"KEY=VALUE|exceeds"):
        Notifier(sd_path_manager.env()).send(line)
    sd_path_manager.assert_nothing_queued()


def test_without_notify_socket_everything_is_a_no_op(
    sd_path_manager: FakeManager, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.reloading() is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert caplog.records == []
    sd_path_manager.assert_nothing_queued()


def test_default_environment_is_os_environ(
    sd_path_manager: FakeManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", sd_path_manager.notify_socket)
    assert Notifier().ready()
    assert sd_path_manager.receive() == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not Notifier().enabled


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "120000000"}, 60.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "<self>"}, 60.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "<other>"}, None),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "garbage"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_PID": "<self>"}, None),
        ({"WATCHDOG_USEC": "1500"}, 0.00075),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_our_pid(
    env: dict[str, str], expected: float | None
) -> None:
    pids = {"<self>": str(os.getpid()), "<other>": str(os.getpid() + 1)}
    resolved = {key: pids.get(value, value) for key, value in env.items()}
    assert Notifier(resolved).watchdog_interval_s == expected


def test_a_vanished_socket_warns_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "notify"
    _bound(str(path)).close()
    path.unlink()  # systemd went away
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    with caplog.at_level(logging.DEBUG, logger="inbox_poller.service"):
        assert notifier.ready() is False
        assert notifier.watchdog() is False
        assert notifier.stopping() is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()
    assert len(caplog.records) == 3


def test_a_refusing_socket_never_raises(tmp_path: Path) -> None:
    # A socket file nobody reads: connect() fails with ECONNREFUSED.
    path = tmp_path / "notify"
    sock = _bound(str(path))
    sock.close()
    assert Notifier({"NOTIFY_SOCKET": str(path)}).watchdog() is False


def test_the_warning_rearms_after_a_successful_send(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "notify"
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    assert notifier.watchdog() is False
    with _bound(str(path)) as sock:
        assert notifier.watchdog()
        assert sock.recv(64) == b"WATCHDOG=1"
    path.unlink()
    assert notifier.watchdog() is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2


@pytest.mark.parametrize("value", ["relative/notify", "vsock:2:1234"])
def test_an_unusable_address_warns_and_is_ignored(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": value})
    assert notifier.enabled
    assert notifier.ready() is False
    assert notifier.ready() is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "not an AF_UNIX address" in warnings[0].getMessage()


def test_an_over_long_path_never_raises(tmp_path: Path) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/" + "x" * 200}).ready() is False


def test_threads_each_deliver_whole_datagrams(sd_path_manager: FakeManager) -> None:
    notifier = Notifier(sd_path_manager.env())
    sd_path_manager.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    threads_n, per_thread = 4, 25
    results: list[bool] = []

    def ping(n: int) -> None:
        for i in range(per_thread):
            results.append(notifier.send(f"STATUS=thread {n} ping {i}"))

    threads = [threading.Thread(target=ping, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    received = [sd_path_manager.receive() for _ in range(threads_n * per_thread)]
    for thread in threads:
        thread.join()
    assert all(results)
    expected = {
        f"STATUS=thread {n} ping {i}".encode() for n in range(threads_n) for i in range(per_thread)
    }
    assert set(received) == expected
