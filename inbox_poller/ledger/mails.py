"""Mail records and watermarks: what the ledger knows about every mail it has read.

A mail is recorded once, with its outcome and the watermark advance, in the same
transaction that notifies its exports (one, or several for a digest), so a crash keeps
all of it or none; the mail is then simply read again. Each export a mail names gets a
``mail_exports`` row with the link the mail offers it; when an export's link fails
(``failed_links``), the oldest link of its other mails not yet tried takes its place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from inbox_poller.errors import IllegalTransition, StoreError
from inbox_poller.ledger.connection import LedgerConnection
from inbox_poller.ledger.engine import Tx
from inbox_poller.ledger.schema import row_to_mail, summary_from_json, summary_to_json, to_iso
from inbox_poller.models import (
    FINAL_STATES,
    ExportState,
    MailKey,
    MailOutcome,
    MailRecord,
    MailSummary,
    Pairing,
)


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

    def mail_exports(self, key: MailKey) -> list[int]:
        """Return the exports a recorded mail concerns (several for a digest)."""
        rows = self._query(
            "SELECT export_id FROM mail_exports WHERE mailbox = ? AND uidvalidity = ?"
            " AND uid = ? ORDER BY export_id",
            (key.mailbox, key.uidvalidity, key.uid),
        )
        return [int(row["export_id"]) for row in rows]

    def record_mail(
        self,
        record: MailRecord,
        now: datetime,
        *,
        summary: MailSummary | None = None,
        download_url: str | None = None,
        adopt_job_id: str | None = None,
        pairings: Sequence[Pairing] | None = None,
    ) -> None:
        """Record one mail, advance the watermark, and notify each export it matched.

        All in one transaction, so a crash either keeps everything or nothing: the
        mail is then simply read again. *pairings* says what the mail means for each
        export it names (``Match.pairings``); without them, a mail about
        ``record.export_id`` matched with *download_url* (and naming *adopt_job_id*).
        """
        pairs = self._pairings(record, pairings, download_url, adopt_job_id)
        with self._transaction() as conn:
            self._put_mail(conn, record, summary)
            conn.execute(
                "INSERT INTO watermarks (mailbox, uidvalidity, last_uid) VALUES (?, ?, ?)"
                " ON CONFLICT (mailbox, uidvalidity)"
                " DO UPDATE SET last_uid = CASE WHEN excluded.last_uid > watermarks.last_uid"
                " THEN excluded.last_uid ELSE watermarks.last_uid END",
                (record.key.mailbox, record.key.uidvalidity, record.key.uid),
            )
            self._pair(conn, record, pairs, now)

    def rematch_mail(
        self,
        record: MailRecord,
        now: datetime,
        *,
        download_url: str | None = None,
        adopt_job_id: str | None = None,
        pairings: Sequence[Pairing] | None = None,
    ) -> None:
        """Replace the outcome of a mail recorded earlier (an unmatched mail now matched)."""
        pairs = self._pairings(record, pairings, download_url, adopt_job_id)
        with self._transaction() as conn:
            self._put_mail(conn, record, None, replace=True)
            self._pair(conn, record, pairs, now)

    @staticmethod
    def _pairings(
        record: MailRecord,
        pairings: Sequence[Pairing] | None,
        download_url: str | None,
        adopt_job_id: str | None,
    ) -> tuple[Pairing, ...]:
        if pairings is not None:
            return tuple(pairings)
        if record.export_id is None:
            return ()
        return (
            Pairing(record.export_id, adopt_job_id, record.outcome, record.reason, download_url),
        )

    def _pair(
        self,
        conn: Tx,
        record: MailRecord,
        pairings: tuple[Pairing, ...],
        now: datetime,
    ) -> None:
        """Tie the mail to each export it names; notify those it matched."""
        key = record.key
        if record.outcome is MailOutcome.MATCHED and not any(
            p.outcome is MailOutcome.MATCHED for p in pairings
        ):
            raise StoreError(f"mail {key}: a match needs an export and a download link")
        for pairing in pairings:
            conn.execute(
                "INSERT INTO mail_exports (mailbox, uidvalidity, uid, export_id,"
                " job_id, outcome, reason, download_url) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (mailbox, uidvalidity, uid, export_id) DO UPDATE SET"
                " job_id = excluded.job_id, outcome = excluded.outcome,"
                " reason = excluded.reason, download_url = excluded.download_url",
                (
                    key.mailbox,
                    key.uidvalidity,
                    key.uid,
                    pairing.export_id,
                    pairing.job_id,
                    pairing.outcome.value,
                    pairing.reason,
                    pairing.download_url,
                ),
            )
            if pairing.outcome is MailOutcome.MATCHED:
                self._notify(conn, record, pairing, now)
            elif pairing.download_url is not None:
                # a link kept from a duplicate: its export's link may have failed meanwhile
                self._next_link(conn, pairing.export_id, now)

    def _put_mail(
        self,
        conn: Tx,
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

    def _notify(self, conn: Tx, record: MailRecord, pairing: Pairing, now: datetime) -> None:
        export_id = pairing.export_id
        if pairing.download_url is None:
            raise StoreError(f"mail {record.key}: a match needs an export and a download link")
        row = self._export_row(conn, "state, job_id, download_url", export_id)
        if row is None:
            raise StoreError(f"no export {export_id} in the ledger")
        fields: dict[str, Any] = {
            "download_url": pairing.download_url,
            "message_id": record.message_id,
            "mail_mailbox": record.key.mailbox,
            "mail_uidvalidity": record.key.uidvalidity,
            "mail_uid": record.key.uid,
            "notified_at": to_iso(now),
        }
        reason = f"notification {record.key}"
        if ExportState(row["state"]) in (ExportState.LINK_EXPIRED, ExportState.FAILED):
            # decided again inside the transaction: a download or a resubmission may
            # have moved on since the mail was matched
            self._check_another_link(conn, export_id, row, pairing.download_url)
            fields["attempts"] = 0
            reason = f"notification {record.key} offers another link"
        current = row["job_id"]
        if pairing.job_id is not None:
            # decided inside the transaction: the submit's answer may land concurrently
            if current is None:
                fields["job_id"] = pairing.job_id
                reason = f"notification {record.key} revealed job ID {pairing.job_id}"
            elif current != pairing.job_id:
                raise StoreError(
                    f"mail {record.key} names job {pairing.job_id}, but export "
                    f"{export_id} is job {current}"
                )
        self._transition(conn, export_id, ExportState.NOTIFIED, now, reason, **fields)

    def _check_another_link(self, conn: Tx, export_id: int, row: Any, url: str) -> None:
        """Refuse to notify a failed export again unless its link failed and *url* is new."""
        failed = self._failed_links(conn, export_id)
        if row["state"] == ExportState.FAILED.value and row["download_url"] not in failed:
            # the job failed, not a link: no other link can help
            raise IllegalTransition(export_id, row["state"], ExportState.NOTIFIED.value)
        successor = self._successor_id(conn, export_id)
        if successor is not None:
            raise StoreError(
                f"export {export_id} was resubmitted as export {successor}: not notified again"
            )
        if url in failed or url == row["download_url"]:
            raise StoreError(f"export {export_id}: that link already failed; not tried again")

    @staticmethod
    def _failed_links(conn: Tx, export_id: int) -> set[str]:
        rows = conn.execute("SELECT url FROM failed_links WHERE export_id = ?", (export_id,))
        return {row["url"] for row in rows}

    @staticmethod
    def _successor_id(conn: Tx, export_id: int) -> int | None:
        row = conn.execute(
            "SELECT export_id FROM exports WHERE replaces = ? LIMIT 1", (export_id,)
        ).fetchone()
        return int(row["export_id"]) if row is not None else None

    def _record_failed_link(self, conn: Tx, export_id: int, reason: str, now: datetime) -> None:
        """Remember that the export's current link failed: it is never tried again."""
        conn.execute(
            "INSERT INTO failed_links (export_id, url, reason, failed_at)"
            " SELECT export_id, download_url, ?, ? FROM exports"
            " WHERE export_id = ? AND download_url IS NOT NULL ON CONFLICT DO NOTHING",
            (reason, to_iso(now), export_id),
        )

    def _next_link(self, conn: Tx, export_id: int, now: datetime) -> bool:
        """Move an export whose link failed to the oldest link of its mails not yet tried.

        Only when its own link is what failed and it was not resubmitted; returns whether
        it is ``notified`` again. Each distinct link is tried once (docs/matching.md §6).
        """
        row = self._export_row(conn, "state, download_url", export_id)
        if row is None or ExportState(row["state"]) not in (
            ExportState.LINK_EXPIRED,
            ExportState.FAILED,
        ):
            return False
        failed = self._failed_links(conn, export_id)
        if row["download_url"] not in failed or self._successor_id(conn, export_id) is not None:
            return False
        candidates = conn.execute(
            "SELECT p.download_url, p.mailbox, p.uidvalidity, p.uid, m.message_id"
            " FROM mail_exports p JOIN mails m ON m.mailbox = p.mailbox"
            " AND m.uidvalidity = p.uidvalidity AND m.uid = p.uid"
            " WHERE p.export_id = ? AND p.download_url IS NOT NULL"
            " ORDER BY m.seen_at, p.uidvalidity, p.uid",
            (export_id,),
        ).fetchall()
        fresh = next((c for c in candidates if c["download_url"] not in failed), None)
        if fresh is None:
            return False
        key = MailKey(fresh["mailbox"], fresh["uidvalidity"], fresh["uid"])
        self._transition(
            conn,
            export_id,
            ExportState.NOTIFIED,
            now,
            f"its link failed; trying the link of mail {key}",
            download_url=fresh["download_url"],
            message_id=fresh["message_id"],
            mail_mailbox=key.mailbox,
            mail_uidvalidity=key.uidvalidity,
            mail_uid=key.uid,
            notified_at=to_iso(now),
            attempts=0,
            part_path=None,
        )
        return True

    def unmatched_mails(self, since: datetime) -> list[tuple[MailRecord, MailSummary]]:
        """Return unmatched mails seen after *since*, with the summary kept for re-matching."""
        rows = self._query(
            "SELECT * FROM mails WHERE outcome = ? AND seen_at >= ? AND summary IS NOT NULL"
            " ORDER BY seen_at, uidvalidity, uid",
            (MailOutcome.UNMATCHED.value, to_iso(since)),
        )
        return [(row_to_mail(row), summary_from_json(row["summary"])) for row in rows]

    def mails_to_acknowledge(self) -> list[MailRecord]:
        """Mails whose exports are done, not yet acknowledged.

        Done: every export the mail concerns is archived (or acknowledged) or ended for
        good, and at least one is archived; for a one-export mail, that its export is
        archived. A digest is acknowledged once, when the last of its exports is done.
        """
        settled = sorted({ExportState.ARCHIVED.value, *(s.value for s in FINAL_STATES)})
        marks = ",".join("?" * len(settled))
        rows = self._query(
            "SELECT DISTINCT m.* FROM mails m"  # noqa: S608 (placeholders only)
            " JOIN mail_exports p ON p.mailbox = m.mailbox AND p.uidvalidity = m.uidvalidity"
            " AND p.uid = m.uid JOIN exports e ON e.export_id = p.export_id"
            " WHERE m.acknowledged_at IS NULL AND m.outcome IN (?, ?) AND e.state IN (?, ?)"
            " AND NOT EXISTS (SELECT 1 FROM mail_exports q"
            " JOIN exports f ON f.export_id = q.export_id WHERE q.mailbox = m.mailbox"
            f" AND q.uidvalidity = m.uidvalidity AND q.uid = m.uid AND f.state NOT IN ({marks}))"
            " ORDER BY m.seen_at, m.uidvalidity, m.uid",
            (
                MailOutcome.MATCHED.value,
                MailOutcome.DUPLICATE.value,
                ExportState.ARCHIVED.value,
                ExportState.ACKNOWLEDGED.value,
                *settled,
            ),
        )
        return [row_to_mail(row) for row in rows]

    def mark_mail_acknowledged(self, key: MailKey, result: str, now: datetime) -> None:
        """Record that a mail was marked on the server; its archived exports become final."""
        self.mark_mails_acknowledged([(key, result)], now)

    def mark_mails_acknowledged(self, marked: Sequence[tuple[MailKey, str]], now: datetime) -> None:
        """Record that each mail of *marked* was marked on the server (with what was done),
        in one transaction: one fsync for a batch (``Poller.acknowledge``)."""
        with self._transaction() as conn:
            for key, result in marked:
                self._acknowledged(conn, key, result, now)

    def _acknowledged(self, conn: Tx, key: MailKey, result: str, now: datetime) -> None:
        row = conn.execute(
            "SELECT 1 FROM mails WHERE mailbox = ? AND uidvalidity = ? AND uid = ?",
            (key.mailbox, key.uidvalidity, key.uid),
        ).fetchone()
        if row is None:
            raise StoreError(f"mail {key} is not in the ledger")
        conn.execute(
            "UPDATE mails SET acknowledged_at = ?, ack_result = ? WHERE mailbox = ?"
            " AND uidvalidity = ? AND uid = ?",
            (to_iso(now), result, key.mailbox, key.uidvalidity, key.uid),
        )
        # CROSS JOIN: SQLite then starts from the mail's rows (its primary key), not from
        # every archived export (the state index, which also gives the order): that made
        # acknowledging a backlog of n mails cost O(n^2). PostgreSQL reads it as a join.
        archived = conn.execute(
            "SELECT e.export_id FROM mail_exports p CROSS JOIN exports e"
            " WHERE e.export_id = p.export_id AND p.mailbox = ? AND p.uidvalidity = ?"
            " AND p.uid = ? AND e.state = ? ORDER BY e.export_id",
            (key.mailbox, key.uidvalidity, key.uid, ExportState.ARCHIVED.value),
        ).fetchall()
        for export in archived:
            self._transition(
                conn,
                export["export_id"],
                ExportState.ACKNOWLEDGED,
                now,
                f"mail {key}: {result}",
                acknowledged_at=to_iso(now),
            )
