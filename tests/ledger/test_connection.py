"""Opening the ledger read-only: what ``exports``, ``status``, ``wait`` and ``check`` do."""

from __future__ import annotations

import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from inbox_poller.errors import LedgerMissing, StoreError
from inbox_poller.ledger.schema import SCHEMA_VERSION
from inbox_poller.ledger.store import Store
from inbox_poller.models import ExportRequest

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_a_missing_ledger_is_reported_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.db"
    with pytest.raises(LedgerMissing) as caught:
        Store(path, read_only=True)
    assert str(caught.value) == f"no ledger at {path} (has the daemon run?)"
    assert not path.parent.exists()


def test_a_reader_sees_the_writers_commits_and_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    writer = Store(path)
    reader = Store(path, read_only=True)
    assert reader.list_exports() == []
    export = writer.create_export(ExportRequest("42", "20261101", "20261102"), NOW)
    assert [e.export_id for e in reader.list_exports()] == [export.export_id]
    with pytest.raises(StoreError, match="readonly"):
        reader.create_export(ExportRequest("43", None, None), NOW)
    reader.close()
    writer.close()


def test_a_reader_after_the_daemon_stopped_creates_nothing_beside_the_ledger(
    tmp_path: Path,
) -> None:
    # run as root on the service's ledger, a -wal or -shm file of root's would lock the
    # service's own user out of it at its next start
    path = tmp_path / "state.db"
    Store(path).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]
    tmp_path.chmod(0o500)  # and it needs no write access to the directory
    try:
        with Store(path, read_only=True) as reader:
            assert reader.counts_by_state() == {}
    finally:
        tmp_path.chmod(0o700)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]


def test_a_reader_beside_a_running_writer_keeps_its_files_private(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    writer = Store(path)
    (tmp_path / "state.db-shm").unlink(missing_ok=True)  # let the reader create it
    with Store(path, read_only=True) as reader:
        assert reader.counts_by_state() == {}
    writer.close()
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        if (tmp_path / name).exists():
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) & 0o077 == 0, name


@pytest.mark.parametrize(
    ("version", "message"),
    [(SCHEMA_VERSION - 1, "older than this inbox-poller's"), (SCHEMA_VERSION + 1, "newer")],
)
def test_another_schema_version_is_refused_and_never_migrated(
    tmp_path: Path, version: int, message: str
) -> None:
    path = tmp_path / "state.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    with pytest.raises(StoreError, match=message):
        Store(path, read_only=True)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == version
    conn.close()


def test_a_file_that_is_not_a_ledger_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"not a database at all, but long enough to look like one" * 100)
    with pytest.raises(StoreError, match=f"cannot read the ledger {path}: file is not a database"):
        Store(path, read_only=True)
