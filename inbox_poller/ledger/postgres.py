"""A PostgreSQL ledger: open a psycopg 3 connection as an :class:`~.engine.EngineSession`.

The :class:`~.store.Store` on top is the same as for SQLite (docs/scale-out-ledger.md):
its statements use ``?`` placeholders, rewritten here to psycopg's ``%s``. The password
is passed to psycopg as a keyword, never inside the URL, which is logged and shown; the
URL carries libpq's TLS options (``sslmode``, ``sslrootcert``). psycopg is imported only
here and in the sandbox (an import-linter contract).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from inbox_poller.errors import LedgerUnavailable, StoreError
from inbox_poller.ledger.engine import POSTGRES, EngineSession
from inbox_poller.ledger.pgschema import pg_check_version, pg_migrate

CONNECT_TIMEOUT_S = 10
"""How long a connection attempt may take before the ledger is reported unreachable."""
STATEMENT_TIMEOUT_MS = 60_000
"""The server cancels a ledger statement running longer (every one takes milliseconds)."""
LOCK_TIMEOUT_MS = 30_000
"""The server gives up a wait for a row another daemon holds (its transactions are short)."""
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
"""libpq's TCP settings: a server gone silent (host down, network cut) is noticed in
about 25 s while idle, and data it never acknowledges fails the statement after 30 s."""

logger = logging.getLogger("inbox_poller.ledger")


@functools.lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """Return *sql* with ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled).

    The ledger's statements never hold a ``?`` inside a literal; one that did would get
    a wrong parameter count from psycopg, never a silent change.
    """
    return sql.replace("%", "%%").replace("?", "%s")


SERVER_KEEPALIVES = {
    "tcp_keepalives_idle": 10,
    "tcp_keepalives_interval": 5,
    "tcp_keepalives_count": 3,
}
"""The same keepalives on the server's end of each session: when a daemon's machine
vanishes (no FIN, no RST), the server drops its sessions after about 25 s and with them
its mailbox lock, so another daemon watches the mailbox within the issue's 30 s
(docs/scale-out.md). The server's own default is the system's: two hours."""


def _server_options() -> str:
    """The ``options`` connection parameter: the session's timeouts and the server's
    keepalives, set at connect."""
    settings = {
        "statement_timeout": STATEMENT_TIMEOUT_MS,
        "lock_timeout": LOCK_TIMEOUT_MS,
        **SERVER_KEEPALIVES,
    }
    return " ".join(f"-c {name}={value}" for name, value in settings.items())


def dial(
    url: str, password: str | None, *, name: str = "inbox-poller", **extra: Any
) -> psycopg.Connection[Any]:
    """Connect with the ledger's bounds, as ``application_name`` *name* (the lock
    connections name their daemon, ``ledger.pglocks``).

    :raises LedgerUnavailable: naming libpq's reason.
    """
    try:
        return psycopg.connect(
            url,
            password=password,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=name[:63],
            options=_server_options(),
            **KEEPALIVES,
            **extra,
        )
    except psycopg.Error as exc:
        raise LedgerUnavailable(f"cannot connect to the ledger {url}: {reason(exc)}") from None


class _NoRows:
    """The result of a statement that needed no server (a rollback of a lost session)."""

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []

    def __iter__(self) -> Iterator[Any]:
        return iter(())


def _lost(conn: psycopg.Connection[Any], exc: psycopg.Error) -> bool:
    """Whether *exc* ended the session (a server restart, a cut connection)."""
    return conn.closed or isinstance(exc, psycopg.errors.AdminShutdown)


class PgTx:
    """The ledger's view of a psycopg connection: ``execute(sql, params)`` with ``?``.

    It survives the server: a connection found lost *between* transactions is replaced
    (once per statement; ``BEGIN`` and the reads outside a transaction are then run
    again, which changes nothing), and a loss *inside* one is :class:`LedgerUnavailable`:
    the server rolled that transaction back, or, at ``COMMIT``, its outcome is unknown.
    A statement or lock wait over the session's timeouts is :class:`LedgerUnavailable` too.
    Callers hold the ``LedgerConnection``'s lock, so one statement runs at a time.
    """

    def __init__(
        self,
        conn: psycopg.Connection[dict[str, Any]],
        reconnect: Callable[[], psycopg.Connection[dict[str, Any]]],
        where: str,
    ) -> None:
        self._conn = conn
        self._reconnect = reconnect
        self._where = where
        self._in_tx = False

    def close(self) -> None:
        self._conn.close()

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        ends = sql in ("COMMIT", "ROLLBACK")
        if self._conn.closed:
            if sql == "ROLLBACK":  # the server ended the transaction with the session
                self._in_tx = False
                return _NoRows()
            if self._in_tx:
                raise LedgerUnavailable(
                    f"ledger {self._where}: the connection was lost during a transaction;"
                    " the server rolled it back"
                )
            self._replace()
        try:
            cursor = self._run(sql, parameters)
        except psycopg.Error as exc:
            if sql == "ROLLBACK" and _lost(self._conn, exc):
                return _NoRows()  # the server ended the transaction with the session
            if not _lost(self._conn, exc):
                if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
                    raise LedgerUnavailable(f"ledger {self._where}: {reason(exc)}") from exc
                raise
            if self._in_tx or not (sql == "BEGIN" or sql.startswith("SELECT")):
                # a transaction stays open (and every statement of it refused) until the
                # caller's ROLLBACK: savepoints must not run on a new connection
                outcome = (
                    "the commit's outcome is unknown"
                    if sql == "COMMIT"
                    else "the server rolled the transaction back"
                )
                raise LedgerUnavailable(
                    f"ledger {self._where}: the connection was lost ({reason(exc)}); {outcome}",
                    outcome_unknown=sql == "COMMIT",
                ) from exc
            self._replace()  # nothing had happened: say it again on a new connection
            cursor = self._run(sql, parameters)
        finally:
            if ends:
                self._in_tx = False
        if sql == "BEGIN":
            self._in_tx = True
        return cursor

    def _run(self, sql: str, parameters: Sequence[Any]) -> psycopg.Cursor[dict[str, Any]]:
        if not parameters:
            return self._conn.execute(sql)
        return self._conn.execute(to_pyformat(sql), tuple(parameters))

    def _replace(self) -> None:
        """Open a new connection in place of the lost one; log once."""
        self._conn.close()
        self._conn = self._reconnect()
        logger.info("ledger: reconnected to %s", self._where)


def open_postgres(url: str, password: str | None, *, read_only: bool = False) -> EngineSession:
    """Connect to the ledger at *url*; create or migrate its tables unless *read_only*.

    :raises LedgerUnavailable: the server cannot be reached (naming the URL, never the
        password, and libpq's reason).
    :raises StoreError: the database is not a ledger this version can use.
    """

    def connect() -> psycopg.Connection[dict[str, Any]]:
        conn: psycopg.Connection[dict[str, Any]] = dial(url, password, row_factory=dict_row)
        if read_only:
            try:
                conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            except psycopg.Error as exc:
                conn.close()
                raise LedgerUnavailable(f"cannot open the ledger {url}: {reason(exc)}") from exc
        return conn

    tx = PgTx(connect(), connect, url)
    try:
        if read_only:
            pg_check_version(tx, url)
        else:
            pg_migrate(tx, url)
    except psycopg.Error as exc:
        tx.close()
        raise StoreError(f"cannot open the ledger {url}: {reason(exc)}") from exc
    except BaseException:
        tx.close()
        raise
    return EngineSession(
        conn=tx,
        dialect=POSTGRES,
        where=url,
        errors=(psycopg.Error,),
        integrity_errors=(psycopg.errors.IntegrityError,),
        close=tx.close,
    )


def reason(exc: psycopg.Error) -> str:
    """libpq's message, on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


DAEMON_LOCK = 0x1B0C_5C4E_0002
"""The session advisory lock every ``run`` holds shared (``ledger.pglocks``)."""
