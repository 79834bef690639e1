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
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.plugins.loop import REPO_ROOT, LoopEnv


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket.

    Like systemd, it reads every datagram as it comes (a thread of its own): a socket left
    unread fills up after ``net.unix.max_dgram_qlen`` datagrams (10 on a machine without
    systemd's sysctl defaults), and the daemon's next send then waits and times out.
    ``arrivals`` holds each datagram with the monotonic time it was read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.arrivals: list[tuple[float, str]] = []
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            self.arrivals.append((time.monotonic(), message))
            self.messages.append(message)

    def drain(self) -> list[str]:
        """The messages read so far, once none has come for 0.2 s (a burst is over)."""
        seen = -1
        while seen != len(self.messages):
            seen = len(self.messages)
            time.sleep(0.2)
        return self.messages

    def listen(self, seconds: float) -> None:
        """Let *seconds* pass while the datagrams are read (``arrivals``)."""
        time.sleep(seconds)

    def pings_since(self, start: float) -> list[float]:
        """The arrival times of ``WATCHDOG=1`` at or after *start*."""
        return [at for at, message in self.arrivals if at >= start and message == "WATCHDOG=1"]

    def wait_for(self, predicate: Callable[[str], bool], timeout_s: float = 15.0) -> str:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            messages = list(self.messages)
            for message in messages[seen:]:
                if predicate(message):
                    return message
            seen = len(messages)
            time.sleep(0.02)
        raise AssertionError(f"no matching notification in {self.messages!r}")

    def close(self) -> None:
        self._closing.set()
        self._reader.join(timeout=5)
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
