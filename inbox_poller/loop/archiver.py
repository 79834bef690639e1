"""The download half of the loop: bring each notified export to ``archived``.

Every step is recorded in the ledger before the next one, so a crash anywhere resumes
from the last recorded state (``verified`` exports are finished without downloading
again, and part files no ledger row points to are removed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import PurePath
from typing import TYPE_CHECKING

from inbox_poller.archive import manifest_json, manifest_line
from inbox_poller.crashpoints import crash_point
from inbox_poller.errors import (
    ArchiveError,
    ArchiveUnavailable,
    DownloadError,
    DownloadTransient,
    InboxPollerError,
    LeaseLost,
    LedgerUnavailable,
    LinkExpired,
)
from inbox_poller.logcontext import log_context
from inbox_poller.loop.leases import LEASE, Heartbeat, process_owner
from inbox_poller.models import (
    FINAL_STATES,
    ArchivedFile,
    CycleReport,
    Export,
    ExportState,
    utc_now,
)
from inbox_poller.ports import ArchiveStore, Downloader, Metrics, NoMetrics
from inbox_poller.urlpolicy import redact_url

if TYPE_CHECKING:
    from inbox_poller.ledger.store import Store

logger = logging.getLogger("inbox_poller.loop")

SETTLED_STATES = FINAL_STATES | {ExportState.ARCHIVED}
"""Exports that no attempt will upload again (unless a later mail reopens a final one:
then only what was started after it settled is new)."""

OUTAGE_FIRST_PAUSE_S = 0.5
OUTAGE_MAX_PAUSE_S = 10.0
"""After the archive's store failed for a moment (``ArchiveUnavailable``), the next export
waits 0.5 s, doubling with each failure in a row up to this, before it tries again."""


def outage_pause_s(failures: int) -> float:
    """How long to wait before the next attempt after *failures* outages in a row."""
    if failures <= 0:
        return 0.0
    return float(min(OUTAGE_MAX_PAUSE_S, OUTAGE_FIRST_PAUSE_S * 2 ** (failures - 1)))


class ExportArchiver:
    """Download, verify, publish and record notified exports (``workers`` at a time)."""

    def __init__(
        self,
        store: Store,
        archive: ArchiveStore,
        downloader: Downloader,
        *,
        max_attempts: int,
        clock: Callable[[], datetime] = utc_now,
        stop: threading.Event | None = None,
        metrics: Metrics | None = None,
        hooks: Sequence[str] = (),
        workers: int = 1,
        owner: str | None = None,
        lease: timedelta = LEASE,
    ) -> None:
        self.store = store
        self.archive = archive
        self.downloader = downloader
        self.max_attempts = max_attempts
        self.clock = clock
        self.stop = stop or threading.Event()
        """Set on shutdown: an interrupted download is parked, not failed."""
        self.metrics: Metrics = metrics or NoMetrics()
        self.hooks = tuple(hooks)
        """The hooks queued with each archived export (``loop.hooks``), with its manifest
        line."""
        self.owner = owner or process_owner()
        """Who this process is in the ledger: every export it downloads is claimed for it."""
        self.lease = lease
        self._done: set[tuple[int, str | None]] = set()
        """(export, link) pairs this pass has tried: each is tried once per pass."""
        self._skip: set[int] = set()
        """Exports back in ``notified`` whose current link this pass has tried: not
        claimed again."""
        self._in_flight: set[int] = set()
        """Exports claimed by this archiver whose attempt has not ended."""
        self._claiming = threading.Lock()
        self._one_claim = threading.Lock()
        """Held across a whole claim (see :meth:`claim`); ``_claiming`` guards the sets."""
        self._background: threading.Thread | None = None
        self._background_report = CycleReport()
        self._background_error: BaseException | None = None
        self.workers = workers
        self._outages = 0
        """Attempts in a row that met the archive's outage (every thread's): the next
        waits :func:`outage_pause_s` first, so a daemon does not spin while S3 is down."""
        """How many exports :meth:`process_downloads` downloads at once (``run --once``;
        the daemon's pool has its own threads, ``[daemon] download_workers``)."""

    def remove_stale_parts(self) -> None:
        """Delete part files of downloads a previous process did not finish.

        Parts of ``verified`` exports are kept: they hold a checked payload whose rename
        a crash interrupted, and are finished without downloading again. On a ledger
        only this process works on (SQLite, under its run lock), what the previous one
        left in flight is its own and is claimed again at once (its leases end now). On
        a shared one (PostgreSQL), nothing is swept while another daemon may be writing a
        part (an export is ``downloading``): its leases and parts are its own.
        """
        if not self.store.shared:
            self.store.expire_leases()
        elif self.store.list_exports([ExportState.DOWNLOADING]):
            return
        keep = {
            path
            for export in self.store.list_exports([ExportState.VERIFIED])
            if (path := self.store.part_path(export.export_id))
        }
        for stale in self.archive.remove_leftovers(keep):
            logger.info(
                "archive: removing %s left by an interrupted download", PurePath(stale).name
            )
        self._clear_settled_leftovers()

    def _clear_settled_leftovers(self) -> None:
        """Clear what interrupted uploads left for exports that will not be downloaded
        again (S3: ``.parts/<job_id>/``), which no ``begin`` would ever clear.

        Only exports the ledger says are settled (archived, or in a final state), and only
        what was started before they settled: an upload under way for an export that was
        tried again since, by any daemon, is never touched. An outage skips the sweep; the
        next start sweeps again.
        """
        try:
            jobs = self.archive.leftover_jobs()
        except ArchiveError as exc:
            logger.warning("archive: leftovers not swept: %s", exc)
            return
        for job_id in jobs:
            export = self.store.export_by_job_id(job_id)
            if export is None or export.state not in SETTLED_STATES:
                continue
            try:
                self.archive.clear_leftovers(job_id, export.updated_at)
            except ArchiveError as exc:
                logger.warning("archive: leftovers of job %s not swept: %s", job_id, exc)
                return

    def process_downloads(self, report: CycleReport) -> None:
        """Finish verified exports, then download every notified one, ``workers`` at a time.

        An export whose link failed and that another mail's link took over is downloaded
        again in the same pass, from that link; a link is never tried twice.
        """
        try:
            self._join_background(report)
            self._download_ready(report)
        finally:
            with self._claiming:  # the next pass may try each link again
                self._skip, self._done, self._in_flight = set(), set(), set()

    def start_downloads(self) -> None:
        """Start downloading what is ready on a background thread, unless one is running.

        ``run --once`` calls it after each batch of mail is recorded, so its downloads
        overlap the reading of the rest, as the daemon's pool does; the pass ends with
        :meth:`process_downloads`, which waits for it, reports what it did, and downloads
        what was notified since. One download loop runs at a time, and each (export, link)
        is tried once per pass, as when the pass downloads only at its end.
        """
        if self._background is not None and self._background.is_alive():
            return
        self._join_background(self._background_report)  # a finished one: collect it
        self._background = threading.Thread(
            target=self._download_in_background, name="downloads", daemon=False
        )
        self._background.start()

    def _download_in_background(self) -> None:
        try:
            self._download_ready(self._background_report)
        except BaseException as exc:  # raised in the pass's thread, by _join_background
            self._background_error = exc

    def _join_background(self, report: CycleReport) -> None:
        """Wait for the background downloads; add what they did to *report*; re-raise."""
        background, self._background = self._background, None
        if background is not None:
            try:
                background.join()
            except BaseException:  # Ctrl-C while waiting: the downloads park themselves
                self.stop.set()
                raise
        if report is not self._background_report:
            report.archived += self._background_report.archived
            report.failed += self._background_report.failed
            self._background_report = CycleReport()
        error, self._background_error = self._background_error, None
        if error is not None:
            raise error

    def _download_ready(self, report: CycleReport) -> None:
        """Claim and download ready exports until none is left, on up to ``workers``
        threads, the leases renewed meanwhile.

        Each claimed export is on one thread only, and every step of each is recorded as
        when they run one after another: the ledger and the manifest serialise their
        writes. On an interruption (Ctrl-C) ``stop`` is set, so the downloads under way
        park themselves (``notified``, the attempt not counted) before it is raised.
        """
        done: list[tuple[int, CycleReport]] = []
        with Heartbeat(self.store, self.owner, self.lease, clock=self.clock).running():
            if self.workers <= 1:
                self._claim_all(done)
            else:
                with ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix="download"
                ) as pool:
                    try:
                        list(pool.map(self._claim_all, [done] * self.workers))
                    except BaseException:
                        self.stop.set()
                        raise
        for _, each in sorted(done, key=lambda pair: pair[0]):  # in the exports' order
            report.archived += each.archived
            report.failed += each.failed

    def _claim_all(self, done: list[tuple[int, CycleReport]]) -> None:
        while not self.stop.is_set() and (export := self.claim()) is not None:
            each = CycleReport()
            done.append((export.export_id, each))
            self.download_export(export, each)
            self.tried(export)

    def claim(self) -> Export | None:
        """Claim the next export to download for this process, one this pass has not
        tried with its current link; None when nothing is ready.

        The claims of this process's threads run one at a time: a skip list copied while
        another thread's claim was under way could miss the export that claim takes, and
        let this one take it again once its attempt ended, a second attempt in one pass.
        """
        with self._one_claim:
            with self._claiming:
                skip = set(self._skip)
            export = self.store.claim_download(self.owner, self.clock(), self.lease, skip=skip)
            if export is not None:
                with self._claiming:
                    self._skip.add(export.export_id)
                    self._in_flight.add(export.export_id)
                    self._done.add((export.export_id, export.download_url))
        return export

    def tried(self, export: Export) -> None:
        """After an attempt: an export back in ``notified`` with the link just tried stays
        skipped for the rest of the pass; any other is dropped from the skip list (one
        another mail's link took over may be claimed again: a link is never tried twice),
        so the list stays as short as the exports waiting for their next pass."""
        after = self.store.get_export(export.export_id)
        with self._claiming:
            self._in_flight.discard(export.export_id)
            again = (after.export_id, after.download_url) in self._done
            if after.state is not ExportState.NOTIFIED or not again:
                self._skip.discard(after.export_id)

    def abandoned(self, export: Export) -> None:
        """After an attempt cut off without an outcome (the ledger was unavailable): the
        export is no longer in flight here, and may be claimed again once it is handed
        back (``Store.release_claim``); nothing is read from the ledger."""
        with self._claiming:
            self._in_flight.discard(export.export_id)
            self._skip.discard(export.export_id)

    def forget_tried(self) -> None:
        """Start a new round: every ready export may be claimed again (the daemon's pool);
        the attempts still under way keep their marks until they end."""
        with self._claiming:
            self._skip = set(self._in_flight)
            self._done = {(i, link) for i, link in self._done if i in self._in_flight}

    def download_export(self, export: Export, report: CycleReport) -> None:
        """Bring one export to ``archived``; failures are recorded, logged and reported."""
        step = self._finish_verified if export.state is ExportState.VERIFIED else self._download
        if self._outages and self.stop.wait(outage_pause_s(self._outages)):
            return  # stopping: the export stays as it is, for the next start
        try:
            with log_context(export_id=export.export_id, job_id=export.job_id):
                step(export, report)
            self._outages = 0
        except LedgerUnavailable:
            raise  # not the export's failure: it resumes from its state once the ledger is back
        except LeaseLost as exc:  # another daemon owns the export now: not a failure of it
            self._failed(export, exc, None)
        except ArchiveUnavailable as exc:
            self._outages += 1
            self._failed(export, exc, report)
        except InboxPollerError as exc:
            self._failed(export, exc, report)

    def _failed(self, export: Export, exc: InboxPollerError, report: CycleReport | None) -> None:
        """Log and count a failed attempt; *report* it unless it was not the export's."""
        logger.error(
            "export %d (job %s): %s",
            export.export_id,
            export.job_id,
            exc,
            extra={"export_id": export.export_id, "job_id": export.job_id},
        )
        self.metrics.failure("download", exc)
        if report is not None:
            report.failed.append(f"job {export.job_id}: {exc}")

    def _download(self, export: Export, report: CycleReport) -> None:
        """Download an export claimed for this process (its attempt counted by the claim)."""
        assert export.download_url is not None
        if export.attempts > self.max_attempts:
            self._give_up(export)
        crash_point("download:after-start")
        logger.info(
            "export %d (job %s): downloading %s (attempt %d)",
            export.export_id,
            export.job_id,
            redact_url(export.download_url or ""),
            export.attempts,
            extra={"export_id": export.export_id, "job_id": export.job_id},
        )
        try:
            part = self.archive.begin(export)
        except ArchiveUnavailable as exc:
            self._archive_unavailable(export, exc)
            raise
        try:
            result = self.downloader.download(
                export.download_url or "", part, expected=export.request.format
            )
            part.seal()
        except LinkExpired as exc:
            part.discard()
            self._next_link(
                self.store.mark_link_expired(
                    export.export_id, str(exc), self.clock(), owner=self.owner
                )
            )
            raise
        except (DownloadError, ArchiveError) as exc:
            part.discard()
            if self.stop.is_set():
                self.store.mark_download_parked(export.export_id, self.clock(), owner=self.owner)
                logger.info(
                    "export %d (job %s): download interrupted by shutdown; resumes at next start",
                    export.export_id,
                    export.job_id,
                    extra={"export_id": export.export_id, "job_id": export.job_id},
                )
                return
            if isinstance(exc, ArchiveUnavailable):
                self._archive_unavailable(export, exc)
                raise
            self._download_failed(export, exc)
            raise
        except Exception as exc:  # a bug, or MemoryError: the attempt still counts
            part.discard()
            self._unexpected_failure(export, exc, report)
            return
        except BaseException:  # the process is ending: the attempt stays counted
            part.discard()
            raise
        archived = self.archive.describe(export, result)
        try:
            self.store.mark_verified(
                export.export_id, part.location, archived, self.clock(), owner=self.owner
            )
        except LeaseLost:
            part.discard()  # the new owner downloads its own
            raise
        except LedgerUnavailable as exc:
            if not exc.outcome_unknown:  # not recorded: the next attempt downloads again
                part.discard()
            raise
        crash_point("download:after-verified")
        self._publish(
            export.export_id, part.location, archived, report, download_s=result.elapsed_s
        )

    def _give_up(self, export: Export) -> None:
        """Fail an export whose attempts are used up, before starting another one.

        Every attempt is counted when it starts (its claim), so an attempt that ended
        without an outcome (the process killed, out of memory) counts too, and no failure
        mode retries forever (docs/reliability.md §3.2). The claim that finds them used
        up counted one more, which was never started: it is taken back.
        """
        unfinished = (export.reason or "").startswith("taken over by")
        reason = (
            f"gave up after {export.attempts - 1} attempts (download.max_attempts = "
            f"{self.max_attempts})"
            + ("; the last one ended without an outcome" if unfinished else "")
        )
        self.store.mark_failed(
            export.export_id, reason, self.clock(), owner=self.owner, unstarted=True
        )
        raise DownloadError(reason)

    def _unexpected_failure(self, export: Export, exc: Exception, report: CycleReport) -> None:
        """Record an unexpected error as a failed attempt, logged once with its traceback."""
        detail = f": {exc}" if str(exc) else ""
        error = DownloadTransient(f"unexpected {type(exc).__name__} during the download{detail}")
        self._download_failed(export, error)
        logger.error(
            "export %d (job %s): %s",
            export.export_id,
            export.job_id,
            self.store.get_export(export.export_id).reason,
            exc_info=exc,
            extra={"export_id": export.export_id, "job_id": export.job_id},
        )
        report.failed.append(f"job {export.job_id}: {error}")

    def _download_failed(self, export: Export, exc: InboxPollerError) -> None:
        attempts_left = export.attempts < self.max_attempts
        # a download's own failure is its link's: another link may still work; a full
        # disk (ArchiveError) is not, and no other link is tried for it
        link = isinstance(exc, DownloadError)
        if exc.retryable and attempts_left:
            self.store.mark_download_retry(
                export.export_id, str(exc), self.clock(), owner=self.owner
            )
            return
        reason = f"{exc} (gave up after {export.attempts} attempts)" if exc.retryable else str(exc)
        failed = self.store.mark_failed(
            export.export_id, reason, self.clock(), link_failed=link, owner=self.owner
        )
        self._next_link(failed)

    def _archive_unavailable(self, export: Export, exc: ArchiveUnavailable) -> None:
        """The archive's store failed for a moment (an S3 outage, after the client's own
        retries): the export goes back to ``notified`` with the attempt not counted, as on
        shutdown, so an outage longer than ``download.max_attempts`` passes loses nothing;
        the link was not at fault. The next pass downloads it again."""
        self.store.mark_download_parked(
            export.export_id, self.clock(), f"the archive is unavailable: {exc}", owner=self.owner
        )

    def _next_link(self, export: Export) -> None:
        """Say so when another mail's link took over from the one that just failed."""
        if export.state is ExportState.NOTIFIED:
            logger.info(
                "export %d (job %s): its link failed; trying the link of mail %s next",
                export.export_id,
                export.job_id,
                export.mail,
                extra={"export_id": export.export_id, "job_id": export.job_id},
            )

    def _finish_verified(self, export: Export, report: CycleReport) -> None:
        """Resume an export that crashed between verification and the ledger's ``archived``
        (this process's, or a dead daemon's taken over: its part may not be visible here,
        and then the payload is downloaded again)."""
        archived = export.archived
        assert archived is not None
        part = self.store.part_path(export.export_id)
        if self.archive.verify(archived):
            if part:
                self.archive.drop_part(part)  # on S3 a copy, not a rename: the part stays
            self._publish(export.export_id, None, archived, report)
        elif part and self.archive.verify(archived, part):
            self._publish(export.export_id, part, archived, report)
        else:
            self.store.mark_redownload(
                export.export_id,
                "the verified payload is gone; downloading again",
                self.clock(),
                owner=self.owner,
            )
            again = self.store.mark_downloading(export.export_id, self.clock(), owner=self.owner)
            if again.attempts > self.max_attempts:
                self._give_up(again)
            self._download(again, report)

    def _publish(
        self,
        export_id: int,
        part: str | None,
        archived: ArchivedFile,
        report: CycleReport,
        *,
        download_s: float | None = None,
    ) -> None:
        """Rename the part into place (unless it is there), append the manifest, record.

        *download_s* is how long the download took; None when a restart only finishes a
        verified payload.
        """
        # a whole lease to publish in: a daemon that lost its lease stops before
        # anything it cannot undo, and nobody takes the export over meanwhile
        self.store.hold(export_id, self.owner, self.clock(), self.lease)
        if part is not None:
            self.archive.publish(part, archived)
        export = self.store.get_export(export_id)
        now = self.clock()
        self.archive.append_manifest(
            export,
            archived,
            now,
            lambda offset: self.store.record_manifest_offset(export_id, offset, owner=self.owner),
        )
        crash_point("download:after-manifest")
        event = manifest_json(manifest_line(export, archived, now)) if self.hooks else ""
        export = self.store.mark_archived(
            export_id, now, hooks=self.hooks, event=event, owner=self.owner
        )
        report.archived.append(str(export.job_id))
        since = export.submitted_at or export.created_at
        waited_s = (export.archived_at - since).total_seconds() if export.archived_at else None
        self.metrics.export_archived(
            export.request.method, archived.bytes, download_s=download_s, waited_s=waited_s
        )
        logger.info(
            "export %d (job %s): archived %s (%d bytes, %s records, sha256 %s%s)",
            export_id,
            export.job_id,
            archived.path,
            archived.bytes,
            "?" if archived.records is None else archived.records,
            archived.sha256,
            "" if download_s is None else f", downloaded in {download_s:.2f} s",
            extra={
                "export_id": export_id,
                "job_id": export.job_id,
                "path": archived.path,
                "bytes": archived.bytes,
                "records": archived.records,
                "sha256": archived.sha256,
                "duration_s": None if download_s is None else round(download_s, 3),
            },
        )
