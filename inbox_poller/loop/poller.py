"""One pass of the loop, written once: read new mail, download, acknowledge what is done.

The daemon's mailbox watcher calls :meth:`Poller.run_pass` with the session it keeps
open, and hands the downloads to its pool; ``inbox-poller run --once`` calls
:meth:`Poller.run_once`, which opens a session, makes the same pass with the downloads
done by the pass itself (``[daemon] download_workers`` at a time), and closes it.
Acknowledging comes last: a mail is marked only once its export is archived, so a crash
anywhere leaves it to be read (or marked) again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from inbox_poller.crashpoints import crash_point
from inbox_poller.errors import MailboxError, ProcessedFolderError
from inbox_poller.ledger.keys import ACK_PROBLEM_KEY, LAST_RUN_KEY
from inbox_poller.loop.archiver import ExportArchiver
from inbox_poller.loop.reader import MailReader, ReaderSettings
from inbox_poller.models import CycleReport, MailboxStatus, utc_now
from inbox_poller.ports import Mailbox, Metrics, NoMetrics

if TYPE_CHECKING:
    from inbox_poller.ledger.store import Store

logger = logging.getLogger("inbox_poller.loop")

RUN_FAILURES_KEPT = 5

ACK_BATCH = 1000
"""Mails acknowledged with one command per step (``UID STORE``, ``UID MOVE`` of their UID
set) and recorded in one ledger transaction."""

DownloadStep = Callable[[CycleReport], None]
"""What a pass does with the exports that are ready to download: ``run --once`` downloads
them itself (``ExportArchiver.process_downloads``), the daemon hands them to its pool."""


class Poller:
    """Read, download and acknowledge, in that order, over the edges it is given."""

    def __init__(
        self,
        store: Store,
        archiver: ExportArchiver,
        settings: ReaderSettings,
        *,
        clock: Callable[[], datetime] = utc_now,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.archiver = archiver
        self.reader = MailReader(store, settings, clock=clock)
        self.clock = clock
        self.metrics: Metrics = metrics or NoMetrics()

    def close(self) -> None:
        """Stop the mail reader's worker process (the ledger and the mailbox are the
        caller's)."""
        self.reader.close()

    def run_pass(
        self,
        mailbox: Mailbox,
        status: MailboxStatus,
        report: CycleReport,
        *,
        downloads: DownloadStep | None = None,
        progress: Callable[[], None] = lambda: None,
    ) -> None:
        """Read new mail on the open *mailbox*, start the downloads, acknowledge what is done.

        The downloads start even when reading failed (exports notified earlier are still
        ready); acknowledging waits for a session that works. *progress* is called after
        each mail read or acknowledged (the daemon's watchdog: a long pass is not a hang).
        :raises MailboxError: reading failed; recorded in *report*, not acknowledged.
        """
        if downloads is None:  # run --once: downloads start while the rest is read
            early: Callable[[], None] = self.archiver.start_downloads
        else:  # the daemon: its pool takes each batch's exports at once

            def early() -> None:
                downloads(report)

        try:
            self.reader.read(mailbox, status, report, progress=progress, on_recorded=early)
        finally:
            (downloads or self.archiver.process_downloads)(report)
        self.acknowledge(mailbox, report, progress=progress)

    def run_once(self, mailbox: Mailbox, *, read_mail: bool = True) -> CycleReport:
        """Open a session, make one pass that downloads itself, close; return the report.

        Parts left by an interrupted download are removed first. When the mailbox cannot
        be opened or read, the downloads still run and the failure is in the report. The
        outcome is kept in the ledger (``LAST_RUN_KEY``) for ``status``. Without
        *read_mail* (another daemon watches the mailbox) the pass only downloads.
        """
        report = CycleReport()
        if read_mail:  # the mail reader's process starts while the mailbox connects
            self.reader.budget.start_soon()
        self.archiver.remove_stale_parts()
        if not read_mail:
            self.archiver.process_downloads(report)
            self._record_run(report)
            return report
        try:
            status = mailbox.open()
        except MailboxError as exc:
            logger.error("mailbox: %s", exc)
            self.metrics.failure("mailbox", exc)
            report.failed.append(f"mailbox: {exc}")
            self.archiver.process_downloads(report)
            self._record_run(report)
            return report
        try:
            self.run_pass(mailbox, status, report)
        except MailboxError as exc:
            logger.error("mailbox: %s", exc)  # in the report already; acknowledge next time
            self.metrics.failure("mailbox", exc)
        finally:
            mailbox.close()
        self._record_run(report)
        return report

    def _record_run(self, report: CycleReport) -> None:
        record = {
            "at": self.clock().isoformat(),
            "ok": report.ok,
            "failed": report.failed[:RUN_FAILURES_KEPT],
        }
        self.store.set_daemon_value(LAST_RUN_KEY, json.dumps(record))

    def acknowledge(
        self, mailbox: Mailbox, report: CycleReport, *, progress: Callable[[], None] = lambda: None
    ) -> None:
        """Mark every mail whose export is archived; stops at the first mailbox failure.

        Up to ``ACK_BATCH`` mails at a time: one command per step for the whole set on the
        server, then one ledger transaction; a crash between the two marks them again at
        the next pass (marking is idempotent: a moved mail is "not found").

        A missing processed folder (``ProcessedFolderError``) is kept in the ledger's
        daemon values (``ACK_PROBLEM_KEY``) until a round acknowledges everything, so
        that ``status`` is unhealthy meanwhile; the mail stays to be acknowledged.
        """
        mails = self.store.mails_to_acknowledge()
        if mails:
            self.store.sync()  # an archived export may be a relaxed commit (reliability §6.1)
        for start in range(0, len(mails), ACK_BATCH):
            batch = mails[start : start + ACK_BATCH]
            try:
                crash_point("ack:before-mark")
                results = mailbox.acknowledge_many([(m.key, m.message_id) for m in batch])
                crash_point("ack:after-mark")
                self.store.mark_mails_acknowledged(
                    [(m.key, r) for m, r in zip(batch, results, strict=True)], self.clock()
                )
            except MailboxError as exc:
                first = batch[0]
                more = f" (and {len(batch) - 1} more)" if len(batch) > 1 else ""
                logger.error(
                    "uid %s%s: cannot acknowledge: %s",
                    first.key,
                    more,
                    exc,
                    extra={"uid": str(first.key), "export_id": first.export_id},
                )
                self.metrics.failure("mailbox", exc)
                report.failed.append(f"mail {first.key}{more}: {exc}")
                if isinstance(exc, ProcessedFolderError):
                    self._set_ack_problem(str(exc))
                return
            for mail, result in zip(batch, results, strict=True):
                report.acknowledged += 1
                progress()
                logger.info(
                    "uid %s: acknowledged (%s)",
                    mail.key,
                    result,
                    extra={"uid": str(mail.key), "export_id": mail.export_id},
                )
        self._set_ack_problem("")

    def _set_ack_problem(self, problem: str) -> None:
        if self.store.daemon_values().get(ACK_PROBLEM_KEY, "") != problem:
            self.store.set_daemon_value(ACK_PROBLEM_KEY, problem)
