"""A crash of the machine, simulated: the ledger as its last durable point left it.

A crash point (``INBOX_POLLER_CRASH_AT``) ends the process as ``kill -9`` would; every
commit survives that, the relaxed ones too (they are written, not fsynced). A power
failure at the same moment would also lose the commits made since the last durable point
(docs/reliability.md §6.1). To test that, :data:`BOOT` runs ``inbox-poller`` in a child
whose ledger copies itself to ``$INBOX_POLLER_TEST_LEDGER_IMAGE`` at each durable point
(``LedgerConnection._durable_point``: after a durable commit, and after ``sync``), and
:func:`lose_unsynced` then puts that copy in place of the ledger and its log. The archive's
files are left as they are: each is fsynced before the ledger step that relies on it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
from pathlib import Path

IMAGE_ENV = "INBOX_POLLER_TEST_LEDGER_IMAGE"
BOOT = "from tests.plugins.powerloss import main; main()"
"""``python -c BOOT ARGS``: ``inbox-poller ARGS``, recording the durable ledger."""


def _record_durable_images(image: Path) -> None:
    from inbox_poller.ledger.connection import LedgerConnection

    def durable_point(self: LedgerConnection) -> None:
        if self.path is None:
            return
        conn = self._conn
        assert isinstance(conn, sqlite3.Connection)
        partial = image.with_name(image.name + ".partial")
        target = sqlite3.connect(partial)
        try:
            conn.backup(target)
        finally:
            target.close()
        os.replace(partial, image)

    LedgerConnection._durable_point = durable_point  # type: ignore[method-assign]


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
