"""Copy a SQLite ledger into a PostgreSQL one, keeping every ID (``inbox-poller migrate``).

The copy is one PostgreSQL transaction: a target either holds all of it or nothing, so a
migration cut at any moment is simply run again. Every table is copied in the order its
references need (``exports`` by ID, a resubmission after what it replaces), with the
columns both engines have; ``failed_links`` keeps its order (SQLite's ``rowid`` becomes
``seq``). The identity sequences then start after the highest ID SQLite ever gave
(``sqlite_sequence``), so no ID is used twice. The target records what it was made
from (``daemon_state``, :data:`MIGRATED_KEY`): a second run finds it and changes
nothing; a non-empty target made otherwise is refused. docs/migration.md.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from inbox_poller.errors import StoreError
from inbox_poller.ledger.pgschema import pg_version
from inbox_poller.ledger.postgres import dial, open_postgres, reason

TABLES = (
    "exports",
    "mails",
    "mail_exports",
    "failed_links",
    "events",
    "watermarks",
    "daemon_state",
    "hook_runs",
)
"""Every table of the ledger, each after those it references."""
MIGRATED_KEY = "migrated_from"
"""The ``daemon_state`` key naming the SQLite ledger (and its size) a target was made from."""
_BATCH = 1000


@dataclass
class LedgerCopy:
    """What a copy did, or (a dry run) would do."""

    source: str
    target: str
    rows: dict[str, int] = field(default_factory=dict)
    """Rows per table in the source."""
    done_before: bool = False
    """The target already held this copy: nothing was written."""
    target_state: str = ""
    """What the target held before: ``empty``, ``no tables yet`` or ``migrated``."""


def _fingerprint(source: Path, rows: dict[str, int], last_event: int) -> str:
    return f"{source.absolute()} (exports {rows['exports']}, last event {last_event})"


def _read_source(source: Path) -> tuple[sqlite3.Connection, dict[str, int], int]:
    if not source.exists():
        raise StoreError(f"no ledger at {source}")
    conn = sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True)
    rows = {
        table: int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
        for table in TABLES
    }
    last = conn.execute("SELECT COALESCE(MAX(event_id), 0) FROM events").fetchone()[0]
    return conn, rows, int(last)


def _target_rows(conn: Any) -> int:
    return sum(
        int(conn.execute(f"SELECT COUNT(*) AS n FROM {table}").fetchone()["n"])  # noqa: S608
        for table in TABLES
    )


def copy_ledger(
    source: Path, url: str, password: str | None, *, dry_run: bool = False
) -> LedgerCopy:
    """Copy the SQLite ledger at *source* into the PostgreSQL ledger at *url*.

    The caller holds the SQLite ledger's run lock (no daemon writes it meanwhile).

    :raises StoreError: the target holds other data, or a table cannot be copied.
    :raises LedgerUnavailable: the target cannot be reached.
    """
    sqlite, rows, last_event = _read_source(source)
    report = LedgerCopy(str(source), url, rows)
    fingerprint = _fingerprint(source, rows, last_event)
    try:
        if dry_run:
            _look(report, url, password, fingerprint)
            return report
        session = open_postgres(url, password)  # creates or migrates the tables
        tx = session.conn
        try:
            tx.execute("BEGIN")
            tx.execute("LOCK TABLE exports IN EXCLUSIVE MODE")
            if _target_rows(tx):
                _check_same(tx, url, fingerprint)
                report.done_before = True
                report.target_state = "migrated"
                tx.execute("ROLLBACK")
                return report
            report.target_state = "empty"
            for table in TABLES:
                _copy_table(sqlite, tx, table)
            _move_sequences(sqlite, tx)
            tx.execute(
                "INSERT INTO daemon_state (key, value) VALUES (?, ?)",
                (MIGRATED_KEY, fingerprint),
            )
            tx.execute("COMMIT")
        except psycopg.Error as exc:
            tx.execute("ROLLBACK")
            raise StoreError(f"cannot copy the ledger into {url}: {reason(exc)}") from exc
        except BaseException:
            tx.execute("ROLLBACK")
            raise
        finally:
            session.close()
    finally:
        sqlite.close()
    return report


def _look(report: LedgerCopy, url: str, password: str | None, fingerprint: str) -> None:
    """A dry run: say what the target holds, changing nothing (no tables are created)."""
    conn: psycopg.Connection[Any] = dial(url, password, row_factory=dict_row)
    try:
        tx = _Plain(conn)
        if pg_version(tx) is None:
            report.target_state = "no tables yet"
        elif _target_rows(tx):
            _check_same(tx, url, fingerprint)
            report.done_before = True
            report.target_state = "migrated"
        else:
            report.target_state = "empty"
    except psycopg.Error as exc:
        raise StoreError(f"cannot read the ledger {url}: {reason(exc)}") from exc
    finally:
        conn.close()


class _Plain:
    """``?`` statements on a plain psycopg connection (what ``pg_version`` expects)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        return self._conn.execute(sql.replace("?", "%s"), tuple(parameters) or None)


def _check_same(tx: Any, url: str, fingerprint: str) -> None:
    row = tx.execute("SELECT value FROM daemon_state WHERE key = ?", (MIGRATED_KEY,)).fetchone()
    if row is None:
        raise StoreError(
            f"the ledger {url} is not empty and was not made by `inbox-poller migrate`: "
            "migrate into a new, empty database"
        )
    if row["value"] != fingerprint:
        raise StoreError(
            f"the ledger {url} was migrated from {row['value']}, not from {fingerprint}: "
            "the SQLite ledger changed since (did a daemon run on it?) or is another one; "
            "migrate into a new, empty database"
        )


def _columns(sqlite: sqlite3.Connection, tx: Any, table: str) -> list[str]:
    ours = [row[1] for row in sqlite.execute(f"PRAGMA table_info({table})")]
    theirs = {
        row["column_name"]
        for row in tx.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
    }
    missing = [name for name in ours if name not in theirs]
    if missing:
        raise StoreError(f"table {table}: the target has no column {', '.join(missing)}")
    return ours


def _copy_table(sqlite: sqlite3.Connection, tx: Any, table: str) -> None:
    columns = _columns(sqlite, tx, table)
    selected = ", ".join(columns)
    inserted = list(columns)
    if table == "failed_links":  # the order links failed in: SQLite's rowid, our seq
        selected += ", rowid"
        inserted.append("seq")
    marks = ", ".join("?" * len(inserted))
    insert = (
        f"INSERT INTO {table} ({', '.join(inserted)}) OVERRIDING SYSTEM VALUE"  # noqa: S608
        f" VALUES ({marks})"
    )
    cursor = sqlite.execute(f"SELECT {selected} FROM {table} ORDER BY rowid")  # noqa: S608
    while batch := cursor.fetchmany(_BATCH):
        for row in batch:
            tx.execute(insert, tuple(row))


def _move_sequences(sqlite: sqlite3.Connection, tx: Any) -> None:
    """Start each identity after the highest value the source ever handed out."""
    given = dict(sqlite.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    identities = tx.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND is_identity = 'YES'"
    ).fetchall()
    for row in identities:
        table, column = row["table_name"], row["column_name"]
        high = tx.execute(
            f"SELECT COALESCE(MAX({column}), 0) AS high FROM {table}"  # noqa: S608
        ).fetchone()["high"]
        high = max(int(high), int(given.get(table, 0)))
        if high:
            tx.execute("SELECT setval(pg_get_serial_sequence(?, ?), ?)", (table, column, high))
