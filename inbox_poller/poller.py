"""One pass of the loop: submit, read the mailbox, match, download, archive, acknowledge.

The Protocols below are the contracts the core holds its edges to. Each edge
module (``mailbox``, ``api``, ``download``, ``archive``, ``store``) implements
one of them; tests substitute fakes that implement the same Protocols.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from inbox_poller.crashpoints import crash_point
from inbox_poller.errors import (
    ArchiveError,
    DownloadError,
    ExtractError,
    InboxPollerError,
    LinkExpired,
    MailboxError,
    StoreError,
)
from inbox_poller.extract import extract
from inbox_poller.jobids import TOKEN_RE
from inbox_poller.match import match_notification
from inbox_poller.models import (
    ArchivedFile,
    CycleReport,
    DownloadResult,
    Export,
    ExportState,
    FetchedMail,
    Link,
    MailboxStatus,
    MailKey,
    MailOutcome,
    MailRecord,
    Match,
    Notification,
    utc_now,
)
from inbox_poller.sender import SenderPolicy, check_sender
from inbox_poller.urlpolicy import HostRule, redact_url

if TYPE_CHECKING:
    from inbox_poller.archive import Archive
    from inbox_poller.store import Store

logger = logging.getLogger(__name__)


class Mailbox(Protocol):
    """The dedicated notification mailbox (``mailbox.ImapMailbox``)."""

    def open(self) -> MailboxStatus:
        """Connect, log in and select the folder read-write.

        Creates ``processed_folder`` when it is configured and missing.
        :raises MailboxLoginError: the credentials are refused.
        :raises MailboxError: anything else (connection, TLS, protocol).
        """
        ...

    def fetch_new(self, after_uid: int) -> Iterator[FetchedMail]:
        """Yield the messages with UID > *after_uid*, in ascending UID order.

        Each message's ``RFC822.SIZE`` is checked before its body is retrieved
        with ``BODY.PEEK[]`` (which never sets ``\\Seen``); larger ones come
        with ``raw=None``. UIDs are retrieved in chunks of at most 5,000.
        :raises MailboxError:
        """
        ...

    def acknowledge(self, key: MailKey, message_id: str | None) -> str:
        """Mark one handled mail: keyword (when allowed), then move (when configured).

        When *key*'s UIDVALIDITY is not the folder's current one, the message is
        looked up by its Message-ID instead. Idempotent: a mail already marked or
        already moved is not an error. Returns what was done, for the log:
        ``"keyword"``, ``"moved"``, ``"keyword, moved"``, ``"not found"`` or
        ``"ledger only"`` (no keyword allowed and no processed folder).
        :raises MailboxError:
        """
        ...

    def close(self) -> None:
        """Log out; never raises."""
        ...


class PayloadSink(Protocol):
    """Where a download writes the decoded payload (``archive.PartFile``)."""

    def write(self, data: bytes) -> None:
        """Append *data*. :raises ArchiveError:"""
        ...

    def restart(self) -> None:
        """Discard everything written so far (a retry starts from byte zero)."""
        ...

    def read_back(self) -> BinaryIO:
        """Open what was written so far for reading from its start (slow-path validation)."""
        ...


class Downloader(Protocol):
    """The safe HTTPS fetcher (``download.SafeDownloader``)."""

    def download(self, url: str, sink: PayloadSink) -> DownloadResult:
        """Fetch *url* into *sink*, validating the JSON to its end.

        :raises DownloadRefused: the URL, a redirect or a resolved address is not allowed
            (raised before any connection to it).
        :raises LinkExpired: 403, 404 or 410.
        :raises PayloadTooLarge: over ``download.max_bytes`` (declared or decoded).
        :raises PayloadInvalid: not one complete JSON document.
        :raises DownloadTransient: 5xx/429/reset/timeout/truncation after the retries.
        """
        ...


# ---- the core loop -------------------------------------------------------------

_MAX_SUMMARY_TOKENS = 5000
LAST_POLL_KEY = "last_poll_at"
"""Ledger key of the last successful mailbox pass (``status`` and ``STATUS=`` read it)."""
DEFAULT_REMATCH_WINDOW = timedelta(days=7)
"""How long an unmatched mail is kept for re-matching (its export may not be known yet)."""


def summarize(notification: Notification) -> dict[str, Any]:
    """Keep what re-matching an unmatched mail needs, bounded in size.

    Matching looks for known job IDs as whole tokens, so the distinct tokens
    that contain a digit are enough; the body itself is never stored.
    """
    tokens: dict[str, None] = {}
    for text in (notification.subject, *notification.texts):
        for token in TOKEN_RE.findall(text):
            if any(ch.isdigit() for ch in token):
                tokens.setdefault(token.rstrip("._-"), None)
            if len(tokens) >= _MAX_SUMMARY_TOKENS:
                break
    return {
        "message_id": notification.message_id,
        "sender": notification.sender,
        "subject": notification.subject[:500],
        "tokens": list(tokens),
        "links": [
            [link.url, link.text[:200], link.source, link.via] for link in notification.links[:200]
        ],
        "candidates": list(notification.candidate_job_ids),
    }


def notification_from_summary(summary: dict[str, Any]) -> Notification:
    """Rebuild a matchable ``Notification`` from :func:`summarize`'s output.

    Links are ``[url, text, source, via]``. Rows stored before ``via`` existed hold
    ``[url, text, source]``: the extractor put each unwrapped link after the link it
    came from, so ``via`` is taken to be the nearest link above it that is not unwrapped.
    """
    links: list[Link] = []
    wrapper: str | None = None
    for url, text, source, *rest in summary.get("links", []):
        via = rest[0] if rest else (wrapper if source == "unwrapped" else None)
        links.append(Link(url, text, source, via))
        if source != "unwrapped":
            wrapper = url
    return Notification(
        message_id=summary.get("message_id"),
        sender=summary.get("sender"),
        subject=summary.get("subject", ""),
        texts=(" ".join(summary.get("tokens", [])),),
        links=tuple(links),
        candidate_job_ids=tuple(summary.get("candidates", [])),
    )


_MAX_EXPLAINED_LINKS = 3


def explain(match: Match) -> str:
    """Return the match's reason, plus why its links were refused when it was refused."""
    if match.outcome is not MailOutcome.REFUSED:
        return match.reason
    refused = [v for v in match.links if not v.kept]
    if not refused:
        return match.reason
    shown = "; ".join(f"{redact_url(v.url)}: {v.reason}" for v in refused[:_MAX_EXPLAINED_LINKS])
    more = (
        f"; and {len(refused) - _MAX_EXPLAINED_LINKS} more"
        if len(refused) > _MAX_EXPLAINED_LINKS
        else ""
    )
    return f"{match.reason} (refused links: {shown}{more})"


