"""Suite-wide fixtures, and a guard that keeps every test on loopback.

Fixture modules live in ``tests/plugins/``; each is loaded here so that helpers
for Dovecot, the Pinpointe simulator and HTTP servers stay in their own files.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# plugins import each other (the daemon's uses the loop's): rewrite asserts in all of
# them, whichever is imported first
pytest.register_assert_rewrite("tests.plugins")

pytest_plugins = sorted(
    f"tests.plugins.{path.stem}"
    for path in (Path(__file__).parent / "plugins").glob("*.py")
    if path.stem != "__init__"
)

_LOCAL_NAMES = {"localhost", "localhost.", "ip6-localhost"}


class NonLoopbackConnection(AssertionError):
    """A test tried to reach something that is not this machine."""


def _assert_loopback_host(host: object) -> None:
    if not isinstance(host, str):
        return
    name = host.strip("[]")
    if name.lower() in _LOCAL_NAMES or name.lower().endswith(".localhost"):
        return
    try:
        address = ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        raise NonLoopbackConnection(f"test tried to resolve or reach {host!r}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if not address.is_loopback and not address.is_unspecified:
        raise NonLoopbackConnection(f"test tried to reach {host!r}, which is not loopback")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that connects to, or resolves, anything but loopback."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _assert_loopback_host(address[0])
        real_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _assert_loopback_host(address[0])
        return real_connect_ex(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None:
            _assert_loopback_host(host.decode() if isinstance(host, bytes) else host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Undo what a test's ``main()`` did to logging (handlers on a closed stream, levels)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quieted = {
        name: logging.getLogger(name).level for name in ("apscheduler", "imapclient", "urllib3")
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in quieted.items():
        logging.getLogger(name).setLevel(saved)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that boot a throwaway systemd, so the default run deselects them."""
    for item in items:
        if "systemd_box" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.systemd_box)
