"""The daemon's hook thread: runs the hooks of archived exports off the mailbox thread.

It sleeps until the next pending run is due (at most :data:`IDLE_WAIT_S`), or until
``wake`` is set by a finished download, so a hook runs within a second of its export's
archiving. A hook that takes minutes holds up only the hooks after it, never the
mailbox, the downloads or the acknowledgements. On ``stop`` a running hook is killed
and stays pending, to run again at the next start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from inbox_poller.errors import InboxPollerError, LedgerUnavailable
from inbox_poller.loop.hooks import HookDispatcher
from inbox_poller.models import utc_now

logger = logging.getLogger("inbox_poller.service")

IDLE_WAIT_S = 60.0
"""The longest sleep with nothing due: a safety net, since every archive wakes the thread."""
MIN_WAIT_S = 0.05


class HookRunner:
    """Run due hooks until *stop*; *wake* says an export was archived."""

    def __init__(
        self,
        dispatcher: HookDispatcher,
        *,
        stop: threading.Event,
        wake: threading.Event,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._dispatcher = dispatcher
        self._stop = stop
        self._wake = wake
        self._clock = clock

    def run(self) -> None:
        """The thread's body: run what is due, sleep until the next is, repeat."""
        while not self._stop.is_set():
            next_due: datetime | None = None
            try:
                self._dispatcher.run_due(self._stop)
                next_due = self._dispatcher.next_due()
            except LedgerUnavailable as exc:  # tried again at the next wake
                logger.warning("hooks: the ledger is unavailable: %s", exc)
            except InboxPollerError as exc:
                logger.error("hooks: %s", exc)
            except Exception:
                logger.exception("hooks: unexpected error in the hook thread")
            wait_s = IDLE_WAIT_S
            if next_due is not None:
                wait_s = (next_due - self._clock()).total_seconds()
            self._wake.wait(min(IDLE_WAIT_S, max(MIN_WAIT_S, wait_s)))
            self._wake.clear()
