"""Fixtures for tests against a real Dovecot on loopback (docs/dovecot.md).

* ``dovecot``: one server per session (started once, about 0.1 s; stopped and
  deleted at teardown). Without the binary the tests are skipped with the
  install command, except in CI (``CI`` set), where that is a failure.
* ``imap_folder``: a fresh folder ``t-<uuid>`` per test, deleted afterwards.
* ``dovecot_restart``: restart the session server (same ports and data) for
  connection-drop tests.
* ``dovecot_variant``: a separate server with some capabilities hidden
  (``MOVE``, ``UIDPLUS``, ``IDLE``) or folders that refuse keywords, started
  once per session per variant.
* ``make_dovecot_mailbox``: build an ``ImapMailbox`` for a folder; every one is
  closed at teardown (its type: ``MakeMailbox``).
* ``imap_config_for``, ``make_mail``, ``folder_flags`` and ``folder_uids`` are plain
  helpers; ``KEYWORD`` is the keyword handled mail is marked with.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from inbox_poller.config import ImapConfig
from inbox_poller.errors import InboxPollerError
from inbox_poller.imap.mailbox import ImapMailbox
from inbox_poller.sandbox.dovecot.process import INSTALL_HINT, find_dovecot
from inbox_poller.sandbox.dovecot.server import DovecotServer
from inbox_poller.sandbox.imapaccount import TestAccount

PASSWORD_ENV = "INBOX_POLLER_TEST_IMAP_PASSWORD"
"""Named in the test ImapConfig only because the config needs a source; never read."""

KEYWORD = "$ExportArchived"
"""The keyword ``imap_config_for``'s configs mark handled mail with (``ImapConfig``'s default)."""

MakeMailbox = Callable[..., ImapMailbox]
"""The type of the ``make_dovecot_mailbox`` fixture."""


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_dovecot(search_path: str | None = None) -> None:
    """Skip the test when Dovecot is missing; fail it instead when running in CI."""
    try:
        find_dovecot(search_path)
    except InboxPollerError as exc:
        if running_in_ci():
            pytest.fail(f"Dovecot is required in CI: {exc}", pytrace=False)
        pytest.skip(f"Dovecot is not installed; {INSTALL_HINT}")


def imap_config_for(
    server: TestAccount,
    folder: str,
    *,
    security: str = "tls",
    **overrides: Any,
) -> ImapConfig:
    """Return an ``ImapConfig`` for *folder* on *server* (the password goes to the mailbox)."""
    port = server.imaps_port if security == "tls" else server.imap_port
    values: dict[str, Any] = {
        "host": server.host,
        "port": port,
        "security": security,
        "username": server.user,
        "password_env": PASSWORD_ENV,
        "folder": folder,
        "timeout_s": 10.0,
    }
    values.update(overrides)
    return ImapConfig(**values)


def make_mail(
    subject: str = "Your export is ready",
    body: str = "Download: https://na01.mypinpointe.com/export/1.json?sig=abc\n",
    *,
    message_id: str | None = None,
    padding: int = 0,
) -> bytes:
    """Return a small RFC 822 message with CRLF line endings (as IMAP returns it)."""
    message = EmailMessage()
    message["From"] = "Pinpointe <noreply@mypinpointe.com>"
    message["To"] = "exports@example.test"
    message["Subject"] = subject
    message["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@mypinpointe.com>"
    message.set_content(body + "x" * padding)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def folder_flags(server: TestAccount, folder: str, uid: int) -> set[str]:
    """Return the flags of *uid* in *folder*, read through a separate session."""
    with server.client() as imap:
        imap.select_folder(folder, readonly=True)
        found = imap.fetch([uid], ["FLAGS"]).get(uid)
    assert found is not None, f"UID {uid} is not in {folder}"
    return {flag.decode() for flag in found[b"FLAGS"]}


def folder_uids(server: TestAccount, folder: str) -> list[int]:
    """Return the UIDs in *folder*, ascending, read through a separate session."""
    with server.client() as imap:
        imap.select_folder(folder, readonly=True)
        return sorted(imap.search(["ALL"]))


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """One running Dovecot for the whole session."""
    require_dovecot()
    server = DovecotServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def imap_folder(dovecot: DovecotServer) -> Iterator[str]:
    """A fresh, empty folder for one test."""
    name = f"t-{uuid.uuid4().hex}"
    dovecot.create_folder(name)
    yield name
    try:
        dovecot.delete_folder(name)
    except Exception:  # a test may have deleted it, or left the server stopped
        if dovecot.running:
            raise


@pytest.fixture
def dovecot_restart(dovecot: DovecotServer) -> Callable[[], None]:
    """Restart the session server: every connection drops, data and ports stay."""
    return dovecot.restart


@pytest.fixture(scope="session")
def dovecot_variant(
    dovecot: DovecotServer,
) -> Iterator[Callable[..., DovecotServer]]:
    """Return ``variant(hide=("MOVE",), keywordless=None)``: a differently configured server.

    *hide* names capabilities left out of CAPABILITY; folders matching the pattern
    *keywordless* refuse custom keywords (no ``\\*`` in PERMANENTFLAGS). Each variant
    starts once per session (about 0.15 s).
    """
    servers: dict[tuple[frozenset[str], str | None], DovecotServer] = {}
    default = dovecot.capabilities()

    def variant(hide: tuple[str, ...] = (), keywordless: str | None = None) -> DovecotServer:
        hidden = frozenset(name.upper() for name in hide)
        if (hidden, keywordless) not in servers:
            shown = " ".join(cap for cap in default if cap.upper() not in hidden)
            server = DovecotServer(
                capability=shown if hidden else None, keywordless_folders=keywordless
            )
            server.start()
            servers[hidden, keywordless] = server
        return servers[hidden, keywordless]

    yield variant
    for server in servers.values():
        server.cleanup()


@pytest.fixture
def make_dovecot_mailbox(dovecot: DovecotServer) -> Iterator[MakeMailbox]:
    """Return ``make(folder, server=None, password=None, trust_ca=True, **config)``.

    It builds an ``ImapMailbox`` for *folder* on *server* (default: the session
    Dovecot; any ``TestAccount``, Courier too; ``**config`` overrides ``ImapConfig``
    fields); *trust_ca* false leaves the test CA out, as a misconfigured client would.
    """
    made: list[ImapMailbox] = []

    def make(
        folder: str,
        *,
        server: TestAccount | None = None,
        password: str | None = None,
        trust_ca: bool = True,
        **config: Any,
    ) -> ImapMailbox:
        target = server or dovecot
        mailbox = ImapMailbox(
            imap_config_for(target, folder, **config),
            target.password if password is None else password,
            ca_file=target.ca_file if trust_ca else None,
        )
        made.append(mailbox)
        return mailbox

    yield make
    for mailbox in made:
        mailbox.close()
