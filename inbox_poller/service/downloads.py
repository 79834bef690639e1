"""The daemon's download pool: a few workers, so one large payload does not hold up the mail.

The mailbox pass only *dispatches*: every export ready to download that is not already
in flight goes to a worker, which brings it to ``archived`` with the same
``ExportArchiver.download_export`` that ``run --once`` uses on its own threads, then
wakes the watcher so that its mail is acknowledged promptly. The ledger decides what is
ready, so dispatching twice, or after a restart, never downloads an export twice at once.
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
from inbox_poller.models import CycleReport, ExportState

logger = logging.getLogger("inbox_poller.service")

DOWNLOAD_STATES = (ExportState.NOTIFIED, ExportState.DOWNLOADING, ExportState.VERIFIED)
"""States in which an export is ready for (or in the middle of) its download."""


class DownloadPool:
    """Download ready exports on *workers* threads, each export on one thread at a time."""

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
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download")
        self._in_flight: dict[int, Future[None]] = {}
        """The download of each export handed to the pool, until it finishes."""
        self._lock = threading.Lock()

    def dispatch(self, _report: CycleReport | None = None) -> None:
        """Hand every ready export that is not in flight to a worker (a pass's download step).

        The pass's report is not written: each download reports through the ledger and
        the log, after the pass has ended.
        """
        for export in self._store.list_exports(DOWNLOAD_STATES):
            with self._lock:
                if export.export_id in self._in_flight or self._stop.is_set():
                    continue
                try:
                    future = self._pool.submit(self._download, export.export_id)
                except RuntimeError:  # the pool is shutting down
                    continue
                self._in_flight[export.export_id] = future

    def shutdown(self, deadline: float) -> None:
        """Cancel what has not started; wait for what runs until *deadline* (monotonic).

        Set ``stop`` first: a download under way then parks itself, to resume at the next
        start.
        """
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            running = list(self._in_flight.values())
        wait(running, timeout=max(0.1, deadline - time.monotonic()))

    def _download(self, export_id: int) -> None:
        try:
            export = self._store.get_export(export_id)
            if export.state in DOWNLOAD_STATES:
                self._archiver.download_export(export, CycleReport())
        except LedgerUnavailable as exc:
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
            with self._lock:
                self._in_flight.pop(export_id, None)
            self._on_done()
