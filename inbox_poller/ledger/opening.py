"""Open the configured ledger, SQLite (``[state] path``) or PostgreSQL (``[state] url``).

The rest of the program holds a :class:`~.store.Store` either way. One process runs
per SQLite file (the lock file of ``ledger.lock``), and it watches the mailbox. Any
number run on one PostgreSQL ledger (docs/scale-out-ledger.md, "Several
daemons"), each holding the ledger's daemon lock *shared* so that ``status`` sees them;
of those, the one holding the mailbox's own lock watches the mailbox (``ledger.pglocks``).
Both are session advisory locks on connections of their own, released when the process
dies and its connection drops, so a crash never leaves a stale lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol

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
def run_lock(
    path: Path,
    url: str | None,
    password: Callable[[], str] | None,
    owner: str = "run",
    *,
    exclusive: bool = False,
) -> Iterator[None]:
    """Hold the ledger's run lock while the block runs (``run``): the one-process lock of a
    SQLite file, or a share of a PostgreSQL ledger's daemon lock, named *owner*; all of
    it with *exclusive* (no daemon may run meanwhile: ``migrate``)."""
    if url is None:
        with lock.run_lock(path):
            yield
        return
    _postgres(url)
    from inbox_poller.ledger import pglocks

    with pglocks.daemon_lock(url, password() if password else None, owner, exclusive=exclusive):
        yield


def daemon_running(path: Path, url: str | None, password: Callable[[], str] | None) -> bool:
    """Return whether a daemon or pass holds the ledger's lock (``status``, ``wait``)."""
    if url is None:
        return lock.daemon_running(path)
    return bool(running_daemons(url, password))


@dataclass(frozen=True)
class Daemons:
    """Who runs on a PostgreSQL ledger (``status``): every daemon's name, and the one
    watching the mailbox (None: nobody)."""

    running: tuple[str, ...]
    watching: str | None


def running_daemons(url: str, password: Callable[[], str] | None) -> list[str]:
    """The names (owners) of the daemons and passes running on the ledger at *url*."""
    _postgres(url)
    from inbox_poller.ledger import pglocks

    return [h.name or "?" for h in pglocks.holders(url, password() if password else None)]


def cluster(url: str, password: Callable[[], str] | None, mailbox: tuple[str, str, str]) -> Daemons:
    """Who runs on the ledger at *url*, and who watches *mailbox* (server, user, folder)."""
    _postgres(url)
    from inbox_poller.ledger import pglocks

    secret = password() if password else None
    watching = pglocks.holders(url, secret, pglocks.mailbox_key(*mailbox))
    return Daemons(
        tuple(h.name or "?" for h in pglocks.holders(url, secret)),
        (watching[0].name or "?") if watching else None,
    )


class MailboxGuard(Protocol):
    """The lock a daemon must hold to watch the mailbox (``service.cluster``)."""

    held: bool

    def try_acquire(self) -> bool: ...

    def still_held(self) -> bool: ...

    def release(self) -> None: ...


class OnlyProcess:
    """A SQLite ledger's: the run lock already makes this process the only one."""

    held = True

    def try_acquire(self) -> bool:
        return True

    def still_held(self) -> bool:
        return True

    def release(self) -> None:
        """Nothing to release: the run lock is the process's."""


def mailbox_lock(
    url: str | None,
    password: Callable[[], str] | None,
    mailbox: tuple[str, str, str],
    owner: str,
) -> MailboxGuard:
    """The lock on *mailbox* (server, user, folder) that *owner* must hold to watch it."""
    if url is None:
        return OnlyProcess()
    _postgres(url)
    from inbox_poller.ledger import pglocks

    return pglocks.MailboxLock(
        url, password() if password else None, pglocks.mailbox_key(*mailbox), owner
    )
