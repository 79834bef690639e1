"""Archive once (schema version 9): one archived export per archive path, on both engines.

The path names the job (``archive.relative_path``) and a job ID is unique, so two
exports at one path mean a bug, a layout change or a bad migration: the ledger refuses
the second ``archived``, and an old SQLite file is checked before the rule is added.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from inbox_poller.errors import StoreError
from inbox_poller.ledger.schema import SCHEMA_VERSION, migration_statements
from inbox_poller.ledger.store import Store
from inbox_poller.models import (
    ArchivedFile,
    ExportRequest,
    ExportState,
    MailKey,
    MailOutcome,
    MailRecord,
)
from tests.plugins.postgres import PgDatabase, postgres_session

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PATH = "GetNewsletterContactDataSummaryAsync/2026/11/stat-42_job-7.json"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        ledger = Store(tmp_path / "state" / "state.db")
    else:
        ledger = Store(postgres_session(request.getfixturevalue("pg_database")))
    yield ledger
    ledger.close()


def _verified(store: Store, job_id: str, uid: int, path: str = PATH) -> int:
    export = store.create_export(ExportRequest("42"), NOW)
    store.mark_submitted(export.export_id, job_id, "raw", NOW)
    store.record_mail(
        MailRecord(
            MailKey("INBOX", 1, uid), f"<{uid}@x>", MailOutcome.MATCHED, "", NOW, export.export_id
        ),
        NOW,
        download_url=f"https://x.example/{uid}",
    )
    store.mark_downloading(export.export_id, NOW)
    store.mark_verified(export.export_id, "/part", ArchivedFile(path, 1, "00" * 32, None), NOW)
    return export.export_id


def test_a_second_export_is_not_archived_at_the_same_path(store: Store) -> None:
    first = _verified(store, "7", 1)
    second = _verified(store, "8", 2)
    store.mark_archived(first, NOW)
    with pytest.raises(StoreError, match=f"export {second}: another export is already archived"):
        store.mark_archived(second, NOW, hooks=["/bin/true"], event="{}")
    assert store.get_export(second).state is ExportState.VERIFIED
    assert store.pending_hook_runs() == []  # nothing of the refused transaction stayed
    assert [to for _, _, to, _ in store.history(second)].count("archived") == 0
    other = _verified(store, "9", 3, PATH.replace("job-7", "job-9"))
    store.mark_archived(other, NOW)  # the ledger goes on


def test_an_export_that_never_got_archived_keeps_no_path_to_itself(store: Store) -> None:
    """A failed export keeps ``archive_path`` from its last verified download."""
    failed = _verified(store, "7", 1)
    store.mark_redownload(failed, "the verified file vanished", NOW)
    store.mark_failed(failed, "gave up", NOW)
    assert store.get_export(failed).archived is not None
    again = _verified(store, "8", 2)
    store.mark_archived(again, NOW)
    assert store.get_export(again).state is ExportState.ARCHIVED


def _v8_ledger(path: Path, paths: list[str]) -> None:
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    for version in range(1, 9):
        for statement in migration_statements(version):
            conn.execute(statement)
    for job, archive_path in enumerate(paths, start=50):
        conn.execute(
            "INSERT INTO exports (method, stat, state, created_at, updated_at, job_id,"
            " archive_path, bytes, sha256, records, top_level) VALUES"
            " ('GetNewsletterContactDataSummaryAsync', '9', 'acknowledged', ?, ?, ?, ?, 3,"
            " 'ab', 1, 'array')",
            (NOW.isoformat(), NOW.isoformat(), str(job), archive_path),
        )
    conn.execute("PRAGMA user_version = 8")
    conn.commit()
    conn.close()


def test_an_old_sqlite_ledger_is_checked_before_the_rule_is_added(tmp_path: Path) -> None:
    clean = tmp_path / "clean" / "state.db"
    _v8_ledger(clean, ["a/1.json", "a/2.json"])
    Store(clean).close()
    assert sqlite3.connect(clean).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

    twice = tmp_path / "twice" / "state.db"
    _v8_ledger(twice, ["a/1.json", "a/1.json", "a/2.json"])
    with pytest.raises(StoreError) as caught:
        Store(twice)
    assert str(caught.value) == (
        f"ledger {twice}: cannot add the archive-once rule (schema version 9): 1 archive"
        " path(s) are recorded for several archived exports: a/1.json (2 exports, 1 to 2)."
        " Check `inbox-poller exports` and the archive, then keep one export per path"
    )
    assert sqlite3.connect(twice).execute("PRAGMA user_version").fetchone()[0] == 8


@pytest.mark.postgres
def test_a_postgresql_ledger_is_checked_before_the_rule_is_added(
    pg_database: PgDatabase,
) -> None:
    Store(postgres_session(pg_database)).close()
    with pg_database.connect() as conn:
        # back to version 8: without v9's index and v10's column
        conn.execute("DROP INDEX exports_archive_path")
        conn.execute("ALTER TABLE events DROP COLUMN tx")
        conn.execute("UPDATE schema_version SET version = 8")
        for job in ("1", "2"):
            conn.execute(
                "INSERT INTO exports (method, stat, state, created_at, updated_at, job_id,"
                " archive_path) VALUES ('m', '9', 'archived', 'x', 'x', %s, 'a/1.json')",
                (job,),
            )
    with pytest.raises(StoreError, match=r"a/1.json \(2 exports, 1 to 2\)"):
        postgres_session(pg_database)
    with pg_database.connect() as conn:
        conn.execute("UPDATE exports SET archive_path = 'a/2.json' WHERE job_id = '2'")
    Store(postgres_session(pg_database)).close()
    with pg_database.connect() as conn:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
    assert row == (SCHEMA_VERSION,)
