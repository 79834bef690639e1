"""Fixtures for tests against a real Courier-IMAP on loopback (docs/providers.md).

* ``courier``: one server per session (about 0.3 s to start; stopped and deleted at
  teardown). Without the unpacked packages, or without root, the tests are skipped
  with what to do, except in CI (``CI`` set), where that is a failure.
* ``imap_server``: the server implementations the mailbox tests run against, one
  parameter each: ``dovecot`` (``""`` namespace, ``/``, MOVE) and ``courier``
  (``INBOX.`` namespace, ``.``, no MOVE, quoted FETCH keys, no UIDNEXT).
* ``server_folder``: a fresh folder ``t-<uuid>`` under that server's personal namespace
  (its full name: ``INBOX.t-…`` on Courier), deleted afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox.courier.install import INSTALL_HINT, find_courier
from inbox_poller.sandbox.courier.server import CourierServer
from inbox_poller.sandbox.imapaccount import TestAccount
from tests.plugins.dovecot import running_in_ci

IMAP_SERVERS = [
    pytest.param("dovecot", marks=pytest.mark.dovecot),
    pytest.param("courier", marks=pytest.mark.courier),
]
"""``pytest.mark.parametrize`` values (or fixture params) naming each server implementation."""


def require_courier() -> None:
    """Skip the test when Courier cannot run here; fail it instead when running in CI."""
    try:
        find_courier()
    except InboxPollerError as exc:
        if running_in_ci():
            pytest.fail(f"Courier-IMAP is required in CI: {exc}", pytrace=False)
        pytest.skip(f"Courier-IMAP cannot run here: {exc}; {INSTALL_HINT}")


@pytest.fixture(scope="session")
def courier() -> Iterator[CourierServer]:
    """One running Courier-IMAP for the whole session."""
    require_courier()
    server = CourierServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(params=IMAP_SERVERS)
def imap_server(request: pytest.FixtureRequest) -> TestAccount:
    """Each server implementation in turn (the session's instance)."""
    server: TestAccount = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def server_folder(imap_server: TestAccount) -> Iterator[str]:
    """A fresh, empty folder under *imap_server*'s personal namespace (its full name)."""
    name = imap_server.folder_name(f"t-{uuid.uuid4().hex}")
    imap_server.create_folder(name)
    yield name
    try:
        imap_server.delete_folder(name)
    except Exception:  # a test may have deleted it, or left the server stopped
        if getattr(imap_server, "running", True):
            raise
