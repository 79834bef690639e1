"""A crash of the machine, simulated: the ledger as its last durable point left it.

A crash point (``INBOX_POLLER_CRASH_AT``) ends the process as ``kill -9`` would; every
commit survives that, the relaxed ones too (they are written, not fsynced). A power
failure at the same moment would also lose the commits made since the last durable point
(docs/reliability.md §6.1). To test that, :data:`BOOT` runs ``inbox-poller`` in a child
whose ledger copies itself to ``$INBOX_POLLER_TEST_LEDGER_IMAGE`` at each durable point:
when it is opened, after each durable commit that wrote a row (one that wrote none wrote
nothing to the log, and synced nothing), and after ``sync``. :func:`lose_unsynced` then
puts that copy in place of the ledger and its log. The archive's files are left as they
are: each is fsynced before the ledger step that relies on it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inbox_poller.ledger.engine import Tx

IMAGE_ENV = "INBOX_POLLER_TEST_LEDGER_IMAGE"
BOOT = "from tests.plugins.powerloss import main; main()"
"""``python -c BOOT ARGS``: ``inbox-poller ARGS``, recording the durable ledger."""


def _record_durable_images(image: Path) -> None:
    """Wrap the ledger connection's own methods to copy the ledger at its durable points."""
    from inbox_poller.ledger.connection import LedgerConnection

    def copy(ledger: LedgerConnection) -> None:
        conn = ledger._conn
        if ledger.path is None or not isinstance(conn, sqlite3.Connection):
            return  # PostgreSQL: every commit is durable
        partial = image.with_name(image.name + ".partial")
        target = sqlite3.connect(partial)
        try:
            conn.backup(target)
        finally:
            target.close()
        os.replace(partial, image)

    opened, transaction, sync = (
        LedgerConnection.__init__,
        LedgerConnection._transaction,
        LedgerConnection.sync,
    )

    def init(self: LedgerConnection, *args: Any, **kwargs: Any) -> None:
        opened(self, *args, **kwargs)
        if not self.read_only:
            copy(self)  # what is on disk at open

    @contextmanager
    def durable_transaction(self: LedgerConnection, *, durable: bool = True) -> Iterator[Tx]:
        # under the connection's lock, as the transaction itself: the copy follows its
        # commit before another thread's can, and never uses the connection beside one
        with self._lock:
            outer = not self._batching  # not a batch's savepoint
            conn = self._conn
            before = conn.total_changes if isinstance(conn, sqlite3.Connection) else 0
            with transaction(self, durable=durable) as tx:
                yield tx
            wrote = isinstance(conn, sqlite3.Connection) and conn.total_changes != before
            if outer and durable and wrote:
                copy(self)

    def synced(self: LedgerConnection) -> None:
        with self._lock:
            sync(self)
            if not self.read_only:
                copy(self)

    LedgerConnection.__init__ = init  # type: ignore[method-assign]
    LedgerConnection._transaction = durable_transaction  # type: ignore[method-assign]
    LedgerConnection.sync = synced  # type: ignore[method-assign]


def main() -> None:
    """The child: ``inbox-poller`` with the durable images recorded."""
    _record_durable_images(Path(os.environ[IMAGE_ENV]))
    from inbox_poller.cli import main as cli_main

    raise SystemExit(cli_main(sys.argv[1:]))


def lose_unsynced(ledger: Path, image: Path) -> None:
    """Leave *ledger* as a power failure would have: its last durable image, no log."""
    for suffix in ("-wal", "-shm"):
        Path(f"{ledger}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(image, ledger)


def export_states(ledger: Path) -> dict[str, str]:
    """Job ID -> state of every export in the SQLite file *ledger* (read-only)."""
    conn = sqlite3.connect(f"{ledger.absolute().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT job_id, state FROM exports WHERE job_id IS NOT NULL")
        return {str(job_id): str(state) for job_id, state in rows}
    finally:
        conn.close()
