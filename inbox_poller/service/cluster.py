"""Whose turn it is to watch the mailbox, when several daemons share one ledger.

Exactly one daemon watches a mailbox: the one holding its lock (``ledger.pglocks``, a
PostgreSQL session advisory lock keyed by server, user and folder; on SQLite the run
lock already makes the daemon the only one). :class:`MailboxTurn` runs on its own
thread: every ``TRY_EVERY_S`` it tries to take the lock, and while it holds it, it
checks that the lock's connection still answers. Holding it, it runs a
``MailboxWatcher`` (the passes dispatch the downloads); not holding it, the daemon still
downloads, archives, submits and reconciles, and this thread dispatches the download
pool itself, so work the watching daemon's passes notified is claimed here too. When the
lock's connection is lost the watcher is stopped at once (another daemon may hold the
lock by now), and the lock is tried again.

A dead holder's connection drops with its process, so another daemon watches within
``TRY_EVERY_S`` of the database noticing (at once for a killed process; a silent network
within the lock connection's keepalives).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from inbox_poller.errors import StoreError
from inbox_poller.ledger.opening import MailboxGuard
from inbox_poller.service.watcher import MailboxWatcher

logger = logging.getLogger("inbox_poller.service")

TRY_EVERY_S = 2.0
"""How often a daemon not watching tries the mailbox lock (and looks for downloads), and
how often the watching one checks that it still holds it."""


class MailboxTurn:
    """Watch the mailbox while holding its *lock*; download what others notified otherwise.

    *watcher* builds a watcher that runs until the event it is given is set.
    """

    def __init__(
        self,
        lock: MailboxGuard,
        watcher: Callable[[threading.Event], MailboxWatcher],
        dispatch: Callable[[], None],
        *,
        stop: threading.Event,
        every_s: float = TRY_EVERY_S,
    ) -> None:
        self._lock = lock
        self._new_watcher = watcher
        self._dispatch = dispatch
        self._stop = stop
        self._every_s = every_s
        self.watcher: MailboxWatcher | None = None
        """The watcher running now (None: another daemon watches the mailbox)."""
        self._watch_stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unreachable = False

    @property
    def state(self) -> str:
        """The watcher's state, or that another daemon watches (``STATUS=``)."""
        watcher = self.watcher
        return watcher.state if watcher is not None else "watched by another daemon"

    def run(self) -> None:
        """Until ``stop``: take the lock when free, watch while it is held."""
        try:
            while True:
                if self._thread is not None and not self._lock.still_held():
                    logger.error(
                        "mailbox: the connection holding the mailbox lock is lost; "
                        "stopped watching (another daemon may watch it now)"
                    )
                    self._stop_watching()
                if self._thread is None and not self._stop.is_set():
                    self._try_to_watch()
                if self._thread is None and not self._stop.is_set():
                    self._dispatch()  # no pass of ours will: claim what others notified
                if self._stop.wait(self._every_s):
                    return
        finally:
            self._stop_watching()
            self._lock.release()

    def _try_to_watch(self) -> None:
        try:
            taken = self._lock.try_acquire()
        except StoreError as exc:
            if not self._unreachable:
                logger.warning("mailbox: cannot take the mailbox lock: %s", exc)
            self._unreachable = True
            return
        self._unreachable = False
        if not taken:
            return
        logger.info("mailbox: this daemon holds the mailbox lock and watches the mailbox")
        self._watch_stop = threading.Event()
        self.watcher = self._new_watcher(self._watch_stop)
        self._thread = threading.Thread(
            target=self.watcher.run, name="mailbox-watcher", daemon=True
        )
        self._thread.start()

    def _stop_watching(self) -> None:
        thread, self._thread = self._thread, None
        self._watch_stop.set()
        if thread is not None:
            thread.join()
        self.watcher = None
