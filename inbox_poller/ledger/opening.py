"""Open the configured ledger, SQLite (``[state] path``) or PostgreSQL (``[state] url``).

The rest of the program holds a :class:`~.store.Store` either way. Until claims and
leases let several daemons share one PostgreSQL ledger (docs/scale-out-progress-ledger.md),
one daemon runs per ledger on both engines: beside a SQLite file, the lock file of
``ledger.lock``; on PostgreSQL, a session advisory lock held by a connection of its own
for as long as ``run`` runs (it is released when the process dies and its connection
drops, so a crash never leaves a stale lock).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from inbox_poller.ledger import lock
from inbox_poller.ledger.store import Store


def open_ledger(
    path: Path,
    url: str | None,
    password: Callable[[], str] | None,
    *,
    read_only: bool = False,
) -> Store:
    """Open the ledger: the SQLite file at *path*, or the PostgreSQL database at *url*.

    *password* is called only for PostgreSQL (None: libpq's ``.pgpass``, ``PGPASSFILE``
    or a client certificate). psycopg is imported only when a URL is configured.
    """
    if url is None:
        return Store(path, read_only=read_only)
    from inbox_poller.ledger.postgres import open_postgres

    session = open_postgres(url, password() if password else None, read_only=read_only)
    return Store(session, read_only=read_only)


@contextmanager
def run_lock(path: Path, url: str | None, password: Callable[[], str] | None) -> Iterator[None]:
    """Hold the one-daemon-per-ledger lock while the block runs (``run``)."""
    if url is None:
        with lock.run_lock(path):
            yield
        return
    from inbox_poller.ledger.postgres import daemon_lock

    with daemon_lock(url, password() if password else None):
        yield


def daemon_running(path: Path, url: str | None, password: Callable[[], str] | None) -> bool:
    """Return whether a daemon or pass holds the ledger's lock (``status``, ``wait``)."""
    if url is None:
        return lock.daemon_running(path)
    from inbox_poller.ledger.postgres import daemon_lock_held

    return daemon_lock_held(url, password() if password else None)
