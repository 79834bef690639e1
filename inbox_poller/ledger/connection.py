"""The SQLite file under :class:`~inbox_poller.ledger.store.Store`: open, transact, transition.

Durability rules (docs/reliability.md §6): WAL, ``synchronous=FULL``, a busy timeout,
``foreign_keys=ON``, ``quick_check`` at open, and every change inside one
``BEGIN IMMEDIATE`` ... ``COMMIT``. Three steps of a download are committed *relaxed*
(``_transaction(durable=False)``: without their fsync; a crash of the machine may lose
them, which the next start repairs), and :meth:`LedgerConnection.sync` makes them durable
before anything outside the machine relies on them (§6.1). Every state change of an
export goes through :meth:`LedgerConnection._transition`, which checks the state machine in
``models.ALLOWED_TRANSITIONS`` and appends a row to ``events``, so the history of
every export can be replayed.

Commands that only read (``exports``, ``status``, ``wait``, ``check``) open the file
with ``read_only=True``: SQLite's ``mode=ro``, no migration, and a missing file is
:class:`~inbox_poller.errors.LedgerMissing` instead of a new, empty ledger.

A PostgreSQL ledger arrives as an open :class:`~.engine.EngineSession`
(``ledger.postgres.open_postgres``): the same statements, transactions and checked
transitions, with the fragments of :class:`~.engine.Dialect` that differ.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Self

from inbox_poller.errors import IllegalTransition, LeaseLost, LedgerMissing, StoreError
from inbox_poller.ledger.engine import SQLITE, EngineSession, Tx
from inbox_poller.ledger.schema import check_version, migrate, to_iso
from inbox_poller.models import ExportState, can_transition

LEASED_STATES = (ExportState.DOWNLOADING, ExportState.VERIFIED)
"""The states in which an export is held by one daemon under a lease (its ``owner``)."""


class LedgerConnection:
    """The connection, its lock and transactions; the base of ``MailRecords`` and ``Store``.

    Closes when used as a context manager (``with Store(path) as store: ...``).
    *read_only* opens an existing ledger for reading only (see the module docstring).
    """

    def __init__(self, path: Path | EngineSession, *, read_only: bool = False) -> None:
        self.read_only = read_only
        self._lock = threading.RLock()
        self._batching = False
        """A :meth:`batch` is open (on the thread holding ``_lock``)."""
        if isinstance(path, EngineSession):
            self.path: Path | None = None
            self.where = path.where
            self._conn: Tx = path.conn
            self._dialect = path.dialect
            self._errors: tuple[type[Exception], ...] = path.errors
            self._integrity_errors: tuple[type[Exception], ...] = path.integrity_errors
            self._close = path.close
            return
        self.path = path
        self.where = str(path)
        self._dialect = SQLITE
        self._errors = (sqlite3.Error,)
        self._integrity_errors = (sqlite3.IntegrityError,)
        if read_only:
            self._open_read_only(path)
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            old_umask = os.umask(0o077)  # the ledger holds download links: private
            try:
                conn = sqlite3.connect(
                    str(path), timeout=10.0, isolation_level=None, check_same_thread=False
                )
            finally:
                os.umask(old_umask)
            self._conn = conn
            self._close = conn.close
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=10000")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"ledger {path} failed its integrity check: {check}")
            migrate(conn, self._transaction, path)
            os.chmod(path, 0o600)
        except self._errors as exc:
            raise StoreError(f"cannot open the ledger {path}: {exc}") from exc

    def _open_read_only(self, path: Path) -> None:
        if not path.exists():
            raise LedgerMissing(path)
        uri = f"{path.absolute().as_uri()}?mode=ro"
        if not path.with_name(path.name + "-wal").exists():
            # no writer has it open (a WAL writer keeps the -wal file while it runs), so
            # read it as a plain file: nothing is created beside it, no -shm owned by the
            # reader (root) that the service's user could then not open
            uri += "&immutable=1"
        old_umask = os.umask(0o077)  # SQLite may create the -shm file: private
        try:
            conn = sqlite3.connect(
                uri,
                uri=True,
                timeout=10.0,
                isolation_level=None,
                check_same_thread=False,
            )
            self._conn = conn
            self._close = conn.close
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=10000")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"ledger {path} failed its integrity check: {check}")
            check_version(conn, path)
        except self._errors as exc:
            raise StoreError(f"cannot read the ledger {path}: {exc}") from exc
        finally:
            os.umask(old_umask)

    def close(self) -> None:
        with self._lock:
            self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Commit every change made inside as one transaction: one fsync for many rows.

        Each ``_transaction`` inside becomes a savepoint: a change that fails is undone
        alone, as if its own transaction had failed, and the others stay. Nothing is
        durable before the end; a crash inside loses all of it, so only steps that may
        be repeated are batched (mail records: the mail is read again). Other threads
        wait for the end (the connection's lock), other processes for the write lock.
        """
        with self._lock:
            if self._batching:
                yield
                return
            with self._transaction():
                self._batching = True
                try:
                    yield
                finally:
                    self._batching = False

    @contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[Tx]:
        """One write transaction (a savepoint inside a :meth:`batch`).

        *durable* False: committed without its fsync (SQLite; a PostgreSQL commit is always
        durable). A crash of the process loses nothing, but a crash of the machine may lose
        the commit until the next durable one or :meth:`sync` (the log is written in
        order, so each fsync of it covers every commit before). Only for steps the next
        start repeats, from the state before them, with the same outcome
        (docs/reliability.md §6.1).
        """
        if self._batching and self._owns_lock():
            with self._savepoint() as conn:
                yield conn
            return
        with self._lock:
            relaxed = None if durable else self._dialect.relaxed
            if relaxed is not None:
                self._conn.execute(relaxed[0])
            try:
                with self._committed() as conn:
                    yield conn
            finally:
                if relaxed is not None:
                    self._conn.execute(relaxed[1])

    @contextmanager
    def _committed(self) -> Iterator[Tx]:
        """``BEGIN`` … ``COMMIT``, or ``ROLLBACK`` when the body fails."""
        try:
            self._conn.execute(self._dialect.begin)
        except self._errors as exc:
            raise StoreError(f"ledger {self.where}: cannot start a transaction: {exc}") from exc
        try:
            yield self._conn
        except self._errors as exc:
            self._conn.execute("ROLLBACK")
            raise StoreError(f"ledger {self.where}: {exc}") from exc
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        try:
            self._conn.execute("COMMIT")
        except self._errors as exc:
            raise StoreError(f"ledger {self.where}: commit failed: {exc}") from exc

    def sync(self) -> None:
        """Make every commit so far durable, the relaxed ones too: before an effect outside
        this machine that relies on them (an IMAP acknowledgement, a hook run).

        SQLite: one fsync of the write-ahead log, which holds every commit since the last
        checkpoint (a checkpoint syncs the log before it copies it into the database);
        without a log file there is nothing unsynced. PostgreSQL: every commit is durable.
        """
        if self._dialect.relaxed is None or self.path is None or self.read_only:
            return
        with self._lock:
            try:
                fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise StoreError(f"ledger {self.where}: cannot sync: {exc.strerror}") from exc

    def _owns_lock(self) -> bool:
        """Whether this thread holds the connection's lock (it runs the open batch)."""
        return bool(self._lock._is_owned())  # type: ignore[attr-defined]

    @contextmanager
    def _savepoint(self) -> Iterator[Tx]:
        """One change inside a :meth:`batch`: undone alone when it fails."""
        with self._lock:
            self._conn.execute("SAVEPOINT change")
            try:
                yield self._conn
            except self._errors as exc:
                self._conn.execute("ROLLBACK TO change")
                self._conn.execute("RELEASE change")
                raise StoreError(f"ledger {self.where}: {exc}") from exc
            except BaseException:
                self._conn.execute("ROLLBACK TO change")
                self._conn.execute("RELEASE change")
                raise
            self._conn.execute("RELEASE change")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return list(self._conn.execute(sql, tuple(params)))
            except self._errors as exc:
                raise StoreError(f"ledger {self.where}: {exc}") from exc

    def _export_row(self, conn: Tx, columns: str, export_id: int) -> Any:
        """Read *columns* of an export's row for a read-check-update in *conn*'s transaction.

        On PostgreSQL the row is locked (``FOR UPDATE``) until the transaction ends, so two
        daemons changing one export wait for each other and the second reads the first's
        result; SQLite's ``BEGIN IMMEDIATE`` already holds the whole file.
        """
        return conn.execute(
            f"SELECT {columns} FROM exports WHERE export_id = ?{self._dialect.for_update}",  # noqa: S608
            (export_id,),
        ).fetchone()

    def _event(
        self,
        conn: Tx,
        export_id: int,
        from_state: ExportState | None,
        to_state: ExportState,
        reason: str | None,
        now: datetime,
    ) -> None:
        conn.execute(
            "INSERT INTO events (at, export_id, from_state, to_state, reason)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                to_iso(now),
                export_id,
                from_state.value if from_state else None,
                to_state.value,
                reason,
            ),
        )

    def _transition(
        self,
        conn: Tx,
        export_id: int,
        wanted: ExportState,
        now: datetime,
        reason: str | None,
        *,
        owner: str | None = None,
        **fields: Any,
    ) -> None:
        """Move *export_id* to *wanted*, checked against the state machine, with its event.

        With *owner* (a daemon that claimed the export), the move is refused with
        :class:`LeaseLost` unless *owner* still holds it: checked on the locked row, so a
        daemon whose lease ran out cannot write over the work of the one that took over.
        Leaving ``downloading``/``verified`` clears the owner and the lease.
        """
        row = self._export_row(conn, "state, owner", export_id)
        if row is None:
            raise StoreError(f"no export {export_id} in the ledger")
        current = ExportState(row["state"])
        if owner is not None and (row["owner"] != owner or current not in LEASED_STATES):
            raise LeaseLost(export_id, owner, row["owner"] if current in LEASED_STATES else None)
        if not can_transition(current, wanted):
            raise IllegalTransition(export_id, current.value, wanted.value)
        if wanted not in LEASED_STATES:
            fields = {"owner": None, "lease_until": None, **fields}
        fields = {"state": wanted.value, "updated_at": to_iso(now), "reason": reason, **fields}
        assignments = ", ".join(f"{name} = ?" for name in fields)
        conn.execute(
            f"UPDATE exports SET {assignments} WHERE export_id = ?",  # noqa: S608
            (*fields.values(), export_id),
        )
        self._event(conn, export_id, current, wanted, reason, now)
