"""The daemon as a real process (``inbox-poller run``), watched through a notify socket.

Used by the daemon's tests and by the benchmarks: ``DaemonProcess`` starts
``python -m inbox_poller -c CONFIG run`` with ``NOTIFY_SOCKET`` pointing at a
``NotifySocket`` the caller owns, exactly as systemd would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.plugins.loop import REPO_ROOT, LoopEnv


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.arrivals: list[tuple[float, str]] = []
        """Each datagram with the monotonic time it was read (while a caller drains)."""

    def drain(self) -> list[str]:
        while True:
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                return self.messages
            self.messages.append(message)
            self.arrivals.append((time.monotonic(), message))

    def listen(self, seconds: float) -> None:
        """Read every datagram for *seconds*, so that ``arrivals`` holds true times."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.drain()

    def pings_since(self, start: float) -> list[float]:
        """The arrival times of ``WATCHDOG=1`` at or after *start*."""
        return [at for at, message in self.arrivals if at >= start and message == "WATCHDOG=1"]

    def wait_for(self, predicate: Callable[[str], bool], timeout_s: float = 15.0) -> str:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            self.drain()
            for message in self.messages[seen:]:
                if predicate(message):
                    return message
            seen = len(self.messages)
        raise AssertionError(f"no matching notification in {self.messages!r}")

    def close(self) -> None:
        self.sock.close()


class DaemonProcess:
    def __init__(
        self,
        env: LoopEnv,
        notify: NotifySocket | None,
        *args: str,
        watchdog_usec: int = 2_000_000,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("INBOX_POLLER")}
        environ["PYTHONPATH"] = str(REPO_ROOT)
        environ.update(extra_env or {})
        if notify is not None:
            environ["NOTIFY_SOCKET"] = str(notify.path)
            # tests: a 2 s watchdog, the shortest the daemon must keep (benchmarks: the unit's)
            environ["WATCHDOG_USEC"] = str(watchdog_usec)
        self.stderr_path = env.root / f"daemon-{time.monotonic_ns()}.log"
        self._stderr = self.stderr_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "inbox_poller", "-c", str(env.config_path), *args, "run"],
            cwd=env.root,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    def log(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._stderr.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.kill()
