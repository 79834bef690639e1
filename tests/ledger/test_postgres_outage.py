"""The PostgreSQL ledger across its server's restarts and stalls (``ledger/postgres.py``).

A restart drops every connection: between transactions the Store reconnects by itself;
a transaction the loss cuts is ``LedgerUnavailable`` (retryable), rolled back by the
server; a wait over the session's timeouts is ``LedgerUnavailable`` too, never a hang.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from inbox_poller.errors import LedgerUnavailable, StoreError
from inbox_poller.ledger import postgres as pg
from inbox_poller.ledger.store import Store
from inbox_poller.models import ExportRequest, ExportState
from inbox_poller.sandbox.postgres.server import PostgresServer
from tests.plugins.postgres import PgDatabase, postgres_session

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(pg_database: PgDatabase) -> Iterator[Store]:
    ledger = Store(postgres_session(pg_database))
    yield ledger
    ledger.close()


def test_the_store_reconnects_between_transactions_after_a_restart(
    store: Store, postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    first = store.create_export(ExportRequest("1"), NOW)
    postgres.restart()
    caplog.set_level(logging.INFO, logger="inbox_poller.ledger")
    assert store.get_export(first.export_id).state is ExportState.SUBMITTING  # a read
    postgres.restart()
    second = store.create_export(ExportRequest("2"), NOW)  # a write transaction
    assert [e.export_id for e in store.list_exports()] == [first.export_id, second.export_id]
    reconnects = [r for r in caplog.records if "reconnected" in r.getMessage()]
    assert len(reconnects) == 2
    assert reconnects[0].getMessage() == f"ledger: reconnected to {store.where}"


def test_a_transaction_cut_by_a_restart_is_unavailable_and_left_undone(
    store: Store, postgres: PostgresServer
) -> None:
    kept = store.create_export(ExportRequest("1"), NOW)

    def cut() -> None:
        with store.batch():
            store.create_export(ExportRequest("2"), NOW)  # a savepoint in the transaction
            postgres.restart()
            store.create_export(ExportRequest("3"), NOW)

    with pytest.raises(LedgerUnavailable, match="rolled the transaction back"):
        cut()
    assert isinstance(LedgerUnavailable("x"), StoreError)
    assert LedgerUnavailable.retryable
    assert [e.export_id for e in store.list_exports()] == [kept.export_id]
    again = store.create_export(ExportRequest("2"), NOW)
    assert again.export_id > kept.export_id


def test_while_the_server_is_down_each_call_fails_fast_and_then_recovers(
    store: Store, postgres: PostgresServer
) -> None:
    export = store.create_export(ExportRequest("1"), NOW)
    postgres.stop()
    try:
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable, match="cannot connect to the ledger"):
            store.list_exports()
        with pytest.raises(LedgerUnavailable, match="cannot connect to the ledger"):
            store.mark_submitted(export.export_id, "77", "raw", NOW)
        assert time.monotonic() - started < 5  # refused at once, not a hang
    finally:
        postgres.start()
    store.mark_submitted(export.export_id, "77", "raw", NOW)
    assert store.get_export(export.export_id).state is ExportState.SUBMITTED


def test_the_session_carries_its_timeouts_and_keepalives(store: Store) -> None:
    rows = store._query(
        "SELECT name, setting FROM pg_settings WHERE name IN ('statement_timeout',"
        " 'lock_timeout', 'tcp_keepalives_idle', 'tcp_keepalives_interval',"
        " 'tcp_keepalives_count')"
    )
    assert {row["name"]: int(row["setting"]) for row in rows} == {
        "statement_timeout": pg.STATEMENT_TIMEOUT_MS,
        "lock_timeout": pg.LOCK_TIMEOUT_MS,
        # the server's end: a vanished daemon's sessions (and locks) end in about 25 s
        "tcp_keepalives_idle": 10,
        "tcp_keepalives_interval": 5,
        "tcp_keepalives_count": 3,
    }
    conn = store._conn._conn  # type: ignore[attr-defined]
    assert conn.info.get_parameters()["keepalives_idle"] == "10"
    assert conn.info.get_parameters()["tcp_user_timeout"] == "30000"


def test_a_row_held_too_long_by_another_daemon_is_unavailable_not_a_hang(
    pg_database: PgDatabase, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setattr(pg, "LOCK_TIMEOUT_MS", 300)
    store = Store(postgres_session(pg_database))  # made after the patch: not the fixture
    request.addfinalizer(store.close)
    export = store.create_export(ExportRequest("1"), NOW)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with pg_database.connect() as conn, conn.transaction():
            conn.execute(
                "SELECT * FROM exports WHERE export_id = %s FOR UPDATE", (export.export_id,)
            )
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable, match="lock timeout"):
            store.mark_submitted(export.export_id, "77", "raw", NOW)
        assert time.monotonic() - started < 3
    finally:
        release.set()
        holder.join(10)
    store.mark_submitted(export.export_id, "77", "raw", NOW)  # the same session goes on
    assert store.get_export(export.export_id).state is ExportState.SUBMITTED
