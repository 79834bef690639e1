"""The daemon's download pool: a few workers, so one large payload does not hold up the mail.

The mailbox pass only *dispatches*; so does the daemon's cluster thread every few
seconds on a daemon that does not watch the mailbox. A dispatch makes sure
``workers`` claimers run: each claims the next ready export from the ledger
(``ExportArchiver.claim``: this process becomes its owner, under a lease), brings it to
``archived`` with the same ``ExportArchiver.download_export`` that ``run --once`` uses,
wakes the watcher so that its mail is acknowledged promptly, and claims the next until
none is ready. The ledger's claim decides who downloads what, so dispatching twice,
after a restart, or from several daemons never downloads an export twice at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from inbox_poller.errors import InboxPollerError, LedgerUnavailable
from inbox_poller.ledger.store import Store
from inbox_poller.loop.archiver import ExportArchiver
from inbox_poller.models import CycleReport, Export

logger = logging.getLogger("inbox_poller.service")


class DownloadPool:
    """Claim and download ready exports on *workers* threads."""

    def __init__(
        self,
        store: Store,
        archiver: ExportArchiver,
        *,
        workers: int,
        stop: threading.Event,
        on_done: Callable[[], None],
    ) -> None:
        self._store = store
        self._archiver = archiver
        self._stop = stop
        self._on_done = on_done
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download")
        self._running: list[Future[None]] = []
        """The claimers under way."""
        self._pass: CycleReport | None = None
        """The report of the pass that dispatched last: its dispatches are one round."""
        self._requests = 0
        """How many dispatches were asked for: a claimer that found nothing stops only if
        none came since it looked."""
        self._ledger_down = False
        self._abandoned: set[int] = set()
        """Exports this process claimed whose download ended while the ledger was
        unavailable: handed back (``Store.release_claim``) once it is reachable again."""
        """Whether the last claim found the ledger unavailable (said once per outage)."""
        self._lock = threading.Lock()

    def dispatch(self, report: CycleReport | None = None) -> None:
        """Start claimers up to ``workers`` (a pass's download step).

        A new pass (another *report*, or none: the daemon's start, a daemon not watching
        the mailbox) starts a new round: each export ready is tried again, once. The
        dispatches of one pass (after each batch read, and at its end) are one round,
        so an export that failed in it waits for the next pass, as before claims. The
        report is not written: each download reports through the ledger and the log.
        """
        with self._lock:
            self._requests += 1
            if report is None or report is not self._pass:
                self._archiver.forget_tried()
            self._pass = report
            self._running = [f for f in self._running if not f.done()]
            while len(self._running) < self._workers and not self._stop.is_set():
                try:
                    self._running.append(self._pool.submit(self._claimer))
                except RuntimeError:  # the pool is shutting down
                    return

    def shutdown(self, deadline: float) -> None:
        """Cancel what has not started; wait for what runs until *deadline* (monotonic).

        Set ``stop`` first: a download under way then parks itself, to resume at the next
        start.
        """
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            running = list(self._running)
        wait(running, timeout=max(0.1, deadline - time.monotonic()))

    def _claimer(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                seen = self._requests
            try:
                self._release_abandoned()
                export = self._archiver.claim()
            except LedgerUnavailable as exc:
                with self._lock:  # one line per outage, not one per claimer and dispatch
                    first, self._ledger_down = not self._ledger_down, True
                if first:
                    logger.warning(
                        "downloads: the ledger is unavailable; claims resume when it is back: %s",
                        exc,
                    )
                return
            except InboxPollerError as exc:
                logger.error("downloads: cannot claim an export: %s", exc)
                return
            with self._lock:
                self._ledger_down = False
            if export is None:
                with self._lock:
                    if self._requests == seen:
                        return
                continue
            self._download(export)

    def _release_abandoned(self) -> None:
        """Hand back what a ledger outage cut off, so that it is claimed again at once.

        :raises LedgerUnavailable: still unavailable (what is left is tried next time).
        """
        with self._lock:  # each export handed back by one claimer, once
            abandoned = sorted(self._abandoned)
            self._abandoned.clear()
        for number, export_id in enumerate(abandoned):
            try:
                released = self._store.release_claim(export_id, self._archiver.owner)
            except LedgerUnavailable:
                with self._lock:
                    self._abandoned.update(abandoned[number:])
                raise
            if released:
                logger.info(
                    "export %d: handed back after the ledger outage, to be claimed again",
                    export_id,
                    extra={"export_id": export_id},
                )

    def _download(self, export: Export) -> None:
        export_id = export.export_id
        try:
            self._archiver.download_export(export, CycleReport())
            self._archiver.tried(export)
        except LedgerUnavailable as exc:
            self._archiver.abandoned(export)
            with self._lock:
                self._abandoned.add(export_id)
            logger.warning(
                "export %d: the ledger is unavailable; the download resumes when it is back: %s",
                export_id,
                exc,
                extra={"export_id": export_id},
            )
        except InboxPollerError as exc:
            logger.error("export %d: %s", export_id, exc, extra={"export_id": export_id})
        except Exception:
            logger.exception(
                "export %d: unexpected error in the download worker",
                export_id,
                extra={"export_id": export_id},
            )
        finally:
            self._on_done()
