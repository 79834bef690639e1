"""What the ledger needs of its database engine, SQLite or PostgreSQL.

The ledger's statements are written once, in a subset of SQL both engines understand
(``RETURNING``, ``IS NOT DISTINCT FROM``, ``ON CONFLICT``; ``?`` placeholders, which
the PostgreSQL session rewrites). What differs is here: how a transaction begins, how a
row is locked for the read-check-update of a transition, and the column that orders
rows by insertion. The design and why: docs/scale-out-ledger.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Cursor(Protocol):
    """The rows of one statement; each row answers ``row["column"]``."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Tx(Protocol):
    """The connection a transaction runs its statements on."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...


@dataclass(frozen=True)
class Dialect:
    """The fragments of SQL that differ between the engines."""

    name: str
    begin: str
    """The statement that opens a write transaction."""
    for_update: str
    """Appended to a ``SELECT`` of the row a transition reads, checks and updates."""
    insertion_order: str
    """The column that orders ``failed_links`` rows as they were inserted."""
    skip_locked: str
    """Appended to the ``SELECT`` that claims work: rows another daemon holds are passed."""
    events_mark: str = "SELECT COALESCE(MAX(event_id), 0) AS last FROM events"
    """The query (column ``last``) of a mark below which every event is settled: no
    transaction still in flight can add one there."""
    events_order: str = "event_id"
    """The ``events`` column that :attr:`events_mark` is a value of."""
    shared: bool = False
    """Several processes may work on the ledger at once (no run lock keeps one)."""
    relaxed: tuple[str, str] | None = None
    """The statements run before and after a transaction that need not be durable at once
    (``LedgerConnection._transaction(durable=False)``); None: every commit is."""
    clock: str | None = None
    """The query of the database's clock (one row, column ``now``) that leases are taken
    and compared on, so that clock skew between the daemons' machines cannot shorten a
    lease; None: the caller's clock (SQLite: one machine)."""


SQLITE = Dialect(
    "sqlite",
    begin="BEGIN IMMEDIATE",
    for_update="",
    insertion_order="rowid",
    skip_locked="",
    relaxed=("PRAGMA synchronous=NORMAL", "PRAGMA synchronous=FULL"),
)
"""``BEGIN IMMEDIATE`` takes the file's write lock: no row lock is needed. A relaxed commit
is written to the log without its fsync (``synchronous=NORMAL``)."""

POSTGRES = Dialect(
    "postgresql",
    begin="BEGIN",
    for_update=" FOR UPDATE",
    insertion_order="seq",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    # an event ID is taken at insert and seen at commit, so IDs do not become visible in
    # order; transaction IDs below the snapshot's xmin all ended (committed or not)
    events_mark="SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint - 1 AS last",
    events_order="tx",
    shared=True,
    clock="SELECT clock_timestamp() AS now",
)
"""READ COMMITTED: the row read of a transition is locked (and re-read after a wait)."""


@dataclass(frozen=True)
class EngineSession:
    """An open connection to a ledger database, and how to talk to it."""

    conn: Tx
    dialect: Dialect
    where: str
    """The ledger named in messages: its file, or its URL (which has no password)."""
    errors: tuple[type[Exception], ...]
    """The engine's errors, reported as ``StoreError``."""
    integrity_errors: tuple[type[Exception], ...]
    """A unique (or other) constraint refused the statement."""
    close: Callable[[], None]
