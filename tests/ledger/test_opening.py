"""Opening the configured ledger, and the one-daemon lock, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from inbox_poller.errors import InboxPollerError, StoreError
from inbox_poller.ledger.opening import daemon_running, open_ledger, run_lock, running_daemons
from inbox_poller.models import ExportRequest
from tests.ledger.test_store import NOW
from tests.plugins.postgres import PgDatabase


def _password(database: PgDatabase) -> str:
    return database.password_file.read_text(encoding="utf-8").strip()


def test_without_a_url_the_ledger_is_the_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with open_ledger(path, None, None) as store:
        assert store.path == path
        assert store.where == str(path)
    with run_lock(path, None, None):
        assert daemon_running(path, None, None)
        with pytest.raises(InboxPollerError, match="already running"), run_lock(path, None, None):
            pass
    assert not daemon_running(path, None, None)


@pytest.mark.postgres
def test_with_a_url_the_ledger_is_postgresql_and_the_sqlite_file_is_never_made(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    path = tmp_path / "state.db"
    asked: list[str] = []

    def password() -> str:
        asked.append("yes")
        return _password(pg_database)

    with open_ledger(path, pg_database.url, password) as store:
        assert store.path is None
        assert store.where == pg_database.url
        export_id = store.create_export(ExportRequest("7"), NOW).export_id
    with open_ledger(path, pg_database.url, password, read_only=True) as reader:
        assert [e.export_id for e in reader.list_exports()] == [export_id]
    assert asked == ["yes", "yes"]
    assert not path.exists()


@pytest.mark.postgres
def test_any_number_of_daemons_share_a_postgresql_ledger_and_status_sees_each(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    path = tmp_path / "state.db"
    url = pg_database.url

    def password() -> str:
        return _password(pg_database)

    assert not daemon_running(path, url, password)
    with run_lock(path, url, password, "host-a:1:aa"):
        assert daemon_running(path, url, password)
        with run_lock(path, url, password, "host-b:2:bb"):
            assert running_daemons(url, password) == ["host-a:1:aa", "host-b:2:bb"]
        assert running_daemons(url, password) == ["host-a:1:aa"]
        # a command that needs the ledger to itself is refused while one runs
        with (
            pytest.raises(InboxPollerError, match=re.escape(f"already running on {url}")),
            run_lock(path, url, password, "migrate", exclusive=True),
        ):
            pass
    with (
        run_lock(path, url, password, "migrate", exclusive=True),
        pytest.raises(InboxPollerError, match="needs the ledger to itself"),
        run_lock(path, url, password, "host-c:3:cc"),
    ):
        pass
    # released with its connection (as when the process dies)
    assert not daemon_running(path, url, password)
    assert not path.with_name("state.db.lock").exists()


def test_a_postgresql_ledger_without_psycopg_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "inbox_poller.ledger.postgres", None)
    monkeypatch.delattr("inbox_poller.ledger.postgres", raising=False)
    url = "postgresql://inbox@127.0.0.1/ledger"
    for attempt in (
        lambda: open_ledger(tmp_path / "s.db", url, None),
        lambda: daemon_running(tmp_path / "s.db", url, None),
    ):
        with pytest.raises(
            StoreError, match=r"needs psycopg .*pip install 'inbox-poller\[postgres\]'"
        ):
            attempt()
