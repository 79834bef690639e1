"""Who this process is to the ledger, and the heartbeat that keeps its claims.

Every download starts with a claim (``Store.claim_download``): the export becomes this
process's, under a lease of ``LEASE``, which the heartbeat renews every third of it while
the process lives. A daemon that dies stops renewing, and another takes its exports over
once their leases end (docs/scale-out-ledger.md, "Several daemons").
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from inbox_poller.errors import StoreError
from inbox_poller.models import utc_now

if TYPE_CHECKING:
    from inbox_poller.ledger.store import Store

logger = logging.getLogger("inbox_poller.loop")

LEASE = timedelta(seconds=30)
"""How long a claim holds without a heartbeat: the bound on a dead daemon's work waiting
to be taken over (the issue's 30 s)."""


@functools.cache
def process_owner() -> str:
    """This process's name in the ledger's ``owner`` column: ``<host>:<pid>:<random>``.

    One per process (a restarted daemon is another owner, even with the same PID).
    """
    return f"{platform.node() or 'localhost'}:{os.getpid()}:{secrets.token_hex(3)}"


class Heartbeat:
    """Renew *owner*'s leases every third of *lease*."""

    def __init__(
        self,
        store: Store,
        owner: str,
        lease: timedelta = LEASE,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.owner = owner
        self.lease = lease
        self.clock = clock
        self._failing = False

    @property
    def every_s(self) -> float:
        return self.lease.total_seconds() / 3

    def beat(self) -> int:
        """Renew now; return how many leases. A failure is logged once until it heals:
        the next beat tries again, and two missed beats still leave a third of the lease."""
        try:
            renewed = self.store.renew_leases(self.owner, self.clock(), self.lease)
        except StoreError as exc:
            if not self._failing:
                logger.warning("leases: cannot renew the leases of %s: %s", self.owner, exc)
            self._failing = True
            return 0
        if self._failing:
            logger.info("leases: renewing the leases of %s again", self.owner)
        self._failing = False
        return renewed

    def run(self, stop: threading.Event) -> None:
        """Beat until *stop* is set (the daemon's heartbeat thread)."""
        while not stop.wait(self.every_s):
            self.beat()

    @contextmanager
    def running(self) -> Iterator[None]:
        """Beat on a thread of its own while the block runs (``run --once``'s downloads)."""
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), name="heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
