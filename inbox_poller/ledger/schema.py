"""The ledger's tables: the schema, its migrations, and the mapping of rows to models.

The schema is versioned with ``PRAGMA user_version``. Each entry of :data:`MIGRATIONS`
takes the file from the previous version to its own, and :func:`migrate` applies the
missing ones at open, one transaction per version, so an interrupted upgrade resumes
where it stopped. Datetimes are stored as ISO-8601 text and must be timezone-aware.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path

from inbox_poller.errors import StoreError
from inbox_poller.ledger.engine import Tx
from inbox_poller.models import (
    ArchivedFile,
    Export,
    ExportRequest,
    ExportState,
    HookRun,
    HookState,
    Link,
    MailKey,
    MailOutcome,
    MailRecord,
    MailSummary,
)

logger = logging.getLogger("inbox_poller.ledger")

SCHEMA_VERSION = 10

ARCHIVED_STATES = "('archived', 'acknowledged')"
"""The states of an export whose payload is in the archive (``models.ExportState``)."""

ARCHIVE_ONCE_INDEX = (
    "CREATE UNIQUE INDEX exports_archive_path ON exports(archive_path)"
    " WHERE archive_path IS NOT NULL AND state IN " + ARCHIVED_STATES
)
"""Schema version 9 on both engines: one archived export per archive path."""

MIGRATIONS: dict[int, str] = {
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
    # v4: a mail may concern several exports (a digest: one row each, with the link it
    # offers that export), and a link that failed is never tried again for its export
    # while another mail's link may be. Existing mails keep their one export; existing
    # link_expired exports keep their link as failed.
    4: """
    CREATE TABLE mail_exports (
        mailbox      TEXT NOT NULL,
        uidvalidity  INTEGER NOT NULL,
        uid          INTEGER NOT NULL,
        export_id    INTEGER NOT NULL REFERENCES exports(export_id),
        job_id       TEXT,
        outcome      TEXT NOT NULL,
        reason       TEXT NOT NULL DEFAULT '',
        download_url TEXT,
        PRIMARY KEY (mailbox, uidvalidity, uid, export_id),
        FOREIGN KEY (mailbox, uidvalidity, uid) REFERENCES mails(mailbox, uidvalidity, uid)
    );
    CREATE INDEX mail_exports_export ON mail_exports(export_id);
    INSERT INTO mail_exports
        (mailbox, uidvalidity, uid, export_id, job_id, outcome, reason, download_url)
    SELECT m.mailbox, m.uidvalidity, m.uid, m.export_id, e.job_id, m.outcome, m.reason,
           CASE WHEN m.outcome = 'matched' AND e.mail_mailbox = m.mailbox
                 AND e.mail_uidvalidity = m.uidvalidity AND e.mail_uid = m.uid
                THEN e.download_url END
    FROM mails m JOIN exports e ON e.export_id = m.export_id;

    CREATE TABLE failed_links (
        export_id INTEGER NOT NULL REFERENCES exports(export_id),
        url       TEXT NOT NULL,
        reason    TEXT,
        failed_at TEXT NOT NULL,
        PRIMARY KEY (export_id, url)
    );
    INSERT INTO failed_links (export_id, url, reason, failed_at)
    SELECT export_id, download_url, reason, updated_at FROM exports
    WHERE state = 'link_expired' AND download_url IS NOT NULL;
    CREATE INDEX mails_unacknowledged ON mails(acknowledged_at, outcome);
    """,
    # v5: where each export's manifest line starts, recorded before it is written, so a
    # resumed crash checks that one place instead of reading the whole manifest. An
    # export verified by an earlier version may have its line already: -1
    # (models.MANIFEST_OFFSET_UNKNOWN) has it looked for the old way, once.
    5: """
    ALTER TABLE exports ADD COLUMN manifest_offset INTEGER;
    UPDATE exports SET manifest_offset = -1 WHERE state = 'verified';
    """,
    # v6: hooks run at least once: each archived export's runs are recorded with its move
    # to archived, and kept with their failures and next try across restarts
    6: """
    CREATE TABLE hook_runs (
        export_id   INTEGER NOT NULL REFERENCES exports(export_id),
        hook        TEXT NOT NULL,
        payload     TEXT NOT NULL,
        state       TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_at     TEXT NOT NULL,
        last_error  TEXT,
        created_at  TEXT NOT NULL,
        finished_at TEXT,
        PRIMARY KEY (export_id, hook)
    );
    CREATE INDEX hook_runs_state ON hook_runs(state, next_at);
    """,
    # v7: every async export method (inbox_poller.methods): the method's options as
    # canonical JSON, the format requested and the one archived, the send a `sends`
    # schedule expanded, and a slot that makes (schedule, method, target, window, format,
    # attempt) unique. Old rows read as GetNewsletterContactDataSummaryAsync, JSON.
    7: """
    ALTER TABLE exports ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE exports ADD COLUMN format TEXT NOT NULL DEFAULT 'json';
    ALTER TABLE exports ADD COLUMN payload_format TEXT;
    ALTER TABLE exports ADD COLUMN origin TEXT;
    ALTER TABLE exports ADD COLUMN schedule_slot TEXT;
    CREATE UNIQUE INDEX exports_schedule_slot ON exports(schedule_slot)
        WHERE schedule_slot IS NOT NULL;
    CREATE INDEX exports_request ON exports(method, stat, startdate, enddate);
    UPDATE exports SET payload_format = 'json' WHERE sha256 IS NOT NULL
    """,
    # v8: several daemons on one (PostgreSQL) ledger: the daemon working on an export and
    # until when its lease runs; a lease not renewed (its daemon died) lets another take
    # the export over (Store.claim_download, docs/scale-out-ledger.md)
    8: """
    ALTER TABLE exports ADD COLUMN owner TEXT;
    ALTER TABLE exports ADD COLUMN lease_until TEXT;
    CREATE INDEX exports_owner ON exports(owner)
    """,
    # v9: archive once. The archive path names the job (``archive.relative_path``), and a
    # job ID is unique, so no two exports should ever be archived at one path; the index
    # makes it the ledger's rule (two daemons, a layout change, a migrated ledger).
    # Only exports that reached ``archived`` count: a failed export keeps the path its
    # last verified download was going to (``archive_path`` is not cleared), and a
    # resubmission of it has its own job and path. Checked first (``check_migration``).
    9: ARCHIVE_ONCE_INDEX,
    # v10: PostgreSQL's events get the writing transaction's ID (several writers, see
    # pgschema); SQLite has one writer at a time, and its event IDs are in commit order
    10: "",
}


def check_migration(conn: Tx, target: int, where: str) -> None:
    """Refuse to take the ledger at *where* to *target* when its data breaks the new rule.

    :raises StoreError: naming the rows, so they can be looked at before trying again.
    """
    if target != 9:
        return
    rows = conn.execute(
        "SELECT archive_path, COUNT(*) AS n, MIN(export_id) AS first, MAX(export_id) AS last"
        " FROM exports WHERE archive_path IS NOT NULL"
        " AND state IN ('archived', 'acknowledged')"  # ARCHIVED_STATES
        " GROUP BY archive_path HAVING COUNT(*) > 1 ORDER BY archive_path"
    ).fetchall()
    if rows:
        found = "; ".join(
            f"{row['archive_path']} ({row['n']} exports, {row['first']} to {row['last']})"
            for row in rows[:5]
        )
        raise StoreError(
            f"ledger {where}: cannot add the archive-once rule (schema version 9): "
            f"{len(rows)} archive path(s) are recorded for several archived exports: {found}."
            " Check `inbox-poller exports` and the archive, then keep one export per path"
        )


def migration_statements(version: int) -> list[str]:
    """Return the SQL statements that take the ledger to schema *version*."""
    return [statement for statement in MIGRATIONS[version].split(";") if statement.strip()]


def check_version(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse, for a read-only open, a ledger at another schema version than this one's.

    :raises StoreError: naming what to do: upgrade inbox-poller, or let ``run`` migrate.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"ledger {path} has schema version {version}, newer than this "
            f"inbox-poller understands ({SCHEMA_VERSION}): upgrade inbox-poller"
        )
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"ledger {path} has schema version {version}, older than this inbox-poller's "
            f"({SCHEMA_VERSION}): restart the daemon (or `inbox-poller run --once`) to migrate it"
        )


def migrate(
    conn: sqlite3.Connection,
    transaction: Callable[[], AbstractContextManager[Tx]],
    path: Path,
) -> None:
    """Bring the ledger at *path* up to :data:`SCHEMA_VERSION`, one *transaction* per version.

    :raises StoreError: when the file was written by a newer inbox-poller.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"ledger {path} has schema version {version}, newer than this "
            f"inbox-poller understands ({SCHEMA_VERSION}): upgrade inbox-poller"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        with transaction() as tx:
            check_migration(tx, target, str(path))
            for statement in migration_statements(target):
                tx.execute(statement)
            tx.execute(f"PRAGMA user_version = {target}")
        logger.info("ledger %s: migrated to schema version %d", path, target)


