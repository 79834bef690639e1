"""The PostgreSQL session locks of several daemons on one ledger.

* Every ``run`` (daemon or ``--once``) holds the ledger's *daemon lock* **shared**, on a
  connection of its own, named ``inbox-poller <owner>`` (its ``application_name``): any
  number run at once, and ``status``/``wait`` see them in ``pg_locks`` and
  ``pg_stat_activity``.
* Exactly one of them watches a given mailbox: the one holding the *mailbox lock*, a
  session advisory lock keyed by the mailbox's identity (server, user, folder), also on a
  connection of its own (:class:`MailboxLock`). When its daemon dies, the server drops
  the connection and the lock with it, and another daemon's next try takes it.

A session lock lives exactly as long as its connection, so a crash never leaves one
stale; and a daemon that loses the connection may no longer hold it, so it stops
watching at once (``service/cluster.py``). The design: docs/scale-out-ledger.md.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import psycopg

from inbox_poller.errors import InboxPollerError, StoreError
from inbox_poller.ledger.postgres import DAEMON_LOCK, dial, reason

logger = logging.getLogger("inbox_poller.ledger")

APPLICATION_PREFIX = "inbox-poller "
"""Every lock connection's ``application_name`` starts so; the daemon's owner follows."""
LOCKS_HELD = (
    "SELECT l.mode, a.application_name, a.client_addr::text AS addr, a.backend_start"
    " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND ((l.classid::bigint << 32) | l.objid::bigint) = %s"
    " ORDER BY a.backend_start"
)


def mailbox_key(server: str, user: str, folder: str) -> int:
    """The advisory lock key of the mailbox (*server*, *user*, *folder*): 64 bits of its
    SHA-256, so any daemon configured for the same mailbox computes the same key."""
    identity = f"inbox-poller mailbox\0{server.lower()}\0{user}\0{folder}".encode()
    key = int.from_bytes(hashlib.sha256(identity).digest()[:8], "big", signed=True)
    return key & 0x7FFF_FFFF_FFFF_FFFF  # PostgreSQL shows the two halves as unsigned oids


def _connect(url: str, password: str | None, owner: str) -> psycopg.Connection[tuple[Any, ...]]:
    conn: psycopg.Connection[tuple[Any, ...]] = dial(url, password, name=APPLICATION_PREFIX + owner)
    return conn


KEEP_EVERY_S = 5.0
"""How often a daemon checks the connection of its share of the daemon lock, and takes
it again once the connection is gone (a PostgreSQL restart): until then ``status`` does
not see the daemon, and an exclusive command (``migrate``) could start."""


def _take(conn: psycopg.Connection[tuple[Any, ...]], url: str, exclusive: bool) -> None:
    take = "pg_try_advisory_lock" if exclusive else "pg_try_advisory_lock_shared"
    row = conn.execute(f"SELECT {take}(%s)", (DAEMON_LOCK,)).fetchone()
    if row is None or not row[0]:
        raise InboxPollerError(
            f"another inbox-poller is already running on {url}"
            if exclusive
            else f"an inbox-poller that needs the ledger to itself is running on {url}"
        )


@contextmanager
def daemon_lock(
    url: str, password: str | None, owner: str, *, exclusive: bool = False
) -> Iterator[None]:
    """Hold the ledger's daemon lock on a connection of its own while the block runs.

    Shared (``run``: any number of daemons, each seen by ``status``), or *exclusive*
    (a command that needs the ledger to itself, such as ``migrate``: refused while any
    daemon runs, and no daemon starts meanwhile). A shared lock is kept: when its
    connection is lost it is taken again on a new one (:class:`_Keeper`).

    :raises InboxPollerError: the lock is held the other way.
    """
    conn = _connect(url, password, owner)
    try:
        _take(conn, url, exclusive)
    except BaseException:
        conn.close()
        raise
    if exclusive:
        try:
            yield
        finally:
            conn.close()  # the session's lock goes with it
        return
    keeper = _Keeper(url, password, owner, conn)
    keeper.start()
    try:
        yield
    finally:
        keeper.stop()


class _Keeper(threading.Thread):
    """Keep a daemon's share of the daemon lock across lost connections."""

    def __init__(
        self, url: str, password: str | None, owner: str, conn: psycopg.Connection[Any]
    ) -> None:
        super().__init__(name="ledger-lock", daemon=True)
        self._url, self._password, self._owner = url, password, owner
        self._conn: psycopg.Connection[Any] | None = conn
        self._stopping = threading.Event()
        self._lost_logged = False

    def run(self) -> None:
        while not self._stopping.wait(KEEP_EVERY_S):
            try:
                if self._conn is None:
                    self._retake()
                else:
                    self._conn.execute("SELECT 1").fetchone()
            except (psycopg.Error, InboxPollerError) as exc:
                self._drop()
                if not self._lost_logged:
                    logger.warning(
                        "ledger %s: the daemon lock is lost (%s); taking it again", self._url, exc
                    )
                    self._lost_logged = True

    def _retake(self) -> None:
        conn = _connect(self._url, self._password, self._owner)
        try:
            _take(conn, self._url, exclusive=False)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        if self._lost_logged:
            logger.info("ledger %s: the daemon lock is held again", self._url)
            self._lost_logged = False

    def _drop(self) -> None:
        if self._conn is not None:
            with suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=KEEP_EVERY_S + 1)
        self._drop()


@dataclass(frozen=True)
class Holder:
    """A session holding one of the locks: the daemon it names, and where it runs from."""

    name: str
    """The daemon's owner (``<host>:<pid>:<random>``), from its ``application_name``;
    empty if this role may not see other roles' sessions (``pg_read_all_stats``)."""
    addr: str | None
    since: str | None


def holders(url: str, password: str | None, key: int = DAEMON_LOCK) -> list[Holder]:
    """Return the sessions holding the lock *key* (the daemon lock: every daemon running)."""
    conn = _connect(url, password, "status")
    with conn:
        rows = conn.execute(LOCKS_HELD, (key,)).fetchall()
    found = []
    for _mode, name, addr, since in rows:
        name = name or ""
        if name.startswith(APPLICATION_PREFIX):
            name = name[len(APPLICATION_PREFIX) :]
        found.append(Holder(name, addr, since.isoformat() if since else None))
    return found


class MailboxLock:
    """The lock that lets one daemon watch the mailbox *key*, on a connection of its own.

    :meth:`try_acquire` takes it if nobody holds it (never waits); :meth:`still_held`
    asks the connection (a round trip): False once the connection is gone, after which
    the lock may be another daemon's. Not thread-safe: one thread drives it.
    """

    def __init__(self, url: str, password: str | None, key: int, owner: str) -> None:
        self.url = url
        self._password = password
        self.key = key
        self.owner = owner
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self.held = False

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True if this daemon holds it now.

        :raises StoreError: the database cannot be reached (try again later).
        """
        if self.held:
            return True
        if self._conn is None or self._conn.closed:
            self._conn = _connect(self.url, self._password, self.owner)
        try:
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error as exc:
            self.release()
            raise StoreError(
                f"ledger {self.url}: cannot take the mailbox lock: {reason(exc)}"
            ) from None
        self.held = bool(row and row[0])
        return self.held

    def still_held(self) -> bool:
        """Whether the lock's connection still answers; if not, it is closed and the lock
        counted as lost."""
        if not self.held or self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1").fetchone()
        except psycopg.Error:
            self.release()
            return False
        return True

    def release(self) -> None:
        """Drop the connection, and the lock with it."""
        self.held = False
        if self._conn is not None:
            with suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
