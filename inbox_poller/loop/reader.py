"""Reading new mail: extract, check the sender, match, and record each mail once.

Every mail above the ledger's watermark is read once, judged, and recorded together with
the watermark's advance (and, for a match, its export's ``notified``) in one
transaction: a crash keeps all of it or none, and the mail is then simply read again.
Mail that matches nothing is remembered as a summary (never its body) and re-matched on
later passes, because its export may not be in the ledger yet. Each mail is read in a
worker process within a time and memory budget (``budget.py``): a mail over it is
recorded as refused, so that the next one is read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from inbox_poller.crashpoints import crash_point
from inbox_poller.errors import (
    ExtractError,
    LedgerUnavailable,
    MailboxError,
    ReaderUnavailable,
    StoreError,
)
from inbox_poller.ledger.keys import LAST_POLL_KEY
from inbox_poller.loop.budget import MailBudget
from inbox_poller.matching.jobids import ascii_lower, id_key
from inbox_poller.matching.match import (
    MATCHABLE_STATES,
    RETRY_STATES,
    MatchOptions,
    awaiting_link,
    match_notification,
    mention_keys,
    mentioned_exports,
)
from inbox_poller.matching.sender import SenderPolicy, check_sender
from inbox_poller.matching.summary import explain, notification_from_summary, summarize
from inbox_poller.models import (
    FINAL_STATES,
    CycleReport,
    Export,
    FetchedMail,
    MailboxStatus,
    MailKey,
    MailOutcome,
    MailRecord,
    MailSummary,
    Match,
    Notification,
    Pairing,
    utc_now,
)
from inbox_poller.ports import Mailbox
from inbox_poller.urlpolicy import HostRule, redact_url

if TYPE_CHECKING:
    from inbox_poller.ledger.store import Store

logger = logging.getLogger("inbox_poller.loop")

DEFAULT_REMATCH_WINDOW = timedelta(days=7)
"""How long an unmatched mail is kept for re-matching (its export may not be known yet)."""
FIRST_RECORD_BATCH = 8
RECORD_BATCH = 200
RECORD_BATCH_S = 0.25
"""Mails read are recorded in one ledger transaction, up to ``RECORD_BATCH`` of them or
what was read within ``RECORD_BATCH_S`` of the first (so a quiet pass records its one mail
at once, and a backlog pays one fsync per batch, not per mail). A pass's first batch
holds at most ``FIRST_RECORD_BATCH`` mails and each next one at most twice the last: a
backlog's downloads start after its first few mails are read, not after the first
quarter of a second."""
FIRST_PASS_MARGIN = timedelta(days=1)
"""On a folder's first pass (no watermark for its UIDVALIDITY), mail the server dates more
than this before the oldest export that can still take a notification is skipped by the
server (``SEARCH SINCE``), never read: it cannot be that export's notification. The margin
covers up to 12 hours of difference between this host's clock and the server's, in any
time zone (SINCE compares the internal date's day, as the server's zone has it)
(docs/reliability.md §2.9)."""


@dataclass(frozen=True)
class ReaderSettings:
    """What reading mail needs from the configuration (``wiring.reader_settings``)."""

    rules: tuple[HostRule, ...]
    """``download.allowed_hosts``: which links may be a download link."""
    keyword: str
    """``imap.keyword``: a duplicate that already carries it counts as acknowledged."""
    sender_policy: SenderPolicy | None = None
    """When set, only mail whose sender is authenticated for these domains is acted on."""
    rematch_window: timedelta = DEFAULT_REMATCH_WINDOW
    by_elimination: bool = True
    """``[matching] by_elimination``: a mail with no job ID may go to the only waiting export."""

    def options(
        self, *, authenticated: bool, resubmitted: frozenset[int] = frozenset()
    ) -> MatchOptions:
        """The matching switches for a mail that did (or did not) pass the ``[sender]`` check.

        A job ID is adopted for an export whose submit answer was lost only from an
        authenticated sender while the check is on (docs/matching.md §6).
        """
        return MatchOptions(
            by_elimination=self.by_elimination,
            may_adopt=self.sender_policy is None or authenticated,
            resubmitted=resubmitted,
        )


class KnownExports:
    """The ledger's exports, kept current from its ``events`` and indexed by job ID.

    Matching one mail needs every export only when the mail names none of them; a
    backlog of notifications names one each. Reading all exports for every mail made a
    backlog of n mails cost O(n²) (list and job-ID scan per mail); here each mail reads
    only the exports changed since the last one (``Store.exports_changed_since``) and the
    few its text can name (``match.mention_keys``).
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._mark = -1
        self._by_id: dict[int, Export] = {}
        self._by_key: dict[str, set[int]] = {}
        self._replaced: set[int] = set()

    def refresh(self) -> None:
        """Read what changed in the ledger since the last call (everything, the first time)."""
        if self._mark < 0:
            self._mark = self._store.last_event_id()
            changed = self._store.list_exports()
        else:
            self._mark, changed = self._store.exports_changed_since(self._mark)
        for export in changed:
            old = self._by_id.get(export.export_id)
            if old is not None and old.job_id != export.job_id:
                self._unindex(old)
            self._by_id[export.export_id] = export
            if export.job_id:
                for key in {id_key(export.job_id), ascii_lower(export.job_id)} - {None}:
                    assert key is not None
                    self._by_key.setdefault(key, set()).add(export.export_id)
            if export.replaces is not None:
                self._replaced.add(export.replaces)

    def _unindex(self, export: Export) -> None:
        if export.job_id:
            for key in {id_key(export.job_id), ascii_lower(export.job_id)} - {None}:
                assert key is not None
                self._by_key.get(key, set()).discard(export.export_id)

    def all(self) -> list[Export]:
        """Every export, oldest first (as ``Store.list_exports``)."""
        return sorted(self._by_id.values(), key=lambda e: e.export_id)

    def named_by(self, keys: set[str]) -> list[Export]:
        """The exports whose job ID is under one of *keys* (``match.mention_keys``)."""
        ids = sorted({i for key in keys for i in self._by_key.get(key, ())})
        return [self._by_id[i] for i in ids]

    @property
    def replaced(self) -> frozenset[int]:
        """Every export some later export resubmitted."""
        return frozenset(self._replaced)


