"""The ledger: one SQLite file holding every export, every mail seen, and the watermarks.

Durability rules (reliability.md 6): WAL, ``synchronous=FULL``, a busy timeout,
``foreign_keys=ON``, ``quick_check`` at open, and every change inside one
``BEGIN IMMEDIATE`` ... ``COMMIT``. Each state change of an export is one named
method that checks the state machine in ``models.ALLOWED_TRANSITIONS`` and
appends a row to ``events``, so the history of every export can be replayed.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from inbox_poller.errors import IllegalTransition, StoreError
from inbox_poller.models import (
    ArchivedFile,
    Export,
    ExportRequest,
    ExportState,
    MailKey,
    MailOutcome,
    MailRecord,
    can_transition,
)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 3

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE exports (
        export_id        INTEGER PRIMARY KEY AUTOINCREMENT,
        method           TEXT NOT NULL,
        stat             TEXT NOT NULL,
        startdate        TEXT,
        enddate          TEXT,
        state            TEXT NOT NULL,
        job_id           TEXT UNIQUE,
        reason           TEXT,
        created_at       TEXT NOT NULL,
        updated_at       TEXT NOT NULL,
        submitted_at     TEXT,
        notified_at      TEXT,
        archived_at      TEXT,
        acknowledged_at  TEXT,
        download_url     TEXT,
        message_id       TEXT,
        mail_mailbox     TEXT,
        mail_uidvalidity INTEGER,
        mail_uid         INTEGER,
        attempts         INTEGER NOT NULL DEFAULT 0,
        part_path        TEXT,
        archive_path     TEXT,
        bytes            INTEGER,
        sha256           TEXT,
        records          INTEGER,
        top_level        TEXT,
        source           TEXT,
        submit_response  TEXT
    );
    CREATE INDEX exports_state ON exports(state);

    CREATE TABLE mails (
        mailbox          TEXT NOT NULL,
        uidvalidity      INTEGER NOT NULL,
        uid              INTEGER NOT NULL,
        message_id       TEXT,
        outcome          TEXT NOT NULL,
        reason           TEXT NOT NULL,
        export_id        INTEGER REFERENCES exports(export_id),
        job_ids          TEXT NOT NULL DEFAULT '[]',
        summary          TEXT,
        seen_at          TEXT NOT NULL,
        acknowledged_at  TEXT,
        ack_result       TEXT,
        PRIMARY KEY (mailbox, uidvalidity, uid)
    );
    CREATE INDEX mails_message_id ON mails(message_id);
    CREATE INDEX mails_export ON mails(export_id);

    CREATE TABLE watermarks (
        mailbox     TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        last_uid    INTEGER NOT NULL,
        PRIMARY KEY (mailbox, uidvalidity)
    );

    CREATE TABLE events (
        event_id   INTEGER PRIMARY KEY AUTOINCREMENT,
        at         TEXT NOT NULL,
        export_id  INTEGER NOT NULL REFERENCES exports(export_id),
        from_state TEXT,
        to_state   TEXT NOT NULL,
        reason     TEXT
    );
    CREATE INDEX events_export ON events(export_id);
    """,
    # v2: the daemon: resubmission chains, deadline checks, scheduled origin, heartbeat
    2: """
    ALTER TABLE exports ADD COLUMN replaces INTEGER REFERENCES exports(export_id);
    ALTER TABLE exports ADD COLUMN resubmits INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE exports ADD COLUMN checked_at TEXT;
    ALTER TABLE exports ADD COLUMN remote_status TEXT;
    ALTER TABLE exports ADD COLUMN schedule TEXT;
    CREATE INDEX exports_replaces ON exports(replaces);

    CREATE TABLE daemon_state (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # v3: re-matching reads the recent unmatched mail on every pass while an export
    # waits; without this index that was a scan of every mail ever seen
    3: """
    CREATE INDEX mails_unmatched ON mails(outcome, seen_at);
    """,
}


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise StoreError("refusing to store a naive datetime")
    return value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _row_to_export(row: sqlite3.Row) -> Export:
    mail = None
    if row["mail_uid"] is not None:
        mail = MailKey(row["mail_mailbox"], row["mail_uidvalidity"], row["mail_uid"])
    archived = None
    if row["sha256"] is not None and row["archive_path"] is not None:
        archived = ArchivedFile(
            row["archive_path"],
            row["bytes"],
            row["sha256"],
            row["records"],
            row["top_level"] or "unknown",
            row["source"] or "",
        )
    created = _dt(row["created_at"])
    updated = _dt(row["updated_at"])
    assert created is not None
    assert updated is not None
    return Export(
        export_id=row["export_id"],
        request=ExportRequest(
            stat=row["stat"],
            startdate=row["startdate"],
            enddate=row["enddate"],
            method=row["method"],
        ),
        state=ExportState(row["state"]),
        created_at=created,
        updated_at=updated,
        job_id=row["job_id"],
        reason=row["reason"],
        submitted_at=_dt(row["submitted_at"]),
        notified_at=_dt(row["notified_at"]),
        archived_at=_dt(row["archived_at"]),
        acknowledged_at=_dt(row["acknowledged_at"]),
        download_url=row["download_url"],
        message_id=row["message_id"],
        mail=mail,
        attempts=row["attempts"],
        archived=archived,
        replaces=row["replaces"],
        resubmits=row["resubmits"],
        checked_at=_dt(row["checked_at"]),
        remote_status=row["remote_status"],
        schedule=row["schedule"],
    )


def _row_to_mail(row: sqlite3.Row) -> MailRecord:
    seen = _dt(row["seen_at"])
    assert seen is not None
    return MailRecord(
        key=MailKey(row["mailbox"], row["uidvalidity"], row["uid"]),
        message_id=row["message_id"],
        outcome=MailOutcome(row["outcome"]),
        reason=row["reason"],
        seen_at=seen,
        export_id=row["export_id"],
        job_ids=tuple(json.loads(row["job_ids"])),
        acknowledged_at=_dt(row["acknowledged_at"]),
    )


class Store:
    """The SQLite ledger. One instance per process; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            old_umask = os.umask(0o077)  # the ledger holds download links: private
            try:
                self._conn = sqlite3.connect(
                    str(path), timeout=10.0, isolation_level=None, check_same_thread=False
                )
            finally:
                os.umask(old_umask)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA busy_timeout=10000")
            check = self._conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"ledger {path} failed its integrity check: {check}")
            self._migrate()
            os.chmod(path, 0o600)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the ledger {path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"ledger {self.path} has schema version {version}, newer than this "
                f"inbox-poller understands ({SCHEMA_VERSION}): upgrade inbox-poller"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._transaction() as conn:
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
            logger.info("ledger %s: migrated to schema version %d", self.path, target)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"ledger {self.path}: cannot start a transaction: {exc}") from exc
            try:
                yield self._conn
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise StoreError(f"ledger {self.path}: {exc}") from exc
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"ledger {self.path}: commit failed: {exc}") from exc

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return list(self._conn.execute(sql, tuple(params)))
            except sqlite3.Error as exc:
                raise StoreError(f"ledger {self.path}: {exc}") from exc

    # ---- exports -------------------------------------------------------------

    def create_export(
        self,
        request: ExportRequest,
        now: datetime,
        *,
        replaces: Export | None = None,
        schedule: str | None = None,
    ) -> Export:
        """Insert a new export in ``submitting``: the trace exists before the POST.

        *replaces* is the earlier export this one retries (after a failed job, a lost
        notification or an expired link); the chain's length is kept in ``resubmits``.
        """
        reason = "created" if schedule is None else f"created by schedule {schedule}"
        if replaces is not None:
            reason = f"resubmission of export {replaces.export_id}"
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO exports (method, stat, startdate, enddate, state, created_at,"
                " updated_at, replaces, resubmits, schedule)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.method,
                    request.stat,
                    request.startdate,
                    request.enddate,
                    ExportState.SUBMITTING.value,
                    _iso(now),
                    _iso(now),
                    replaces.export_id if replaces else None,
                    replaces.resubmits + 1 if replaces else 0,
                    schedule if replaces is None else replaces.schedule,
                ),
            )
            export_id = cursor.lastrowid
            assert export_id is not None
            self._event(conn, export_id, None, ExportState.SUBMITTING, reason, now)
        return self.get_export(export_id)

    def successor(self, export_id: int) -> Export | None:
        """Return the export that resubmitted *export_id*, if any."""
        rows = self._query("SELECT * FROM exports WHERE replaces = ?", (export_id,))
        return _row_to_export(rows[0]) if rows else None

    def mark_checked(self, export_id: int, remote_status: str, now: datetime) -> None:
        """Record what Pinpointe said about a job still awaiting its notification."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE exports SET checked_at = ?, remote_status = ? WHERE export_id = ?",
                (_iso(now), remote_status, export_id),
            )
            conn.execute(
                "INSERT INTO events (at, export_id, from_state, to_state, reason)"
                " SELECT ?, export_id, state, state, ? FROM exports WHERE export_id = ?",
                (_iso(now), f"Pinpointe reports the job as {remote_status!r}", export_id),
            )

    def set_daemon_value(self, key: str, value: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO daemon_state (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def daemon_values(self) -> dict[str, str]:
        return {row["key"]: row["value"] for row in self._query("SELECT * FROM daemon_state")}

    def get_export(self, export_id: int) -> Export:
        rows = self._query("SELECT * FROM exports WHERE export_id = ?", (export_id,))
        if not rows:
            raise StoreError(f"no export {export_id} in the ledger")
        return _row_to_export(rows[0])

    def export_by_job_id(self, job_id: str) -> Export | None:
        rows = self._query("SELECT * FROM exports WHERE job_id = ?", (job_id,))
        return _row_to_export(rows[0]) if rows else None

    def list_exports(self, states: Iterable[ExportState] | None = None) -> list[Export]:
        """Return exports (optionally only those in *states*), oldest first."""
        if states is None:
            rows = self._query("SELECT * FROM exports ORDER BY export_id")
        else:
            wanted = [s.value for s in states]
            marks = ",".join("?" * len(wanted))
            rows = self._query(
                f"SELECT * FROM exports WHERE state IN ({marks}) ORDER BY export_id",  # noqa: S608
                wanted,
            )
        return [_row_to_export(row) for row in rows]

    def counts_by_state(self) -> dict[str, int]:
        rows = self._query("SELECT state, COUNT(*) AS n FROM exports GROUP BY state")
        return {row["state"]: row["n"] for row in rows}

    def history(self, export_id: int) -> list[tuple[datetime, str | None, str, str | None]]:
        rows = self._query(
            "SELECT at, from_state, to_state, reason FROM events WHERE export_id = ?"
            " ORDER BY event_id",
            (export_id,),
        )
        return [
            (_dt(r["at"]) or datetime.min, r["from_state"], r["to_state"], r["reason"])
            for r in rows
        ]

    def _event(
        self,
        conn: sqlite3.Connection,
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
                _iso(now),
                export_id,
                from_state.value if from_state else None,
                to_state.value,
                reason,
            ),
        )

    def _transition(
        self,
        conn: sqlite3.Connection,
        export_id: int,
        wanted: ExportState,
        now: datetime,
        reason: str | None,
        **fields: Any,
    ) -> None:
        row = conn.execute("SELECT state FROM exports WHERE export_id = ?", (export_id,)).fetchone()
        if row is None:
            raise StoreError(f"no export {export_id} in the ledger")
        current = ExportState(row["state"])
        if not can_transition(current, wanted):
            raise IllegalTransition(export_id, current.value, wanted.value)
        fields = {"state": wanted.value, "updated_at": _iso(now), "reason": reason, **fields}
        assignments = ", ".join(f"{name} = ?" for name in fields)
        conn.execute(
            f"UPDATE exports SET {assignments} WHERE export_id = ?",  # noqa: S608
            (*fields.values(), export_id),
        )
        self._event(conn, export_id, current, wanted, reason, now)

    def _change(
        self, export_id: int, wanted: ExportState, now: datetime, reason: str | None, **fields: Any
    ) -> Export:
        with self._transaction() as conn:
            self._transition(conn, export_id, wanted, now, reason, **fields)
        return self.get_export(export_id)

    def mark_submitted(self, export_id: int, job_id: str, response: str, now: datetime) -> Export:
        """Record the job ID Pinpointe returned (``submitting`` -> ``submitted``).

        If a notification already revealed the same job ID (the export was
        adopted while its POST was in flight), only the response is recorded.
        """
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT state, job_id FROM exports WHERE export_id = ?", (export_id,)
            ).fetchone()
            if row is not None and row["job_id"] == job_id:
                conn.execute(
                    "UPDATE exports SET submit_response = ?, submitted_at = ? WHERE export_id = ?",
                    (response, _iso(now), export_id),
                )
            else:
                self._transition(
                    conn,
                    export_id,
                    ExportState.SUBMITTED,
                    now,
                    None,
                    job_id=job_id,
                    submitted_at=_iso(now),
                    submit_response=response,
                )
        return self.get_export(export_id)

    def mark_submit_failed(self, export_id: int, reason: str, now: datetime) -> Export:
        return self._change(export_id, ExportState.SUBMIT_FAILED, now, reason)

    def mark_submit_unknown(self, export_id: int, reason: str, now: datetime) -> Export:
        return self._change(export_id, ExportState.SUBMIT_UNKNOWN, now, reason)

    def mark_downloading(self, export_id: int, now: datetime) -> Export:
        """Start (or restart) a download; counts one attempt."""
        return self._change(
            export_id,
            ExportState.DOWNLOADING,
            now,
            None,
            attempts=self.get_export(export_id).attempts + 1,
            part_path=None,
        )

    def mark_download_parked(self, export_id: int, now: datetime) -> Export:
        """A download interrupted by shutdown: back to ``notified``, the attempt not counted."""
        return self._change(
            export_id,
            ExportState.NOTIFIED,
            now,
            "interrupted by shutdown",
            attempts=max(0, self.get_export(export_id).attempts - 1),
            part_path=None,
        )

    def mark_download_retry(self, export_id: int, reason: str, now: datetime) -> Export:
        """A transient failure: back to ``notified`` so a later pass tries again."""
        return self._change(export_id, ExportState.NOTIFIED, now, reason, part_path=None)

    def mark_verified(
        self, export_id: int, part_path: str, archived: ArchivedFile, now: datetime
    ) -> Export:
        """The complete, valid payload is fsynced at *part_path*; record what it will become."""
        return self._change(
            export_id,
            ExportState.VERIFIED,
            now,
            None,
            part_path=part_path,
            archive_path=archived.path,
            bytes=archived.bytes,
            sha256=archived.sha256,
            records=archived.records,
            top_level=archived.top_level,
            source=archived.source,
        )

    def mark_archived(self, export_id: int, now: datetime) -> Export:
        return self._change(
            export_id, ExportState.ARCHIVED, now, None, archived_at=_iso(now), part_path=None
        )

    def mark_redownload(self, export_id: int, reason: str, now: datetime) -> Export:
        """A verified file vanished before it was archived: download again."""
        return self._change(export_id, ExportState.DOWNLOADING, now, reason, part_path=None)

    def mark_link_expired(self, export_id: int, reason: str, now: datetime) -> Export:
        return self._change(export_id, ExportState.LINK_EXPIRED, now, reason, part_path=None)

    def mark_failed(self, export_id: int, reason: str, now: datetime) -> Export:
        return self._change(export_id, ExportState.FAILED, now, reason, part_path=None)

    def part_path(self, export_id: int) -> str | None:
        rows = self._query("SELECT part_path FROM exports WHERE export_id = ?", (export_id,))
        return rows[0]["part_path"] if rows else None

    # ---- mail ------------------------------------------------------------------

    def watermark(self, mailbox: str, uidvalidity: int) -> int:
        """Return the highest UID handled in this (mailbox, UIDVALIDITY); 0 for a new one."""
        rows = self._query(
            "SELECT last_uid FROM watermarks WHERE mailbox = ? AND uidvalidity = ?",
            (mailbox, uidvalidity),
        )
        return int(rows[0]["last_uid"]) if rows else 0

    def watermark_count(self, mailbox: str) -> int:
        """Return how many UIDVALIDITY values of *mailbox* have a watermark."""
        rows = self._query("SELECT COUNT(*) AS n FROM watermarks WHERE mailbox = ?", (mailbox,))
        return int(rows[0]["n"])

    def mail_by_message_id(self, message_id: str) -> list[MailRecord]:
        rows = self._query(
            "SELECT * FROM mails WHERE message_id = ? ORDER BY seen_at", (message_id,)
        )
        return [_row_to_mail(row) for row in rows]

    def get_mail(self, key: MailKey) -> MailRecord | None:
        rows = self._query(
            "SELECT * FROM mails WHERE mailbox = ? AND uidvalidity = ? AND uid = ?",
            (key.mailbox, key.uidvalidity, key.uid),
        )
        return _row_to_mail(rows[0]) if rows else None

    def record_mail(
        self,
        record: MailRecord,
        now: datetime,
        *,
        summary: dict[str, Any] | None = None,
        download_url: str | None = None,
        adopt_job_id: str | None = None,
    ) -> None:
        """Record one mail, advance the watermark, and (for a match) notify its export.

        All in one transaction, so a crash either keeps everything or nothing: the
        mail is then simply read again.
        """
        with self._transaction() as conn:
            self._put_mail(conn, record, summary)
            conn.execute(
                "INSERT INTO watermarks (mailbox, uidvalidity, last_uid) VALUES (?, ?, ?)"
                " ON CONFLICT (mailbox, uidvalidity)"
                " DO UPDATE SET last_uid = MAX(last_uid, excluded.last_uid)",
                (record.key.mailbox, record.key.uidvalidity, record.key.uid),
            )
            if record.outcome is MailOutcome.MATCHED:
                self._notify(conn, record, download_url, adopt_job_id, now)

    def rematch_mail(
        self,
        record: MailRecord,
        now: datetime,
        *,
        download_url: str | None = None,
        adopt_job_id: str | None = None,
    ) -> None:
        """Replace the outcome of a mail recorded earlier (an unmatched mail now matched)."""
        with self._transaction() as conn:
            self._put_mail(conn, record, None, replace=True)
            if record.outcome is MailOutcome.MATCHED:
                self._notify(conn, record, download_url, adopt_job_id, now)

    def _put_mail(
        self,
        conn: sqlite3.Connection,
        record: MailRecord,
        summary: dict[str, Any] | None,
        *,
        replace: bool = False,
    ) -> None:
        key = record.key
        values = (
            record.message_id,
            record.outcome.value,
            record.reason,
            record.export_id,
            json.dumps(list(record.job_ids)),
            _iso(record.acknowledged_at),
        )
        if replace:
            conn.execute(
                "UPDATE mails SET message_id = ?, outcome = ?, reason = ?, export_id = ?,"
                " job_ids = ?, acknowledged_at = ? WHERE mailbox = ? AND uidvalidity = ?"
                " AND uid = ?",
                (*values, key.mailbox, key.uidvalidity, key.uid),
            )
            return
        conn.execute(
            "INSERT INTO mails (message_id, outcome, reason, export_id, job_ids,"
            " acknowledged_at, mailbox, uidvalidity, uid, summary, seen_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                *values,
                key.mailbox,
                key.uidvalidity,
                key.uid,
                json.dumps(summary) if summary is not None else None,
                _iso(record.seen_at),
            ),
        )

    def _notify(
        self,
        conn: sqlite3.Connection,
        record: MailRecord,
        download_url: str | None,
        adopt_job_id: str | None,
        now: datetime,
    ) -> None:
        if record.export_id is None or download_url is None:
            raise StoreError(f"mail {record.key}: a match needs an export and a download link")
        fields: dict[str, Any] = {
            "download_url": download_url,
            "message_id": record.message_id,
            "mail_mailbox": record.key.mailbox,
            "mail_uidvalidity": record.key.uidvalidity,
            "mail_uid": record.key.uid,
            "notified_at": _iso(now),
        }
        reason = f"notification {record.key}"
        if adopt_job_id is not None:
            fields["job_id"] = adopt_job_id
            reason = f"notification {record.key} revealed job ID {adopt_job_id}"
        self._transition(conn, record.export_id, ExportState.NOTIFIED, now, reason, **fields)

    def unmatched_mails(self, since: datetime) -> list[tuple[MailRecord, dict[str, Any]]]:
        """Return unmatched mails seen after *since*, with the summary kept for re-matching."""
        rows = self._query(
            "SELECT * FROM mails WHERE outcome = ? AND seen_at >= ? AND summary IS NOT NULL"
            " ORDER BY seen_at, uidvalidity, uid",
            (MailOutcome.UNMATCHED.value, _iso(since)),
        )
        return [(_row_to_mail(row), json.loads(row["summary"])) for row in rows]

    def mails_to_acknowledge(self) -> list[MailRecord]:
        """Mails whose export is archived (or done) and that are not yet acknowledged."""
        rows = self._query(
            "SELECT m.* FROM mails m JOIN exports e ON e.export_id = m.export_id"
            " WHERE m.acknowledged_at IS NULL AND m.outcome IN (?, ?) AND e.state IN (?, ?)"
            " ORDER BY m.seen_at, m.uidvalidity, m.uid",
            (
                MailOutcome.MATCHED.value,
                MailOutcome.DUPLICATE.value,
                ExportState.ARCHIVED.value,
                ExportState.ACKNOWLEDGED.value,
            ),
        )
        return [_row_to_mail(row) for row in rows]

    def mark_mail_acknowledged(self, key: MailKey, result: str, now: datetime) -> None:
        """Record that a mail was marked on the server; an archived export becomes final."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT export_id FROM mails WHERE mailbox = ? AND uidvalidity = ? AND uid = ?",
                (key.mailbox, key.uidvalidity, key.uid),
            ).fetchone()
            if row is None:
                raise StoreError(f"mail {key} is not in the ledger")
            conn.execute(
                "UPDATE mails SET acknowledged_at = ?, ack_result = ? WHERE mailbox = ?"
                " AND uidvalidity = ? AND uid = ?",
                (_iso(now), result, key.mailbox, key.uidvalidity, key.uid),
            )
            export_id = row["export_id"]
            state = conn.execute(
                "SELECT state FROM exports WHERE export_id = ?", (export_id,)
            ).fetchone()
            if state is not None and state["state"] == ExportState.ARCHIVED.value:
                self._transition(
                    conn,
                    export_id,
                    ExportState.ACKNOWLEDGED,
                    now,
                    f"mail {key}: {result}",
                    acknowledged_at=_iso(now),
                )

    def mail_counts(self) -> dict[str, int]:
        rows = self._query("SELECT outcome, COUNT(*) AS n FROM mails GROUP BY outcome")
        return {row["outcome"]: row["n"] for row in rows}