@dataclass(frozen=True)
class PollerSettings:
    """The few knobs the core loop needs, sliced from the configuration."""

    rules: tuple[HostRule, ...]
    keyword: str = "$ExportArchived"
    max_download_attempts: int = 5
    rematch_window: timedelta = DEFAULT_REMATCH_WINDOW
    sender_policy: SenderPolicy | None = None
    """When set, only mail whose sender is authenticated for these domains is acted on."""


class Poller:
    """One pass of the loop over injected edges. ``cli.py`` builds it; tests use fakes."""

    def __init__(
        self,
        store: Store,
        archive: Archive,
        settings: PollerSettings,
        *,
        mailbox: Mailbox | None = None,
        downloader: Downloader | None = None,
        clock: Callable[[], datetime] = utc_now,
        stop: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.archive = archive
        self.settings = settings
        self.mailbox = mailbox
        self.downloader = downloader
        self.clock = clock
        self.stop = stop or threading.Event()
        """Set by the daemon on shutdown: an interrupted download is parked, not failed."""

    # ---- one pass ------------------------------------------------------------

    def run_once(self) -> CycleReport:
        """Read new mail, download and archive what was notified, acknowledge what is done."""
        report = CycleReport()
        self.remove_stale_parts()
        status = self._open_mailbox(report)
        if status is not None:
            try:
                self.read_mail(status, report)
            except MailboxError:
                status = None  # reported; acknowledgements wait for the next pass
        self.process_downloads(report)
        if status is not None:
            self.acknowledge(report)
        self.close()
        return report

    def close(self) -> None:
        """Log out of the mailbox (if open); never raises."""
        if self.mailbox is not None:
            self.mailbox.close()

    def remove_stale_parts(self) -> None:
        """Delete part files of downloads a previous process did not finish."""
        keep = {
            Path(path).resolve()
            for export in self.store.list_exports([ExportState.VERIFIED])
            if (path := self.store.part_path(export.export_id))
        }
        for stale in self.archive.stale_parts(keep):
            logger.info("archive: removing %s left by an interrupted download", stale.name)
            stale.unlink(missing_ok=True)

    def _open_mailbox(self, report: CycleReport) -> MailboxStatus | None:
        if self.mailbox is None:
            return None
        try:
            return self.mailbox.open()
        except MailboxError as exc:
            logger.error("mailbox: %s", exc)
            report.failed.append(f"mailbox: {exc}")
            return None

    def read_mail(self, status: MailboxStatus, report: CycleReport) -> None:
        """Process every mail above the watermark of the open mailbox, then re-match.

        :raises MailboxError: after recording it in *report* (the daemon's watcher
            reconnects; ``run_once`` goes on with the downloads).
        """
        assert self.mailbox is not None
        try:
            after = self.store.watermark(status.folder, status.uidvalidity)
            if after == 0 and self.store.watermark_count(status.folder) > 0:
                logger.warning(
                    "mailbox %s: UIDVALIDITY is now %d: rescanning; mail already handled is"
                    " recognised by its Message-ID and not downloaded again",
                    status.folder,
                    status.uidvalidity,
                )
            for fetched in self.mailbox.fetch_new(after):
                report.mails_seen += 1
                try:
                    self._process_mail(fetched, report)
                except (ExtractError, StoreError) as exc:
                    logger.error("uid %s: %s", fetched.key, exc, extra={"uid": str(fetched.key)})
                    report.failed.append(f"mail {fetched.key}: {exc}")
            self._rematch(report)
            self.store.set_daemon_value(LAST_POLL_KEY, self.clock().isoformat())
        except MailboxError as exc:
            logger.error("mailbox: %s", exc)
            report.failed.append(f"mailbox: {exc}")
            raise

    def _process_mail(self, fetched: FetchedMail, report: CycleReport) -> None:
        now = self.clock()
        key = fetched.key
        if fetched.raw is None:
            reason = f"{fetched.size} bytes is larger than imap.max_message_bytes; not read"
            self._record(MailRecord(key, None, MailOutcome.REFUSED, reason, now), report)
            return
        try:
            notification = extract(fetched.raw)
        except ExtractError as exc:
            self._record(MailRecord(key, None, MailOutcome.REFUSED, str(exc), now), report)
            return
        if self.settings.sender_policy is not None:
            untrusted = check_sender(notification, self.settings.sender_policy)
            if untrusted is not None:
                reason = f"sender not authenticated: {untrusted}"
                refused = MailRecord(key, notification.message_id, MailOutcome.REFUSED, reason, now)
                self._record(refused, report)
                return
        earlier = self._earlier_copy(notification.message_id, key)
        if earlier is not None:
            # the same mail under a new UID (UIDVALIDITY change, or copied back): never
            # download again; mark it once its export is archived
            acknowledged = now if self.settings.keyword in fetched.flags else None
            record = MailRecord(
                key,
                notification.message_id,
                MailOutcome.DUPLICATE,
                f"same Message-ID as mail {earlier.key}",
                now,
                export_id=earlier.export_id,
                job_ids=earlier.job_ids,
                acknowledged_at=acknowledged,
            )
            self._record(record, report)
            return
        match = match_notification(notification, self.store.list_exports(), self.settings.rules)
        record = MailRecord(
            key,
            notification.message_id,
            match.outcome,
            explain(match),
            now,
            export_id=match.export_id,
            job_ids=match.job_ids,
        )
        summary = summarize(notification) if match.outcome is MailOutcome.UNMATCHED else None
        self._record(record, report, summary=summary, match=match)

    def _earlier_copy(self, message_id: str | None, key: MailKey) -> MailRecord | None:
        if not message_id:
            return None
        linked = (MailOutcome.MATCHED, MailOutcome.DUPLICATE)
        for record in self.store.mail_by_message_id(message_id):
            if record.key != key and record.export_id is not None and record.outcome in linked:
                return record
        return None

    def _adopted_job_id(self, match: Match) -> str | None:
        if match.outcome is not MailOutcome.MATCHED or match.export_id is None:
            return None
        export = self.store.get_export(match.export_id)
        return match.job_id if export.job_id is None else None

    def _record(
        self,
        record: MailRecord,
        report: CycleReport,
        *,
        summary: dict[str, Any] | None = None,
        match: Match | None = None,
        rematch: bool = False,
    ) -> None:
        url = match.download_url if match else None
        adopt = self._adopted_job_id(match) if match else None
        crash_point("mail:before-record")
        if rematch:
            self.store.rematch_mail(record, self.clock(), download_url=url, adopt_job_id=adopt)
        else:
            self.store.record_mail(
                record, self.clock(), summary=summary, download_url=url, adopt_job_id=adopt
            )
        crash_point("mail:after-record")
        self._log_mail(record, match, url, report)

    def _log_mail(
        self, record: MailRecord, match: Match | None, url: str | None, report: CycleReport
    ) -> None:
        job = match.job_id if match and match.job_id else ",".join(record.job_ids) or "-"
        keys = {"uid": str(record.key), "job_id": job, "export_id": record.export_id}
        if record.outcome is MailOutcome.MATCHED:
            report.matched.append(job)
            logger.info(
                "uid %s: notification for export %s (job %s), link %s",
                record.key,
                record.export_id,
                job,
                redact_url(url or ""),
                extra=keys,
            )
        elif record.outcome is MailOutcome.DUPLICATE:
            logger.info(
                "uid %s: duplicate notification for export %s (job %s): %s; it will be"
                " acknowledged without downloading",
                record.key,
                record.export_id,
                job,
                record.reason,
                extra=keys,
            )
        elif record.outcome is MailOutcome.UNMATCHED:
            report.unmatched += 1
            logger.info(
                "uid %s: left in place, no matching export: %s",
                record.key,
                record.reason,
                extra=keys,
            )
        else:
            report.refused.append(f"{record.key}: {record.reason}")
            logger.warning(
                "uid %s: refused (job %s): %s", record.key, job, record.reason, extra=keys
            )

    def _rematch(self, report: CycleReport) -> None:
        waiting = self.store.list_exports(
            [ExportState.SUBMITTED, ExportState.SUBMITTING, ExportState.SUBMIT_UNKNOWN]
        )
        if not waiting:
            return
        now = self.clock()
        exports = self.store.list_exports()
        # a mail can only be claimed by an export that existed when it arrived, so mail
        # older than the oldest waiting export is never worth re-reading
        since = max(now - self.settings.rematch_window, min(e.created_at for e in waiting))
        for record, summary in self.store.unmatched_mails(since):
            # only exports that existed when the mail arrived may claim it
            known = [e for e in exports if e.created_at <= record.seen_at]
            match = match_notification(
                notification_from_summary(summary), known, self.settings.rules
            )
            if match.outcome is MailOutcome.UNMATCHED:
                continue
            updated = MailRecord(
                record.key,
                record.message_id,
                match.outcome,
                f"re-matched: {match.reason}",
                record.seen_at,
                export_id=match.export_id,
                job_ids=match.job_ids,
            )
            self._record(updated, report, match=match, rematch=True)
            exports = self.store.list_exports()

    # ---- downloads -------------------------------------------------------------

    def process_downloads(self, report: CycleReport) -> None:
        """Finish verified exports, then download every notified one, one after another."""
        for export in self.store.list_exports([ExportState.VERIFIED]):
            self.download_export(export, report)
        for export in self.store.list_exports([ExportState.NOTIFIED, ExportState.DOWNLOADING]):
            self.download_export(export, report)

    def download_export(self, export: Export, report: CycleReport) -> None:
        """Bring one export to ``archived``; failures are recorded, logged and reported."""
        step = self._finish_verified if export.state is ExportState.VERIFIED else self._download
        try:
            step(export, report)
        except InboxPollerError as exc:
            logger.error(
                "export %d (job %s): %s",
                export.export_id,
                export.job_id,
                exc,
                extra={"export_id": export.export_id, "job_id": export.job_id},
            )
            report.failed.append(f"job {export.job_id}: {exc}")

    def _download(self, export: Export, report: CycleReport) -> None:
        if self.downloader is None:
            return
        assert export.download_url is not None
        export = self.store.mark_downloading(export.export_id, self.clock())
        crash_point("download:after-start")
        logger.info(
            "export %d (job %s): downloading %s (attempt %d)",
            export.export_id,
            export.job_id,
            redact_url(export.download_url or ""),
            export.attempts,
            extra={"export_id": export.export_id, "job_id": export.job_id},
        )
        part = self.archive.begin(export)
        try:
            result = self.downloader.download(export.download_url or "", part)
            part.seal()
        except LinkExpired as exc:
            part.discard()
            self.store.mark_link_expired(export.export_id, str(exc), self.clock())
            raise
        except (DownloadError, ArchiveError) as exc:
            part.discard()
            if self.stop.is_set():
                self.store.mark_download_parked(export.export_id, self.clock())
                logger.info(
                    "export %d: download interrupted by shutdown; resumes at next start",
                    export.export_id,
                )
                return
            self._download_failed(export, exc)
            raise
        except BaseException:
            part.discard()
            raise
        archived = self.archive.describe(export, result)
        self.store.mark_verified(export.export_id, str(part.path), archived, self.clock())
        crash_point("download:after-verified")
        self._publish(export.export_id, part.path, archived, report)

    def _download_failed(self, export: Export, exc: InboxPollerError) -> None:
        attempts_left = export.attempts < self.settings.max_download_attempts
        if exc.retryable and attempts_left:
            self.store.mark_download_retry(export.export_id, str(exc), self.clock())
        elif exc.retryable:
            reason = f"{exc} (gave up after {export.attempts} attempts)"
            self.store.mark_failed(export.export_id, reason, self.clock())
        else:
            self.store.mark_failed(export.export_id, str(exc), self.clock())

    def _finish_verified(self, export: Export, report: CycleReport) -> None:
        """Resume an export that crashed between verification and the ledger's ``archived``."""
        archived = export.archived
        assert archived is not None
        part = self.store.part_path(export.export_id)
        if self.archive.verify(archived):
            self._publish(export.export_id, None, archived, report)
        elif part and self.archive.verify(archived, Path(part)):
            self._publish(export.export_id, Path(part), archived, report)
        else:
            self.store.mark_redownload(
                export.export_id, "the verified payload is gone; downloading again", self.clock()
            )

    def _publish(
        self, export_id: int, part: Path | None, archived: ArchivedFile, report: CycleReport
    ) -> None:
        if part is not None:
            self.archive.publish(part, archived)
        export = self.store.get_export(export_id)
        self.archive.append_manifest(export, archived, self.clock())
        crash_point("download:after-manifest")
        export = self.store.mark_archived(export_id, self.clock())
        report.archived.append(str(export.job_id))
        logger.info(
            "export %d (job %s): archived %s (%d bytes, %s records, sha256 %s)",
            export_id,
            export.job_id,
            archived.path,
            archived.bytes,
            "?" if archived.records is None else archived.records,
            archived.sha256,
            extra={"export_id": export_id, "job_id": export.job_id},
        )

    # ---- acknowledgement -----------------------------------------------------------

    def acknowledge(self, report: CycleReport) -> None:
        """Mark every mail whose export is archived; stops at the first mailbox failure."""
        assert self.mailbox is not None
        for mail in self.store.mails_to_acknowledge():
            try:
                crash_point("ack:before-mark")
                result = self.mailbox.acknowledge(mail.key, mail.message_id)
                crash_point("ack:after-mark")
                self.store.mark_mail_acknowledged(mail.key, result, self.clock())
            except MailboxError as exc:
                logger.error("uid %s: cannot acknowledge: %s", mail.key, exc)
                report.failed.append(f"mail {mail.key}: {exc}")
                return
            report.acknowledged += 1
            logger.info(
                "uid %s: acknowledged (%s)",
                mail.key,
                result,
                extra={"uid": str(mail.key), "export_id": mail.export_id},
            )
