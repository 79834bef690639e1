"""The mailbox lock of several daemons on one PostgreSQL ledger (``ledger/pglocks.py``)."""

from __future__ import annotations

import logging
import time

import pytest

from inbox_poller.errors import InboxPollerError
from inbox_poller.ledger import pglocks
from inbox_poller.ledger.opening import OnlyProcess, cluster, mailbox_lock
from inbox_poller.ledger.pglocks import MailboxLock, mailbox_key
from tests.plugins.postgres import PgDatabase

MAILBOX = ("imap.example.test", "exports@example.test", "INBOX")


def _password(database: PgDatabase) -> str:
    return database.password_file.read_text(encoding="utf-8").strip()


def test_the_mailbox_key_names_server_user_and_folder() -> None:
    key = mailbox_key(*MAILBOX)
    assert key == mailbox_key("IMAP.example.test", "exports@example.test", "INBOX")
    assert key != mailbox_key("imap.example.test", "exports@example.test", "Exports")
    assert key != mailbox_key("imap.example.test", "other@example.test", "INBOX")
    assert 0 <= key < 2**63


def test_a_sqlite_ledgers_daemon_always_watches() -> None:
    lock = mailbox_lock(None, None, MAILBOX, "me")
    assert isinstance(lock, OnlyProcess)
    assert lock.try_acquire() and lock.still_held()


@pytest.mark.postgres
def test_one_daemon_holds_the_mailbox_and_another_takes_it_when_its_connection_goes(
    pg_database: PgDatabase,
) -> None:
    url, secret = pg_database.url, _password(pg_database)
    first = MailboxLock(url, secret, mailbox_key(*MAILBOX), "host-a:1:aa")
    second = MailboxLock(url, secret, mailbox_key(*MAILBOX), "host-b:2:bb")
    other_mailbox = MailboxLock(url, secret, mailbox_key(*MAILBOX[:2], "Other"), "host-b:2:bb")
    try:
        assert first.try_acquire()
        assert not second.try_acquire()
        assert other_mailbox.try_acquire()  # another mailbox: its own lock
        assert cluster(url, lambda: secret, MAILBOX).watching == "host-a:1:aa"
        # the server ends the holder's session (as when its machine dies)
        with pg_database.connect() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'inbox-poller host-a:1:aa'"
            )
        assert not first.still_held()  # noticed on its next check: stop watching
        assert second.try_acquire()
        assert second.still_held()
        assert cluster(url, lambda: secret, MAILBOX).watching == "host-b:2:bb"
        assert not first.try_acquire()  # a new connection, but the lock is taken
    finally:
        for lock in (first, second, other_mailbox):
            lock.release()
    assert cluster(url, lambda: secret, MAILBOX).watching is None


@pytest.mark.postgres
def test_a_daemons_share_of_the_daemon_lock_is_taken_again_after_its_connection_is_lost(
    pg_database: PgDatabase, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pglocks, "KEEP_EVERY_S", 0.2)
    caplog.set_level(logging.INFO, "inbox_poller.ledger")
    url, secret = pg_database.url, _password(pg_database)

    def names() -> list[str]:
        return [holder.name for holder in pglocks.holders(url, secret)]

    with pglocks.daemon_lock(url, secret, "host-a:1:aa"):
        assert names() == ["host-a:1:aa"]
        with pg_database.connect() as admin:  # as a PostgreSQL restart ends every session
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'inbox-poller host-a:1:aa'"
            )
        deadline = time.monotonic() + 10
        while names() != ["host-a:1:aa"] or "held again" not in caplog.text:
            assert time.monotonic() < deadline, (names(), caplog.text)
            time.sleep(0.1)
        assert "the daemon lock is lost" in caplog.text
        # while it is held again, a command that needs the ledger to itself is refused
        with (
            pytest.raises(InboxPollerError, match="already running"),
            pglocks.daemon_lock(url, secret, "migrate", exclusive=True),
        ):
            pass
    assert names() == []
