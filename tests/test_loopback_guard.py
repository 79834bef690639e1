"""The suite's own guard must refuse non-loopback targets before any packet leaves."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import NonLoopbackConnection


def test_connect_to_a_private_address_is_refused_before_connecting() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock,
        pytest.raises(NonLoopbackConnection),
    ):
        sock.connect(("10.0.0.1", 9))


def test_resolving_a_public_name_is_refused() -> None:
    with pytest.raises(NonLoopbackConnection):
        socket.getaddrinfo("example.com", 443)


def test_loopback_is_allowed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
