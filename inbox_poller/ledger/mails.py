"""Mail records and watermarks: what the ledger knows about every mail it has read.

A mail is recorded once, with its outcome and the watermark advance, in the same
transaction that notifies its export, so a crash keeps all of it or none; the mail is
then simply read again.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from inbox_poller.errors import StoreError
from inbox_poller.ledger.connection import LedgerConnection
from inbox_poller.ledger.schema import row_to_mail, summary_from_json, summary_to_json, to_iso
from inbox_poller.models import ExportState, MailKey, MailOutcome, MailRecord, MailSummary


class MailRecords(LedgerConnection):
    """The ``mails`` and ``watermarks`` tables; the base of :class:`~.store.Store`."""

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
        return [row_to_mail(row) for row in rows]

    def get_mail(self, key: MailKey) -> MailRecord | None:
        rows = self._query(
            "SELECT * FROM mails WHERE mailbox = ? AND uidvalidity = ? AND uid = ?",
            (key.mailbox, key.uidvalidity, key.uid),
        )
        return row_to_mail(rows[0]) if rows else None

    def record_mail(
        self,
        record: MailRecord,
        now: datetime,
        *,
        summary: MailSummary | None = None,
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
        summary: MailSummary | None,
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
            to_iso(record.acknowledged_at),
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
                summary_to_json(summary) if summary is not None else None,
                to_iso(record.seen_at),
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
            "notified_at": to_iso(now),
        }
        reason = f"notification {record.key}"
        if adopt_job_id is not None:
            # decided inside the transaction: the submit's answer may land concurrently
            row = conn.execute(
                "SELECT job_id FROM exports WHERE export_id = ?", (record.export_id,)
            ).fetchone()
            current = row["job_id"] if row is not None else None
            if current is None:
                fields["job_id"] = adopt_job_id
                reason = f"notification {record.key} revealed job ID {adopt_job_id}"
            elif current != adopt_job_id:
                raise StoreError(
                    f"mail {record.key} names job {adopt_job_id}, but export "
                    f"{record.export_id} is job {current}"
                )
        self._transition(conn, record.export_id, ExportState.NOTIFIED, now, reason, **fields)

    def unmatched_mails(self, since: datetime) -> list[tuple[MailRecord, MailSummary]]:
        """Return unmatched mails seen after *since*, with the summary kept for re-matching."""
        rows = self._query(
            "SELECT * FROM mails WHERE outcome = ? AND seen_at >= ? AND summary IS NOT NULL"
            " ORDER BY seen_at, uidvalidity, uid",
            (MailOutcome.UNMATCHED.value, to_iso(since)),
        )
        return [(row_to_mail(row), summary_from_json(row["summary"])) for row in rows]

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
        return [row_to_mail(row) for row in rows]

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
                (to_iso(now), result, key.mailbox, key.uidvalidity, key.uid),
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
                    acknowledged_at=to_iso(now),
                )
