"""The ledger against a real SQLite file and a real PostgreSQL (each store test runs on both).

Transitions, durability settings, mail records."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from inbox_poller.errors import DuplicateSubmission, IllegalTransition, LeaseLost, StoreError
from inbox_poller.ledger import store as store_module
from inbox_poller.ledger.schema import (
    SCHEMA_VERSION,
    migration_statements,
    summary_from_json,
    summary_to_json,
)
from inbox_poller.ledger.store import Store
from inbox_poller.methods import make_request
from inbox_poller.models import (
    ALLOWED_TRANSITIONS,
    MANIFEST_OFFSET_UNKNOWN,
    ArchivedFile,
    Export,
    ExportRequest,
    ExportState,
    Link,
    MailKey,
    MailOutcome,
    MailRecord,
    MailSummary,
    Pairing,
    utc_now,
)
from tests.plugins.postgres import postgres_session

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The ledger on each engine: a SQLite file, and a PostgreSQL database of its own."""
    if request.param == "sqlite":
        ledger = Store(tmp_path / "state" / "state.db")
    else:
        ledger = Store(postgres_session(request.getfixturevalue("pg_database")))
    yield ledger
    ledger.close()


def _submitted(store: Store, job_id: str = "1001") -> int:
    export = store.create_export(ExportRequest("42", "20261001", "20261002"), NOW)
    store.mark_submitted(export.export_id, job_id, "raw", NOW)
    return export.export_id


def _mail(uid: int, outcome: MailOutcome, export_id: int | None = None) -> MailRecord:
    return MailRecord(
        MailKey("INBOX", 7, uid), f"<m{uid}@example.test>", outcome, "why", NOW, export_id
    )


def test_pragmas_and_private_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _statements(store: Store, step: Callable[[], object]) -> list[str]:
    """The SQL statements *step* runs on *store*'s SQLite connection, in order."""
    seen: list[str] = []
    conn = store._conn
    assert isinstance(conn, sqlite3.Connection)
    conn.set_trace_callback(seen.append)
    try:
        step()
    finally:
        conn.set_trace_callback(None)
    return seen


def test_three_steps_of_a_download_commit_relaxed_and_every_other_durably(
    tmp_path: Path,
) -> None:
    # reliability.md §6.1: verified, the lease renewed before publishing, and archived are
    # committed without their fsync; the rest keep synchronous=FULL
    store = Store(tmp_path / "state.db")
    export_id = _submitted(store)
    store.record_mail(
        _mail(5, MailOutcome.MATCHED, export_id), NOW, download_url="https://x.example/f.json"
    )
    archived = ArchivedFile("a/b.json", 10, "ab" * 32, 3, "array", "https://x.example/f.json")
    relaxed = ["PRAGMA synchronous=NORMAL", "BEGIN IMMEDIATE"]
    claim = _statements(store, lambda: store.claim_download("me", NOW, timedelta(minutes=5)))
    assert claim[0] == "BEGIN IMMEDIATE" and "PRAGMA synchronous" not in " ".join(claim)
    steps = [
        lambda: store.mark_verified(export_id, "/tmp/part", archived, NOW, owner="me"),
        lambda: store.hold(export_id, "me", NOW, timedelta(minutes=5)),
    ]
    for step in steps:
        seen = _statements(store, step)
        assert seen[:2] == relaxed and seen[-2:] == ["COMMIT", "PRAGMA synchronous=FULL"]
    offset = _statements(store, lambda: store.record_manifest_offset(export_id, 0, owner="me"))
    assert offset[0] == "BEGIN IMMEDIATE" and offset[-1] == "COMMIT"
    seen = _statements(store, lambda: store.mark_archived(export_id, NOW, owner="me"))
    assert seen[:2] == relaxed and "PRAGMA synchronous=FULL" in seen
    ack = _statements(
        store, lambda: store.mark_mail_acknowledged(MailKey("INBOX", 7, 5), "keyword", NOW)
    )
    assert ack[0] == "BEGIN IMMEDIATE" and "PRAGMA synchronous" not in " ".join(ack)
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
    assert store.get_export(export_id).state is ExportState.ACKNOWLEDGED


def test_sync_fsyncs_the_write_ahead_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "state.db")
    _submitted(store)
    synced: list[str] = []
    fsync = os.fsync

    def recorded(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded)
    store.sync()
    assert synced == [str(tmp_path / "state.db-wal")]


