"""A PostgreSQL ledger: open a psycopg 3 connection as an :class:`~.engine.EngineSession`.

The :class:`~.store.Store` on top is the same as for SQLite (docs/scale-out-progress-ledger.md):
its statements use ``?`` placeholders, rewritten here to psycopg's ``%s``. The password
is passed to psycopg as a keyword, never inside the URL, which is logged and shown; the
URL carries libpq's TLS options (``sslmode``, ``sslrootcert``). psycopg is imported only
here and in the sandbox (an import-linter contract).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from inbox_poller.errors import StoreError
from inbox_poller.ledger.engine import POSTGRES, EngineSession
from inbox_poller.ledger.pgschema import pg_check_version, pg_migrate

CONNECT_TIMEOUT_S = 10
"""How long a connection attempt may take before the ledger is reported unreachable."""


@functools.lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """Return *sql* with ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled).

    The ledger's statements never hold a ``?`` inside a literal; one that did would get
    a wrong parameter count from psycopg, never a silent change.
    """
    return sql.replace("%", "%%").replace("?", "%s")


class PgTx:
    """The ledger's view of a psycopg connection: ``execute(sql, params)`` with ``?``."""

    def __init__(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        self._conn = conn

    def execute(
        self, sql: str, parameters: Sequence[Any] = (), /
    ) -> psycopg.Cursor[dict[str, Any]]:
        if not parameters:
            return self._conn.execute(sql)
        return self._conn.execute(to_pyformat(sql), tuple(parameters))


def open_postgres(url: str, password: str | None, *, read_only: bool = False) -> EngineSession:
    """Connect to the ledger at *url*; create or migrate its tables unless *read_only*.

    :raises StoreError: naming the URL (never the password) and libpq's reason.
    """
    try:
        conn = psycopg.connect(
            url,
            password=password,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="inbox-poller",
        )
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to the ledger {url}: {_reason(exc)}") from None
    tx = PgTx(conn)
    try:
        if read_only:
            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            pg_check_version(tx, url)
        else:
            pg_migrate(tx, url)
    except psycopg.Error as exc:
        conn.close()
        raise StoreError(f"cannot open the ledger {url}: {_reason(exc)}") from exc
    except BaseException:
        conn.close()
        raise
    return EngineSession(
        conn=tx,
        dialect=POSTGRES,
        where=url,
        errors=(psycopg.Error,),
        integrity_errors=(psycopg.errors.IntegrityError,),
        close=conn.close,
    )


def _reason(exc: psycopg.Error) -> str:
    """libpq's message, on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


DAEMON_LOCK = 0x1B0C_5C4E_0002
"""The session advisory lock every ``run`` holds shared (``ledger.pglocks``)."""