# ---- rows <-> models ----------------------------------------------------------------------


def to_iso(value: datetime | None) -> str | None:
    """Return *value* as ISO-8601 text; refuse a naive datetime, whose instant is unknown."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise StoreError("refusing to store a naive datetime")
    return value.isoformat()


def from_iso(value: str | None) -> datetime | None:
    """Return the datetime stored as ISO-8601 text (None stays None)."""
    return datetime.fromisoformat(value) if value is not None else None


def row_to_export(row: sqlite3.Row, failed_links: tuple[str, ...] = ()) -> Export:
    """Return the :class:`Export` held by one ``exports`` row (and its ``failed_links``)."""
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
            row["payload_format"] or "json",
        )
    created = from_iso(row["created_at"])
    updated = from_iso(row["updated_at"])
    assert created is not None
    assert updated is not None
    return Export(
        export_id=row["export_id"],
        request=ExportRequest(
            stat=row["stat"],
            startdate=row["startdate"],
            enddate=row["enddate"],
            method=row["method"],
            options=row["options"],
            format=row["format"],
        ),
        state=ExportState(row["state"]),
        created_at=created,
        updated_at=updated,
        job_id=row["job_id"],
        reason=row["reason"],
        submitted_at=from_iso(row["submitted_at"]),
        notified_at=from_iso(row["notified_at"]),
        archived_at=from_iso(row["archived_at"]),
        acknowledged_at=from_iso(row["acknowledged_at"]),
        download_url=row["download_url"],
        message_id=row["message_id"],
        mail=mail,
        attempts=row["attempts"],
        archived=archived,
        replaces=row["replaces"],
        resubmits=row["resubmits"],
        checked_at=from_iso(row["checked_at"]),
        remote_status=row["remote_status"],
        schedule=row["schedule"],
        origin=row["origin"],
        failed_links=failed_links,
        manifest_offset=row["manifest_offset"],
    )


def row_to_hook_run(row: sqlite3.Row) -> HookRun:
    """Return the :class:`HookRun` held by one ``hook_runs`` row joined with its ``job_id``."""
    next_at = from_iso(row["next_at"])
    created = from_iso(row["created_at"])
    assert next_at is not None and created is not None
    return HookRun(
        export_id=row["export_id"],
        job_id=row["job_id"],
        hook=row["hook"],
        payload=row["payload"],
        state=HookState(row["state"]),
        attempts=row["attempts"],
        next_at=next_at,
        last_error=row["last_error"],
        created_at=created,
        finished_at=from_iso(row["finished_at"]),
    )


def row_to_mail(row: sqlite3.Row) -> MailRecord:
    """Return the :class:`MailRecord` held by one ``mails`` row."""
    seen = from_iso(row["seen_at"])
    assert seen is not None
    return MailRecord(
        key=MailKey(row["mailbox"], row["uidvalidity"], row["uid"]),
        message_id=row["message_id"],
        outcome=MailOutcome(row["outcome"]),
        reason=row["reason"],
        seen_at=seen,
        export_id=row["export_id"],
        job_ids=tuple(json.loads(row["job_ids"])),
        acknowledged_at=from_iso(row["acknowledged_at"]),
    )


def summary_to_json(summary: MailSummary) -> str:
    """Return the ``mails.summary`` text of *summary*; links are ``[url, text, source, via]``."""
    return json.dumps(
        {
            "message_id": summary.message_id,
            "sender": summary.sender,
            "subject": summary.subject,
            "tokens": list(summary.tokens),
            "links": [[link.url, link.text, link.source, link.via] for link in summary.links],
            "candidates": list(summary.candidates),
            "authenticated": summary.sender_authenticated,
        }
    )


def summary_from_json(text: str) -> MailSummary:
    """Return the :class:`MailSummary` a ``mails.summary`` text holds.

    Rows written before ``via`` existed hold links as ``[url, text, source]``: the
    extractor put each unwrapped link after the link it came from, so ``via`` is taken
    to be the nearest link above it that is not unwrapped. Rows written before
    ``authenticated`` existed count as not authenticated.
    """
    stored = json.loads(text)
    links: list[Link] = []
    wrapper: str | None = None
    for url, link_text, source, *rest in stored.get("links", []):
        via = rest[0] if rest else (wrapper if source == "unwrapped" else None)
        links.append(Link(url, link_text, source, via))
        if source != "unwrapped":
            wrapper = url
    return MailSummary(
        message_id=stored.get("message_id"),
        sender=stored.get("sender"),
        subject=stored.get("subject", ""),
        tokens=tuple(stored.get("tokens", [])),
        links=tuple(links),
        candidates=tuple(stored.get("candidates", [])),
        sender_authenticated=stored.get("authenticated") is True,
    )