def test_reopen_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    export_id = _submitted(Store(path))
    again = Store(path)
    assert again.get_export(export_id).job_id == "1001"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_full_life_of_an_export(store: Store) -> None:
    export_id = _submitted(store)
    store.record_mail(
        _mail(5, MailOutcome.MATCHED, export_id), NOW, download_url="https://x.example/f.json"
    )
    export = store.get_export(export_id)
    assert export.state is ExportState.NOTIFIED
    assert export.mail == MailKey("INBOX", 7, 5)
    assert export.download_url == "https://x.example/f.json"
    store.mark_downloading(export_id, NOW)
    archived = ArchivedFile("a/b.json", 10, "ab" * 32, 3, "array", "https://x.example/f.json")
    store.mark_verified(export_id, "/tmp/part", archived, NOW)
    assert store.part_path(export_id) == "/tmp/part"
    store.mark_archived(export_id, NOW)
    assert [m.key.uid for m in store.mails_to_acknowledge()] == [5]
    store.mark_mail_acknowledged(MailKey("INBOX", 7, 5), "keyword", NOW + timedelta(seconds=1))
    export = store.get_export(export_id)
    assert export.state is ExportState.ACKNOWLEDGED
    assert export.archived == archived
    assert store.mails_to_acknowledge() == []
    states = [to for _, _, to, _ in store.history(export_id)]
    assert states == [
        "submitting",
        "submitted",
        "notified",
        "downloading",
        "verified",
        "archived",
        "acknowledged",
    ]


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        (current, wanted)
        for current in ExportState
        for wanted in ExportState
        if wanted not in ALLOWED_TRANSITIONS[current]
    ][:40],
)
def test_illegal_transitions_are_refused(
    store: Store, current: ExportState, wanted: ExportState
) -> None:
    export = store.create_export(ExportRequest("1"), NOW)
    store._conn.execute(
        "UPDATE exports SET state = ? WHERE export_id = ?", (current.value, export.export_id)
    )
    with pytest.raises(IllegalTransition), store._transaction() as conn:
        store._transition(conn, export.export_id, wanted, NOW, None)
    assert store.get_export(export.export_id).state is current


def test_archived_cannot_be_downloaded_again(store: Store) -> None:
    export_id = _submitted(store)
    store.record_mail(_mail(1, MailOutcome.MATCHED, export_id), NOW, download_url="https://a/b")
    store.mark_downloading(export_id, NOW)
    store.mark_verified(export_id, "/p", ArchivedFile("p", 1, "00" * 32, None), NOW)
    store.mark_archived(export_id, NOW)
    with pytest.raises(IllegalTransition):
        store.mark_downloading(export_id, NOW)


def _summary(*tokens: str) -> MailSummary:
    link = Link("https://na01.mypinpointe.com/x.json", "Download", "href")
    return MailSummary("<m@x>", "a@example.com", "Export ready", tokens, (link,), ())


def test_mail_and_watermark_advance_together(store: Store) -> None:
    assert store.watermark("INBOX", 7) == 0
    store.record_mail(_mail(3, MailOutcome.UNMATCHED), NOW, summary=_summary())
    store.record_mail(_mail(9, MailOutcome.REFUSED), NOW)
    assert store.watermark("INBOX", 7) == 9
    assert store.watermark("INBOX", 8) == 0
    assert store.watermark_count("INBOX") == 1
    with pytest.raises(StoreError):
        # the same key twice is a bug in the caller, and nothing is half-written
        store.record_mail(_mail(9, MailOutcome.REFUSED), NOW)


def test_failed_notify_rolls_back_the_mail_row(store: Store) -> None:
    export_id = _submitted(store)
    store.mark_failed(export_id, "gave up", NOW)
    with pytest.raises(IllegalTransition):
        store.record_mail(_mail(4, MailOutcome.MATCHED, export_id), NOW, download_url="https://a")
    assert store.get_mail(MailKey("INBOX", 7, 4)) is None
    assert store.watermark("INBOX", 7) == 0


def test_adopting_a_job_id_for_an_orphan(store: Store) -> None:
    export = store.create_export(ExportRequest("42"), NOW)
    store.record_mail(
        _mail(2, MailOutcome.MATCHED, export.export_id),
        NOW,
        download_url="https://a/b",
        adopt_job_id="777",
    )
    adopted = store.get_export(export.export_id)
    assert adopted.job_id == "777"
    assert adopted.state is ExportState.NOTIFIED
    # the late answer of the POST agrees: recorded, state untouched
    store.mark_submitted(export.export_id, "777", "raw", NOW)
    assert store.get_export(export.export_id).state is ExportState.NOTIFIED


def test_unmatched_mail_is_kept_for_rematching(store: Store) -> None:
    store.record_mail(_mail(3, MailOutcome.UNMATCHED), NOW, summary=_summary("555"))
    [(record, summary)] = store.unmatched_mails(NOW - timedelta(days=1))
    assert summary == _summary("555")
    assert store.unmatched_mails(NOW + timedelta(days=1)) == []
    export_id = _submitted(store, "555")
    matched = MailRecord(record.key, record.message_id, MailOutcome.MATCHED, "late", NOW, export_id)
    store.rematch_mail(matched, NOW, download_url="https://a/b")
    assert store.get_export(export_id).state is ExportState.NOTIFIED
    assert store.unmatched_mails(NOW - timedelta(days=1)) == []


