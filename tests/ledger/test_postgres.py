"""The PostgreSQL ledger's own rules: opening, the schema, and two daemons on one database.

Every rule the ledger shares with SQLite is tested on both engines in ``test_store.py``;
these are what only a shared PostgreSQL has: several processes at once.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from inbox_poller.errors import DuplicateSubmission, IllegalTransition, StoreError
from inbox_poller.ledger.postgres import open_postgres, to_pyformat
from inbox_poller.ledger.schema import SCHEMA_VERSION
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


def test_placeholders_become_psycopgs_and_a_percent_stays_literal() -> None:
    assert to_pyformat("SELECT * FROM t WHERE a = ? AND b IN (?, ?)") == (
        "SELECT * FROM t WHERE a = %s AND b IN (%s, %s)"
    )
    assert to_pyformat("SELECT '5%' WHERE a = ?") == "SELECT '5%%' WHERE a = %s"


def test_an_unreachable_server_is_a_clear_error_naming_the_url() -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://inbox@127.0.0.1:{port}/ledger?connect_timeout=2"
    with pytest.raises(StoreError) as caught:
        open_postgres(url, "hunter2")
    assert str(caught.value).startswith(f"cannot connect to the ledger {url}: ")
    assert "Connection refused" in str(caught.value)


pytestmark_pg = pytest.mark.postgres
"""The tests below need the session's PostgreSQL (the two above do not)."""


@pytestmark_pg
def test_a_wrong_password_is_refused_without_showing_it(pg_database: PgDatabase) -> None:
    with pytest.raises(StoreError) as caught:
        open_postgres(pg_database.url, "hunter2-wrong")
    message = str(caught.value)
    assert message.startswith(f"cannot connect to the ledger {pg_database.url}: ")
    assert "password authentication failed" in message
    assert "hunter2" not in message


@pytestmark_pg
def test_a_new_database_gets_the_current_schema_once_even_from_concurrent_starts(
    pg_database: PgDatabase,
) -> None:
    opened: list[Store] = []
    failures: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(Store(postgres_session(pg_database)))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(opened) == 3
    with pg_database.connect() as conn:
        rows = conn.execute("SELECT version FROM schema_version").fetchall()
    assert rows == [(SCHEMA_VERSION,)]
    for store in opened:
        store.close()


@pytestmark_pg
def test_read_only_needs_the_tables_and_refuses_a_newer_schema(pg_database: PgDatabase) -> None:
    with pytest.raises(StoreError, match="has no tables yet: start the daemon"):
        postgres_session(pg_database, read_only=True)
    Store(postgres_session(pg_database)).close()
    reader = Store(postgres_session(pg_database, read_only=True), read_only=True)
    assert reader.list_exports() == []
    with pytest.raises(StoreError, match="read-only transaction"):
        reader.create_export(ExportRequest("1"), NOW)
    reader.close()
    with pg_database.connect() as conn:
        conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this inbox-poller understands"):
        postgres_session(pg_database)
    with pytest.raises(StoreError, match="newer than this inbox-poller understands"):
        postgres_session(pg_database, read_only=True)


@pytest.fixture
def two_daemons(pg_database: PgDatabase) -> Iterator[tuple[Store, Store]]:
    """Two ledgers on one database, as two daemons on two machines hold them."""
    first = Store(postgres_session(pg_database))
    second = Store(postgres_session(pg_database))
    yield first, second
    first.close()
    second.close()


