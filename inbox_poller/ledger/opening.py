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
from types import ModuleType

from inbox_poller.errors import StoreError
from inbox_poller.ledger import lock
from inbox_poller.ledger.store import Store

INSTALL_HINT = "pip install 'inbox-poller[postgres]'"


def _postgres(url: str) -> ModuleType:
    """Return ``ledger.postgres``; without psycopg, say how to install it."""
    try:
        from inbox_poller.ledger import postgres
    except ImportError as exc:
        raise StoreError(
            f"the ledger {url} is PostgreSQL, which needs psycopg ({exc.name} is missing): "
            f"{INSTALL_HINT}"
        ) from None
    return postgres


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
    postgres = _postgres(url)
    session = postgres.open_postgres(url, password() if password else None, read_only=read_only)
    return Store(session, read_only=read_only)


@contextmanager
def run_lock(path: Path, url: str | None, password: Callable[[], str] | None) -> Iterator[None]:
    """Hold the one-daemon-per-ledger lock while the block runs (``run``)."""
    if url is None:
        with lock.run_lock(path):
            yield
        return
    postgres = _postgres(url)
    with postgres.daemon_lock(url, password() if password else None):
        yield


def daemon_running(path: Path, url: str | None, password: Callable[[], str] | None) -> bool:
    """Return whether a daemon or pass holds the ledger's lock (``status``, ``wait``)."""
    if url is None:
        return lock.daemon_running(path)
    postgres = _postgres(url)
    return bool(postgres.daemon_lock_held(url, password() if password else None))