def test_duplicate_mail_is_acknowledged_with_its_export(store: Store) -> None:
    export_id = _submitted(store)
    store.record_mail(_mail(1, MailOutcome.MATCHED, export_id), NOW, download_url="https://a/b")
    store.record_mail(_mail(2, MailOutcome.DUPLICATE, export_id), NOW)
    assert store.mails_to_acknowledge() == []  # nothing before the archive is durable
    store.mark_downloading(export_id, NOW)
    store.mark_verified(export_id, "/p", ArchivedFile("p", 1, "00" * 32, None), NOW)
    store.mark_archived(export_id, NOW)
    assert [m.key.uid for m in store.mails_to_acknowledge()] == [1, 2]


def test_job_ids_are_unique(store: Store) -> None:
    _submitted(store, "1")
    other = store.create_export(ExportRequest("2"), NOW)
    with pytest.raises(StoreError):
        store.mark_submitted(other.export_id, "1", "raw", NOW)


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="naive"):
        store.create_export(ExportRequest("1"), datetime(2026, 1, 1))


def test_a_version_1_ledger_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in migration_statements(1):
        conn.execute(statement)
    conn.execute(
        "INSERT INTO exports (method, stat, state, created_at, updated_at, job_id)"
        " VALUES ('GetNewsletterContactDataSummaryAsync', '9', 'submitted', ?, ?, '55')",
        (NOW.isoformat(), NOW.isoformat()),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = Store(path)
    export = store.export_by_job_id("55")
    assert export is not None
    assert (export.state, export.resubmits, export.replaces) == (ExportState.SUBMITTED, 0, None)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_version_6_ledger_reads_its_exports_as_contact_data_json(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    conn = sqlite3.connect(path)
    for version in range(1, 7):
        for statement in migration_statements(version):
            conn.execute(statement)
    conn.execute(
        "INSERT INTO exports (method, stat, startdate, enddate, state, created_at, updated_at,"
        " job_id, archive_path, bytes, sha256, records, top_level, schedule) VALUES"
        " ('GetNewsletterContactDataSummaryAsync', '9', '20261101', '20261102', 'archived',"
        " ?, ?, '55', 'x/stat-9_job-55.json', 3, 'ab', 1, 'array', 'daily')",
        (NOW.isoformat(), NOW.isoformat()),
    )
    conn.execute("PRAGMA user_version = 6")
    conn.commit()
    conn.close()
    store = Store(path)
    export = store.export_by_job_id("55")
    assert export is not None and export.archived is not None
    assert export.request == ExportRequest("9", "20261101", "20261102")
    assert (export.request.options, export.request.format) == ("{}", "json")
    assert export.archived.format == "json" and export.origin is None
    assert store.exports_for(ExportRequest("9", "20261101", "20261102")) == [export]
    # the old row holds no slot: the same schedule's next export of the window gets one
    later = store.create_export(export.request, NOW, schedule="daily")
    assert later.schedule == "daily"


def test_options_and_format_are_kept_and_tell_requests_apart(store: Store) -> None:
    segment = make_request("GetSegmentSubscribersAsync", {"segment": [7], "status": "active"})
    as_csv = make_request("GetSegmentSubscribersAsync", {"segment": [7], "status": "active"}, "csv")
    first = store.create_export(segment, NOW, schedule="s", origin="send 1 (newsletter 2)")
    assert store.get_export(first.export_id).request == segment
    assert store.get_export(first.export_id).origin == "send 1 (newsletter 2)"
    assert store.exports_for(as_csv) == []
    assert [e.export_id for e in store.exports_for(segment)] == [first.export_id]


def test_resubmission_chain_and_checks(store: Store) -> None:
    first_id = _submitted(store, "1")
    first = store.get_export(first_id)
    store.mark_checked(first_id, "waiting", NOW)
    assert store.get_export(first_id).remote_status == "waiting"
    store.mark_failed(first_id, "Pinpointe reports the job failed", NOW)
    second = store.create_export(first.request, NOW, replaces=store.get_export(first_id))
    assert (second.replaces, second.resubmits) == (first_id, 1)
    assert store.successor(first_id) == second
    assert store.successor(second.export_id) is None
    # a second daemon deciding on the same failure is refused (one new job, not two)
    with pytest.raises(
        DuplicateSubmission, match=f"resubmitted already .as export {second.export_id}"
    ):
        store.create_export(first.request, NOW, replaces=store.get_export(first_id))
    assert store.successor(first_id) == second
    store.set_daemon_value("last_poll_at", NOW.isoformat())
    assert store.daemon_values() == {"last_poll_at": NOW.isoformat()}


def test_a_notification_never_overwrites_a_known_job_id(store: Store) -> None:
    export_id = _submitted(store, "1001")
    with pytest.raises(StoreError, match="names job 2002"):
        store.record_mail(
            _mail(8, MailOutcome.MATCHED, export_id),
            NOW,
            download_url="https://a/b",
            adopt_job_id="2002",
        )
    assert store.get_export(export_id).job_id == "1001"
    assert store.get_mail(MailKey("INBOX", 7, 8)) is None
    store.record_mail(  # naming the job it already has is just a match
        _mail(9, MailOutcome.MATCHED, export_id),
        NOW,
        download_url="https://a/b",
        adopt_job_id="1001",
    )
    assert store.get_export(export_id).state is ExportState.NOTIFIED


# --- digests and links that failed (issue 9) ------------------------------------------

L1 = "https://na01.mypinpointe.com/exports/spoof.json"
L2 = "https://na01.mypinpointe.com/exports/real.json?sig=x"


def _pair(export_id: int, outcome: MailOutcome, url: str | None, job: str | None = None) -> Pairing:
    return Pairing(export_id, job, outcome, "why", url)


def _archive(store: Store, export_id: int) -> None:
    store.mark_downloading(export_id, NOW)
    store.mark_verified(export_id, "/p", ArchivedFile(f"p{export_id}", 1, "00" * 32, None), NOW)
    store.mark_archived(export_id, NOW)


def test_a_digest_notifies_each_export_and_is_acknowledged_once_all_are_done(
    store: Store,
) -> None:
    first, second = _submitted(store, "1001"), _submitted(store, "1002")
    digest = _mail(1, MailOutcome.MATCHED)
    store.record_mail(
        digest,
        NOW,
        pairings=[
            _pair(first, MailOutcome.MATCHED, "https://x.example/1.json", "1001"),
            _pair(second, MailOutcome.MATCHED, "https://x.example/2.json", "1002"),
        ],
    )
    assert store.mail_exports(digest.key) == [first, second]
    assert store.get_export(first).download_url == "https://x.example/1.json"
    assert store.get_export(second).mail == digest.key
    assert store.get_mail(digest.key) == digest  # no single export_id
    _archive(store, first)
    assert store.mails_to_acknowledge() == []  # the second is still under way
    store.mark_downloading(second, NOW)
    store.mark_link_expired(second, "HTTP 404", NOW)
    assert [m.key for m in store.mails_to_acknowledge()] == [digest.key]
    store.mark_mail_acknowledged(digest.key, "keyword, moved", NOW)
    assert store.get_export(first).state is ExportState.ACKNOWLEDGED
    assert store.get_export(second).state is ExportState.LINK_EXPIRED
    assert store.mails_to_acknowledge() == []


def test_a_digest_is_recorded_whole_or_not_at_all(store: Store) -> None:
    first, second = _submitted(store, "1001"), _submitted(store, "1002")
    store.mark_failed(second, "Pinpointe reports the job as 'failed'", NOW)  # not a link
    with pytest.raises(IllegalTransition):
        store.record_mail(
            _mail(1, MailOutcome.MATCHED),
            NOW,
            pairings=[
                _pair(first, MailOutcome.MATCHED, "https://x.example/1.json"),
                _pair(second, MailOutcome.MATCHED, "https://x.example/2.json"),
            ],
        )
    assert store.get_export(first).state is ExportState.SUBMITTED
    assert store.get_mail(MailKey("INBOX", 7, 1)) is None
    assert store.watermark("INBOX", 7) == 0


def test_a_failed_link_gives_way_to_the_oldest_link_kept_from_another_mail(store: Store) -> None:
    export_id = _submitted(store)
    store.record_mail(_mail(1, MailOutcome.MATCHED, export_id), NOW, download_url=L1)
    store.record_mail(  # the real notification, read while the spoofed link was pending
        _mail(2, MailOutcome.DUPLICATE, export_id),
        NOW,
        pairings=[_pair(export_id, MailOutcome.DUPLICATE, L2)],
    )
    store.record_mail(  # a copy of the spoof keeps nothing new
        _mail(3, MailOutcome.DUPLICATE, export_id),
        NOW,
        pairings=[_pair(export_id, MailOutcome.DUPLICATE, L1)],
    )
    store.mark_downloading(export_id, NOW)
    store.mark_downloading(export_id, NOW)  # restarted after a crash: two attempts
    after = store.mark_link_expired(export_id, "the download link answered HTTP 404", NOW)
    assert (after.state, after.download_url, after.mail) == (
        ExportState.NOTIFIED,
        L2,
        MailKey("INBOX", 7, 2),
    )
    assert (after.failed_links, after.attempts) == ((L1,), 0)
    states = [(old, new) for _, old, new, _ in store.history(export_id)][-3:]
    assert states == [
        ("downloading", "downloading"),
        ("downloading", "link_expired"),
        ("link_expired", "notified"),
    ]
    store.mark_downloading(export_id, NOW)
    last = store.mark_failed(export_id, "truncated JSON", NOW, link_failed=True)
    assert (last.state, last.failed_links) == (ExportState.FAILED, (L1, L2))  # nothing left


def test_a_job_failure_keeps_no_link_and_tries_no_other(store: Store) -> None:
    export_id = _submitted(store)
    store.record_mail(_mail(1, MailOutcome.MATCHED, export_id), NOW, download_url=L1)
    store.record_mail(
        _mail(2, MailOutcome.DUPLICATE, export_id),
        NOW,
        pairings=[_pair(export_id, MailOutcome.DUPLICATE, L2)],
    )
    store.mark_downloading(export_id, NOW)
    failed = store.mark_failed(export_id, "archive directory not writable", NOW)
    assert (failed.state, failed.failed_links) == (ExportState.FAILED, ())


def test_a_later_mail_notifies_a_link_expired_export_again_with_a_new_link(
    store: Store,
) -> None:
    export_id = _submitted(store)
    store.record_mail(_mail(1, MailOutcome.MATCHED, export_id), NOW, download_url=L1)
    store.mark_downloading(export_id, NOW)
    store.mark_link_expired(export_id, "HTTP 404", NOW)
    with pytest.raises(StoreError, match="already failed"):
        store.record_mail(_mail(2, MailOutcome.MATCHED, export_id), NOW, download_url=L1)
    store.record_mail(_mail(3, MailOutcome.MATCHED, export_id), NOW, download_url=L2)
    export = store.get_export(export_id)
    assert (export.state, export.download_url, export.attempts) == (ExportState.NOTIFIED, L2, 0)


def test_a_resubmitted_export_is_never_notified_again(store: Store) -> None:
    export_id = _submitted(store)
    store.record_mail(_mail(1, MailOutcome.MATCHED, export_id), NOW, download_url=L1)
    store.mark_downloading(export_id, NOW)
    store.mark_link_expired(export_id, "HTTP 404", NOW)
    store.create_export(ExportRequest("42"), NOW, replaces=store.get_export(export_id))
    with pytest.raises(StoreError, match="resubmitted as export 2"):
        store.record_mail(_mail(2, MailOutcome.MATCHED, export_id), NOW, download_url=L2)
    store.record_mail(  # a kept link does not revive it either
        _mail(3, MailOutcome.DUPLICATE, export_id),
        NOW,
        pairings=[_pair(export_id, MailOutcome.DUPLICATE, L2)],
    )
    assert store.get_export(export_id).state is ExportState.LINK_EXPIRED


def test_a_link_kept_after_the_failure_is_tried_at_once(store: Store) -> None:
    # the download failed between the mail's match (export notified) and its record
    export_id = _submitted(store)
    store.record_mail(_mail(1, MailOutcome.MATCHED, export_id), NOW, download_url=L1)
    store.mark_downloading(export_id, NOW)
    store.mark_link_expired(export_id, "HTTP 410", NOW)
    store.record_mail(
        _mail(2, MailOutcome.DUPLICATE, export_id),
        NOW,
        pairings=[_pair(export_id, MailOutcome.DUPLICATE, L2)],
    )
    assert store.get_export(export_id).download_url == L2


def test_an_export_notified_again_is_not_resubmitted(store: Store) -> None:
    export_id = _submitted(store)
    store.record_mail(_mail(1, MailOutcome.MATCHED, export_id), NOW, download_url=L1)
    stale = store.get_export(export_id)
    with pytest.raises(StoreError, match="not resubmitted"):
        store.create_export(stale.request, NOW, replaces=stale)


def test_a_version_3_ledger_keeps_its_mails_and_expired_links(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path)
    for version in (1, 2, 3):
        for statement in migration_statements(version):
            conn.execute(statement)
    when = NOW.isoformat()
    conn.executemany(
        "INSERT INTO exports (method, stat, state, created_at, updated_at, job_id,"
        " download_url, mail_mailbox, mail_uidvalidity, mail_uid)"
        " VALUES ('GetNewsletterContactDataSummaryAsync', '9', ?, ?, ?, ?, ?, 'INBOX', 7, ?)",
        [
            ("link_expired", when, when, "55", L1, 1),
            ("archived", when, when, "66", L2, 2),
        ],
    )
    conn.executemany(
        "INSERT INTO mails (mailbox, uidvalidity, uid, outcome, reason, export_id, seen_at)"
        " VALUES ('INBOX', 7, ?, ?, 'why', ?, ?)",
        [(1, "matched", 1, when), (2, "matched", 2, when), (3, "duplicate", 2, when)],
    )
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    store = Store(path)
    expired = store.export_by_job_id("55")
    assert expired is not None and expired.failed_links == (L1,)
    assert store.mail_exports(MailKey("INBOX", 7, 3)) == [2]
    assert [m.key.uid for m in store.mails_to_acknowledge()] == [2, 3]
    rows = (
        sqlite3.connect(path)
        .execute("SELECT uid, download_url FROM mail_exports ORDER BY uid")
        .fetchall()
    )
    assert rows == [(1, L1), (2, L2), (3, None)]  # a duplicate's link was never stored


def test_a_summary_remembers_whether_its_sender_was_authenticated(store: Store) -> None:
    link = Link("https://na01.mypinpointe.com/x.json", "Download", "href")
    summary = MailSummary("<m@x>", "a@example.com", "ready", ("555",), (link,), (), True)
    assert summary_from_json(summary_to_json(summary)) == summary
    old = json.loads(summary_to_json(summary))
    del old["authenticated"]  # written before issue 9: never authenticated
    assert summary_from_json(json.dumps(old)).sender_authenticated is False


def test_the_manifest_offset_is_recorded_and_read_back(store: Store) -> None:
    export_id = _submitted(store)
    assert store.get_export(export_id).manifest_offset is None
    store.record_manifest_offset(export_id, 4096)
    assert store.get_export(export_id).manifest_offset == 4096


def test_a_version_4_ledger_marks_verified_exports_as_unknown_offset(tmp_path: Path) -> None:
    # a verified export may have its manifest line already (a crash before "archived"):
    # -1 makes the archive look for it the old way, once; other exports have none yet
    path = tmp_path / "v4.db"
    conn = sqlite3.connect(path)
    for version in (1, 2, 3, 4):
        for statement in migration_statements(version):
            conn.execute(statement)
    when = NOW.isoformat()
    conn.executemany(
        "INSERT INTO exports (method, stat, state, created_at, updated_at, job_id)"
        " VALUES ('GetNewsletterContactDataSummaryAsync', '9', ?, ?, ?, ?)",
        [("verified", when, when, "55"), ("archived", when, when, "66")],
    )
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    store = Store(path)
    verified, archived = store.export_by_job_id("55"), store.export_by_job_id("66")
    assert verified is not None and verified.manifest_offset == MANIFEST_OFFSET_UNKNOWN
    assert archived is not None and archived.manifest_offset is None


def test_a_batch_commits_its_records_at_once_and_a_refused_one_alone_is_undone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    other = sqlite3.connect(path)  # another process's view: only committed rows
    with store.batch():
        store.record_mail(_mail(1, MailOutcome.UNMATCHED), NOW)
        with pytest.raises(StoreError):  # a match without a link: refused, undone alone
            store.record_mail(_mail(2, MailOutcome.MATCHED), NOW)
        store.record_mail(_mail(3, MailOutcome.UNMATCHED), NOW)
        assert other.execute("SELECT COUNT(*) FROM mails").fetchone()[0] == 0
        assert store.get_mail(MailKey("INBOX", 7, 3)) is not None  # its own writes: seen
    assert sorted(r[0] for r in other.execute("SELECT uid FROM mails")) == [1, 3]
    assert store.watermark("INBOX", 7) == 3
    other.close()


def test_a_batch_that_fails_keeps_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")

    def interrupted() -> None:
        with store.batch():
            store.record_mail(_mail(1, MailOutcome.UNMATCHED), NOW)
            raise RuntimeError("the process is ending")

    with pytest.raises(RuntimeError):
        interrupted()
    assert store.get_mail(MailKey("INBOX", 7, 1)) is None
    assert store.watermark("INBOX", 7) == 0
    store.record_mail(_mail(1, MailOutcome.UNMATCHED), NOW)  # and the ledger still works
    assert store.watermark("INBOX", 7) == 1


def test_exports_changed_since_returns_only_what_an_event_touched(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    first = store.create_export(ExportRequest("1"), NOW)
    second = store.create_export(ExportRequest("2"), NOW)
    mark = store.last_event_id()
    assert store.exports_changed_since(mark) == (mark, [])
    store.mark_submitted(second.export_id, "500000002", "{}", NOW)
    third = store.create_export(ExportRequest("3"), NOW)
    last, changed = store.exports_changed_since(mark)
    assert last == store.last_event_id() > mark
    assert [(e.export_id, e.job_id) for e in changed] == [
        (second.export_id, "500000002"),
        (third.export_id, None),
    ]
    assert first.export_id not in {e.export_id for e in changed}


def test_a_schedule_decision_on_an_outdated_view_is_refused(store: Store) -> None:
    """Another daemon inserted the window after this one looked: its insert is refused."""
    request = ExportRequest("42", "20261001", "20261002")
    store.create_export(request, NOW, schedule="daily", seen=0)  # the other daemon
    with pytest.raises(DuplicateSubmission, match="schedule daily already submitted"):
        store.create_export(request, NOW, schedule="daily", seen=0)  # decided on 0 too
    again = store.create_export(request, NOW, schedule="daily", seen=1)  # a decided retry
    assert again.schedule == "daily"
    assert len(store.exports_for(request)) == 2


def _notified(store: Store, uid: int) -> int:
    export_id = _submitted(store, job_id=str(1000 + uid))
    store.record_mail(
        _mail(uid, MailOutcome.MATCHED, export_id), NOW, download_url=f"https://x.example/{uid}"
    )
    return export_id


def test_claims_take_the_oldest_waiting_export_once_under_a_lease(store: Store) -> None:
    first, second = _notified(store, 1), _notified(store, 2)
    lease = timedelta(seconds=30)
    before = utc_now()
    claimed = store.claim_download("daemon-a", before, lease)
    assert claimed is not None
    assert (claimed.export_id, claimed.state, claimed.attempts) == (
        first,
        ExportState.DOWNLOADING,
        1,
    )
    owner, until = store.lease(first)
    assert owner == "daemon-a" and until is not None
    # on the database's clock on PostgreSQL (the machines' clocks may differ), *now* on SQLite
    assert before + lease <= until <= utc_now() + lease
    other = store.claim_download("daemon-b", utc_now(), lease)
    assert other is not None and other.export_id == second
    assert store.claim_download("daemon-b", utc_now(), lease) is None  # both are in flight
    assert store.history(first)[-1][3] == "claimed by daemon-a"


def test_a_lease_not_renewed_is_taken_over_and_a_renewed_one_is_not(store: Store) -> None:
    export_id = _notified(store, 1)
    lease = timedelta(seconds=0.6)
    store.claim_download("daemon-a", utc_now(), lease)
    time.sleep(0.4)
    assert store.renew_leases("daemon-a", utc_now(), lease) == 1  # the heartbeat
    time.sleep(0.4)  # past the first lease, inside the renewed one
    assert store.claim_download("daemon-b", utc_now(), lease) is None
    time.sleep(0.4)  # daemon-a stopped renewing
    dead = utc_now()
    taken = store.claim_download("daemon-b", dead, lease)
    assert taken is not None and taken.export_id == export_id
    assert taken.attempts == 2
    assert store.lease(export_id)[0] == "daemon-b"
    reason = store.history(export_id)[-1][3] or ""
    assert reason.startswith("taken over by daemon-b from daemon-a (lease until ")
    assert store.renew_leases("daemon-a", utc_now(), lease) == 0  # no longer daemon-a's


def test_a_daemon_that_lost_its_lease_cannot_write_over_the_new_owner(store: Store) -> None:
    export_id = _notified(store, 1)
    store.claim_download("daemon-a", utc_now(), timedelta(seconds=0.2))
    time.sleep(0.3)
    assert store.claim_download("daemon-b", utc_now(), timedelta(seconds=30)) is not None
    for late in (
        lambda: store.mark_download_retry(export_id, "timeout", NOW, owner="daemon-a"),
        lambda: store.mark_verified(export_id, "p", _archived(), NOW, owner="daemon-a"),
        lambda: store.mark_failed(export_id, "no", NOW, owner="daemon-a", link_failed=True),
        lambda: store.record_manifest_offset(export_id, 0, owner="daemon-a"),
        lambda: store.hold(export_id, "daemon-a", utc_now(), timedelta(seconds=30)),
    ):
        with pytest.raises(LeaseLost, match=r"daemon-a lost its lease \(now held by daemon-b"):
            late()
    assert store.get_export(export_id).state is ExportState.DOWNLOADING
    store.mark_verified(export_id, "p", _archived(), NOW, owner="daemon-b")
    store.mark_archived(export_id, NOW, owner="daemon-b")
    assert store.lease(export_id) == (None, None)  # cleared on leaving verified
    with pytest.raises(LeaseLost, match="no longer in flight"):
        store.mark_archived(export_id, NOW, owner="daemon-a")


def test_a_verified_export_taken_over_stays_verified(store: Store) -> None:
    export_id = _notified(store, 1)
    store.claim_download("daemon-a", utc_now(), timedelta(seconds=0.2))
    store.mark_verified(export_id, "p", _archived(), NOW, owner="daemon-a")
    time.sleep(0.3)
    taken = store.claim_download("daemon-b", utc_now(), timedelta(seconds=30))
    assert taken is not None and taken.state is ExportState.VERIFIED
    assert taken.attempts == 1  # finishing a checked payload is not another download
    assert store.lease(export_id)[0] == "daemon-b"


def test_expired_leases_and_exports_in_flight_without_one_are_claimed_at_once(
    store: Store,
) -> None:
    old = _notified(store, 1)
    store.mark_downloading(old, NOW)  # left by a daemon that did not claim
    held = _notified(store, 2)
    store.claim_download("daemon-a", utc_now(), timedelta(seconds=30))  # old
    assert store.claim_download("daemon-a", utc_now(), timedelta(seconds=30)) is not None
    assert store.claim_download("daemon-b", utc_now(), timedelta(seconds=30)) is None
    assert store.expire_leases() == 2  # a restart under SQLite's run lock
    again = store.claim_download("daemon-b", utc_now(), timedelta(seconds=30))
    assert again is not None and again.export_id == old
    assert store.claim_download("daemon-b", utc_now(), timedelta(seconds=30)).export_id == held  # type: ignore[union-attr]


def _archived() -> ArchivedFile:
    return ArchivedFile("p", 1, "00" * 32, None)


def _vm_steps(store: Store, action: Callable[[], object]) -> int:
    """The SQLite VM steps *action* costs on *store*."""
    conn = store._conn
    assert isinstance(conn, sqlite3.Connection)
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 1)
    try:
        action()
    finally:
        conn.set_progress_handler(None, 1)
    return steps[0]


def _steps_to_acknowledge_one_of(archived: int, tmp_path: Path) -> int:
    """SQLite VM steps to acknowledge one mail while *archived* exports wait for theirs."""
    store = Store(tmp_path / f"ack-{archived}" / "state.db")
    try:
        for uid in range(1, archived + 1):
            _archive(store, _notified(store, uid))
        return _vm_steps(
            store,
            lambda: store.mark_mail_acknowledged(MailKey("INBOX", 7, archived), "keyword", NOW),
        )
    finally:
        store.close()


def test_acknowledging_a_mail_costs_the_same_however_many_exports_wait(tmp_path: Path) -> None:
    # a backlog acknowledges n mails: a cost that grew with the archived exports made it
    # O(n^2) (the lookup started from every archived export; bench/README.md, backlog)
    few, many = (
        _steps_to_acknowledge_one_of(10, tmp_path),
        _steps_to_acknowledge_one_of(200, tmp_path),
    )
    assert many < few * 1.5, (few, many)


def test_a_claim_takes_the_oldest_of_the_notified_and_the_lapsed_exports(store: Store) -> None:
    """Exports waiting as ``notified`` and in flight without a lease are claimed in one
    order, oldest first, whichever kind each is."""
    first = _notified(store, 1)
    lapsed = _notified(store, 2)
    store.mark_downloading(lapsed, NOW)  # left by a daemon that did not claim: no lease
    last = _notified(store, 3)
    lease = timedelta(seconds=30)
    taken = [store.claim_download("daemon-a", utc_now(), lease) for _ in range(4)]
    assert [e.export_id if e else None for e in taken] == [first, lapsed, last, None]
    assert (store.history(lapsed)[-1][3] or "").startswith("taken over by daemon-a")


def _steps_to_claim_one_of(waiting: int, tmp_path: Path) -> int:
    """SQLite VM steps of one claim while *waiting* exports wait for their download."""
    store = Store(tmp_path / f"claim-{waiting}" / "state.db")
    try:
        for uid in range(1, waiting + 1):
            _notified(store, uid)
        claimed: list[Export | None] = []
        lease = timedelta(seconds=30)
        steps = _vm_steps(
            store, lambda: claimed.append(store.claim_download("a", utc_now(), lease, skip={1}))
        )
        assert [e.export_id if e else None for e in claimed] == [2]
        return steps
    finally:
        store.close()


def test_a_claim_costs_the_same_however_many_exports_wait(tmp_path: Path) -> None:
    # a backlog claims n exports: one search with OR collected and sorted every waiting
    # export, O(n) per claim and O(n^2) for the backlog (0.8 ms a claim with 6,000 waiting)
    few, many = _steps_to_claim_one_of(10, tmp_path), _steps_to_claim_one_of(400, tmp_path)
    assert many < few * 1.5, (few, many)


def test_archive_paths_lists_the_archived_exports_of_many_job_ids_by_the_chunk(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "PATHS_PER_QUERY", 2)  # three queries for five IDs
    archived = [_notified(store, uid) for uid in (1, 2, 3)]
    for export_id in archived:
        _archive(store, export_id)
    waiting = _notified(store, 4)
    jobs = [store.get_export(i).job_id or "" for i in (*archived, waiting)] + ["unknown"]
    assert store.archive_paths(jobs) == {
        jobs[0]: f"p{archived[0]}",
        jobs[1]: f"p{archived[1]}",
        jobs[2]: f"p{archived[2]}",
    }
    assert store.archive_paths([]) == {}