@pytestmark_pg
def test_two_daemons_firing_one_schedule_submit_each_window_once(
    two_daemons: tuple[Store, Store],
) -> None:
    days = [NOW + timedelta(days=n) for n in range(61)]
    windows = [
        ExportRequest("42", start.strftime("%Y%m%d"), end.strftime("%Y%m%d"))
        for start, end in itertools.pairwise(days)
    ]
    created: dict[str, list[int]] = {}
    duplicates: list[str] = []
    skipped: list[str] = []
    lock = threading.Lock()

    def fire(store: Store, name: str) -> None:
        for request in windows:
            # what the submitter does: decide on what the ledger holds (a pending export
            # of the window: not again), then insert in another transaction
            seen = sum(1 for e in store.exports_for(request) if e.schedule == "daily")
            if seen:
                with lock:
                    skipped.append(name)
                continue
            try:
                export = store.create_export(request, NOW, schedule="daily", seen=seen)
            except DuplicateSubmission:
                with lock:
                    duplicates.append(name)
            else:
                with lock:
                    created.setdefault(request.startdate or "", []).append(export.export_id)

    threads = [
        threading.Thread(target=fire, args=(store, name))
        for store, name in zip(two_daemons, ("a", "b"), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(created) == sorted(w.startdate or "" for w in windows)
    assert all(len(ids) == 1 for ids in created.values())
    assert len(duplicates) + len(skipped) == len(windows)
    assert len(two_daemons[0].list_exports()) == len(windows)


def _blocked_on_a_lock(pg_database: PgDatabase, timeout_s: float = 10.0) -> Callable[[], bool]:
    def blocked() -> bool:
        deadline = time.monotonic() + timeout_s
        with pg_database.connect() as conn:
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = %s"
                    " AND application_name = 'inbox-poller' AND wait_event_type = 'Lock'",
                    (pg_database.name,),
                ).fetchone()
                if row is not None and row[0]:
                    return True
                time.sleep(0.01)
        return False

    return blocked


@pytestmark_pg
def test_a_transition_waits_for_the_other_daemon_and_checks_its_result(
    two_daemons: tuple[Store, Store], pg_database: PgDatabase
) -> None:
    """Two daemons archiving one export: the second waits on the row, then is refused.

    Without the row lock, the second read ``verified`` before the first committed and
    recorded a second move to ``archived``.
    """
    first, second = two_daemons
    export = first.create_export(ExportRequest("1"), NOW)
    first.mark_submitted(export.export_id, "77", "raw", NOW)
    first.record_mail(
        MailRecord(MailKey("INBOX", 1, 1), "<m@x>", MailOutcome.MATCHED, "", NOW, export.export_id),
        NOW,
        download_url="https://x.example/f",
    )
    first.mark_downloading(export.export_id, NOW)
    first.mark_verified(export.export_id, "/p", ArchivedFile("a", 1, "00" * 32, None), NOW)
    outcome: list[BaseException | None] = []

    def archive_too() -> None:
        try:
            second.mark_archived(export.export_id, NOW)
        except BaseException as exc:  # asserted below
            outcome.append(exc)
        else:
            outcome.append(None)

    other = threading.Thread(target=archive_too)
    with first._transaction() as conn:
        first._transition(conn, export.export_id, ExportState.ARCHIVED, NOW, None)
        other.start()
        assert _blocked_on_a_lock(pg_database)()
    other.join(timeout=10)
    assert len(outcome) == 1
    assert isinstance(outcome[0], IllegalTransition)
    states = [to for _, _, to, _ in first.history(export.export_id)]
    assert states.count("archived") == 1


@pytestmark_pg
def test_daemons_claiming_at_once_each_get_other_exports_and_none_twice(
    two_daemons: tuple[Store, Store], pg_database: PgDatabase
) -> None:
    first, _ = two_daemons
    third = Store(postgres_session(pg_database))
    daemons = (*two_daemons, third)
    ids = []
    for uid in range(1, 31):
        export = first.create_export(ExportRequest(str(uid)), NOW)
        first.mark_submitted(export.export_id, str(5000 + uid), "raw", NOW)
        first.record_mail(
            MailRecord(
                MailKey("INBOX", 1, uid),
                f"<{uid}@x>",
                MailOutcome.MATCHED,
                "",
                NOW,
                export.export_id,
            ),
            NOW,
            download_url=f"https://x.example/{uid}",
        )
        ids.append(export.export_id)
    claims: dict[str, list[int]] = {}
    lease = timedelta(seconds=30)

    def work(store: Store, name: str) -> None:
        while (export := store.claim_download(name, NOW, lease)) is not None:
            claims.setdefault(name, []).append(export.export_id)

    threads = [
        threading.Thread(target=work, args=(store, f"daemon-{n}"))
        for n, store in enumerate(daemons)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    third.close()
    every = sorted(i for claimed in claims.values() for i in claimed)
    assert every == ids  # each once
    for name, claimed in claims.items():
        assert all(first.lease(i)[0] == name for i in claimed)


@pytestmark_pg
def test_an_event_committed_late_by_another_daemon_is_not_skipped(
    two_daemons: tuple[Store, Store], pg_database: PgDatabase
) -> None:
    writer, reader = two_daemons
    slow_one = writer.create_export(ExportRequest("1"), NOW).export_id
    fast_one = writer.create_export(ExportRequest("2"), NOW).export_id
    mark = reader.last_event_id()
    with pg_database.connect() as slow:  # a daemon whose transaction commits late
        slow.execute("BEGIN")
        slow.execute(
            "INSERT INTO events (at, export_id, from_state, to_state, reason)"
            " VALUES (%s, %s, 'submitting', 'submitting', 'slow')",
            (NOW.isoformat(), slow_one),
        )  # takes the lower event ID ...
        writer.mark_checked(fast_one, "running", NOW)  # ... this one a higher, seen first
        mark, changed = reader.exports_changed_since(mark)
        assert slow_one not in [e.export_id for e in changed]  # not committed yet
        slow.execute("COMMIT")
    mark, changed = reader.exports_changed_since(mark)
    assert slow_one in [e.export_id for e in changed]
    _, changed = reader.exports_changed_since(mark)
    assert changed == []  # and nothing twice once settled