class MailReader:
    """Read, judge and record new mail; re-match what matched nothing yet."""

    def __init__(
        self,
        store: Store,
        settings: ReaderSettings,
        *,
        clock: Callable[[], datetime] = utc_now,
        budget: MailBudget | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.budget = budget or MailBudget()
        """Where each mail is read: a worker process, within limits of time and memory."""
        self.known = KnownExports(store)
        self._deferred: list[tuple[MailRecord, Match | None, list[Pairing]]] | None = None
        """While a batch is recorded: what to log once it is committed."""

    def close(self) -> None:
        """Stop the worker that reads mail."""
        self.budget.close()

    def read(
        self,
        mailbox: Mailbox,
        status: MailboxStatus,
        report: CycleReport,
        *,
        progress: Callable[[], None] = lambda: None,
        on_recorded: Callable[[], None] = lambda: None,
    ) -> None:
        """Process every mail above the watermark of the open *mailbox*, then re-match.

        *on_recorded* is called after each batch of mail records is committed (downloads
        may start while the rest is read).

        *status* is what the session's SELECT reported; its folder and UIDVALIDITY key the
        watermark. *progress* is called after each mail, and every
        ``budget.PROGRESS_EVERY_S`` while one is being read. When the worker that reads
        mail cannot start, the pass stops there (logged, in *report*); the mail is read
        again by the next pass.
        :raises MailboxError: after recording it in *report* (the daemon's watcher
            reconnects; ``run_once`` goes on with the downloads).
        """
        try:
            after = self.store.watermark(status.folder, status.uidvalidity)
            if after == 0 and self.store.watermark_count(status.folder) > 0:
                logger.warning(
                    "mailbox %s: UIDVALIDITY is now %d: rescanning; mail already handled is"
                    " recognised by its Message-ID and not downloaded again",
                    status.folder,
                    status.uidvalidity,
                )
            since = self._first_pass_since() if after == 0 else None
            pending: list[tuple[FetchedMail, Notification | MailRecord]] = []
            opened = 0.0
            limit = FIRST_RECORD_BATCH
            try:
                for fetched in mailbox.fetch_new(after, since):
                    report.mails_seen += 1
                    pending.append((fetched, self._read_one(fetched, progress)))
                    if len(pending) == 1:
                        opened = time.monotonic()
                    if len(pending) >= limit or time.monotonic() - opened >= RECORD_BATCH_S:
                        batch, pending = pending, []
                        limit = min(2 * limit, RECORD_BATCH)
                        self._record_batch(batch, report, progress)
                        on_recorded()
                    progress()
            except Exception:
                self._record_batch(pending, report, progress)  # what was read before the failure
                raise
            self._record_batch(pending, report, progress)
            self._rematch(report)
            on_recorded()
            self.store.set_daemon_value(LAST_POLL_KEY, self.clock().isoformat())
        except ReaderUnavailable as exc:
            logger.error("mail reader: %s; mail is read again at the next pass", exc)
            report.failed.append(f"mail reader: {exc}")
        except MailboxError as exc:
            # logged once, by whoever handles it: run_once, or the daemon's watcher
            report.failed.append(f"mailbox: {exc}")
            raise

    def _first_pass_since(self) -> date:
        """The first day whose mail a folder's first pass reads (``FIRST_PASS_MARGIN``).

        A notification is sent only after its export exists in the ledger (the row is
        written before the POST), so mail older than the oldest export that can still take
        one, less the margin, is no export's notification; with no such export, none is.
        Mail of exports already done needs nothing: a copy of it is handled through the
        ledger's record of the first one (by Message-ID). The exports are read into
        ``known``, which matching reads next (not read twice before the first mail).
        """
        self.known.refresh()
        exports = self.known.all()
        open_ = [e for e in exports if e.state not in FINAL_STATES] + awaiting_link(exports)
        oldest = min((e.created_at for e in open_), default=self.clock())
        return (min(oldest, self.clock()) - FIRST_PASS_MARGIN).date()

    def _read_one(
        self, fetched: FetchedMail, progress: Callable[[], None]
    ) -> Notification | MailRecord:
        """Read one mail in the budget's worker: its notification, or the record refusing it.

        :raises ReaderUnavailable: the worker cannot start (nothing is recorded).
        """
        now = self.clock()
        key = fetched.key
        if fetched.raw is None:
            reason = f"{fetched.size} bytes is larger than imap.max_message_bytes; not read"
            return MailRecord(key, None, MailOutcome.REFUSED, reason, now)
        try:
            return self.budget.read(fetched.raw, progress)
        except ExtractError as exc:  # unreadable, or too costly to read: refused, passed
            return MailRecord(key, None, MailOutcome.REFUSED, str(exc), now)

    def _record_batch(
        self,
        pending: list[tuple[FetchedMail, Notification | MailRecord]],
        report: CycleReport,
        progress: Callable[[], None],
    ) -> None:
        """Judge and record the mails read, in one ledger transaction (one fsync for all).

        A crash before the commit loses the whole batch: each of its mails is read again,
        as one would be alone (docs/reliability.md §8.1). Each mail is still recorded all
        or nothing (a savepoint): one the ledger refuses is logged and passed, as alone.
        The log lines and the report follow the commit.
        """
        if not pending:
            return
        self._deferred = []
        try:
            with self.store.batch():
                for fetched, read in pending:
                    try:
                        self._process_mail(fetched, read, report)
                    except LedgerUnavailable:
                        raise  # not this mail's fault: the batch is read again later
                    except StoreError as exc:
                        logger.error(
                            "uid %s: %s", fetched.key, exc, extra={"uid": str(fetched.key)}
                        )
                        report.failed.append(f"mail {fetched.key}: {exc}")
                    crash_point("mail:mid-batch")
                    progress()  # the watchdog: a batch of 200 is work, not a hang
            crash_point("mail:after-record")
            deferred = self._deferred
        finally:
            self._deferred = None
        for record, match, pairs in deferred:
            self._log_mail(record, match, pairs, report)

    def _process_mail(
        self, fetched: FetchedMail, read: Notification | MailRecord, report: CycleReport
    ) -> None:
        now = self.clock()
        key = fetched.key
        if isinstance(read, MailRecord):
            self._record(read, report)
            return
        notification = read
        authenticated = False
        if self.settings.sender_policy is not None:
            untrusted = check_sender(notification, self.settings.sender_policy)
            if untrusted is not None:
                reason = f"sender not authenticated: {untrusted}"
                refused = MailRecord(key, notification.message_id, MailOutcome.REFUSED, reason, now)
                self._record(refused, report)
                return
            authenticated = True
        earlier = self._earlier_copy(notification.message_id, key)
        if earlier is not None:
            # the same mail under a new UID (UIDVALIDITY change, or copied back): never
            # download again; mark it once its exports are archived
            record, exports = earlier
            acknowledged = now if self.settings.keyword in fetched.flags else None
            reason = f"same Message-ID as mail {record.key}"
            copy = MailRecord(
                key,
                notification.message_id,
                MailOutcome.DUPLICATE,
                reason,
                now,
                export_id=record.export_id,
                job_ids=record.job_ids,
                acknowledged_at=acknowledged,
            )
            pairings = [Pairing(e, None, MailOutcome.DUPLICATE, reason) for e in exports]
            self._record(copy, report, pairings=pairings)
            return
        self.known.refresh()
        named = self.known.named_by(mention_keys(notification))
        mentions = mentioned_exports(notification, named) if named else None
        if mentions and mentions[0]:
            # it names exports of ours: they, and which exports were resubmitted, are all
            # the decision reads (match.match_notification), the same as with every export
            options = self.settings.options(
                authenticated=authenticated, resubmitted=self.known.replaced
            )
            match = match_notification(
                notification, named, self.settings.rules, options, mentions=mentions
            )
        else:
            options = self.settings.options(authenticated=authenticated)
            match = match_notification(notification, self.known.all(), self.settings.rules, options)
        record = MailRecord(
            key,
            notification.message_id,
            match.outcome,
            explain(match),
            now,
            export_id=match.export_id,
            job_ids=match.job_ids,
        )
        summary = (
            summarize(notification, sender_authenticated=authenticated)
            if match.outcome is MailOutcome.UNMATCHED
            else None
        )
        self._record(record, report, summary=summary, match=match)

    def _earlier_copy(
        self, message_id: str | None, key: MailKey
    ) -> tuple[MailRecord, list[int]] | None:
        """Return an earlier record of the same mail tied to exports, with their IDs."""
        if not message_id:
            return None
        linked = (MailOutcome.MATCHED, MailOutcome.DUPLICATE)
        for record in self.store.mail_by_message_id(message_id):
            if record.key == key or record.outcome not in linked:
                continue
            exports = self.store.mail_exports(record.key)
            if exports:
                return record, exports
        return None

    def _record(
        self,
        record: MailRecord,
        report: CycleReport,
        *,
        summary: MailSummary | None = None,
        match: Match | None = None,
        rematch: bool = False,
        pairings: list[Pairing] | None = None,
    ) -> None:
        # each pairing names the job ID the mail gives its export; the ledger adopts it
        # for an export that has none, and notifies every matched export with its link
        pairs = list(match.pairings) if match is not None else (pairings or [])
        crash_point("mail:before-record")
        if rematch:
            self.store.rematch_mail(record, self.clock(), pairings=pairs)
        else:
            self.store.record_mail(record, self.clock(), summary=summary, pairings=pairs)
        if self._deferred is not None:  # in a batch: logged once it is committed
            self._deferred.append((record, match, pairs))
            return
        crash_point("mail:after-record")
        self._log_mail(record, match, pairs, report)

    def _log_mail(
        self,
        record: MailRecord,
        match: Match | None,
        pairings: list[Pairing],
        report: CycleReport,
    ) -> None:
        if len(pairings) > 1:
            self._log_digest(record, pairings, report)
            return
        job = match.job_id if match and match.job_id else ",".join(record.job_ids) or "-"
        keys = {"uid": str(record.key), "job_id": job, "export_id": record.export_id}
        if record.outcome is MailOutcome.MATCHED:
            url = match.download_url if match else None
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
                " acknowledged once its export is archived",
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

    def _log_digest(self, record: MailRecord, pairings: list[Pairing], report: CycleReport) -> None:
        """One line for a digest, naming each export, what it means for it, and its link."""
        report.matched += [p.job_id or "-" for p in pairings if p.outcome is MailOutcome.MATCHED]
        if record.outcome is MailOutcome.REFUSED:
            report.refused.append(f"{record.key}: {record.reason}")
        each = "; ".join(
            f"export {p.export_id} (job {p.job_id}) {p.outcome.value}"
            + (f", link {redact_url(p.download_url)}" if p.download_url else "")
            for p in pairings
        )
        keys = {
            "uid": str(record.key),
            "job_id": ",".join(p.job_id or "-" for p in pairings),
            "export_id": ",".join(str(p.export_id) for p in pairings),
        }
        level = logging.WARNING if record.outcome is MailOutcome.REFUSED else logging.INFO
        logger.log(
            level,
            "uid %s: digest notification for %d exports: %s",
            record.key,
            len(pairings),
            each,
            extra=keys,
        )

    def _rematch(self, report: CycleReport) -> None:
        # exports awaiting their first link, and those whose link failed: a later
        # notification may still bring them another one
        waiting = awaiting_link(self.store.list_exports(MATCHABLE_STATES | RETRY_STATES))
        if not waiting:
            return
        now = self.clock()
        # a mail can only be claimed by an export that existed when it arrived, so mail
        # older than the oldest waiting export is never worth re-reading
        since = max(now - self.settings.rematch_window, min(e.created_at for e in waiting))
        unmatched = self.store.unmatched_mails(since)
        if not unmatched:
            return  # the usual pass while an export waits: no need to read the whole ledger
        exports = self.store.list_exports()
        for record, summary in unmatched:
            # only exports that existed when the mail arrived may claim it; a later one
            # may still say that an older one was resubmitted
            known = [e for e in exports if e.created_at <= record.seen_at]
            options = self.settings.options(
                authenticated=summary.sender_authenticated,
                resubmitted=frozenset(e.replaces for e in exports if e.replaces is not None),
            )
            match = match_notification(
                notification_from_summary(summary), known, self.settings.rules, options
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
