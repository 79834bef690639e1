"""Asking Pinpointe for exports: on demand, on schedule, and again when one goes wrong.

A submit is never retried blindly: the ledger row exists before the POST, and
an unknown outcome is recorded as such (docs/pinpointe-api.md, gap 4). Resubmission
happens only for a definite reason, each one bounded and recorded:

* an export with no notification after ``exports.notify_deadline`` is checked
  with ``API``/``AsyncJobStatus``: a failed or vanished job (or one Pinpointe
  finished but whose mail never came) is marked ``failed`` and asked for again;
  a job still running is noted and checked again after another deadline;
* an expired link (``link_expired``) leads to a new request, once
  ``exports.notify_deadline`` has passed since the submission: until then a later
  mail may still bring another link for the same job, and that is preferred
  (docs/matching.md §6; a first mail may have been a spoof).

A new request replaces the old one (``replaces``), up to ``exports.max_resubmits``
in a chain; past that the export stays failed and ``status`` reports it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from inbox_poller.crashpoints import crash_point
from inbox_poller.errors import ApiError, DuplicateSubmission, InboxPollerError
from inbox_poller.logcontext import log_context
from inbox_poller.methods import describe
from inbox_poller.models import Export, ExportRequest, ExportState, Send, utc_now
from inbox_poller.ports import JOB_NOT_FOUND, ExportApi, Metrics, NoMetrics
from inbox_poller.schedules.due import DueSubmission, due_requests
from inbox_poller.schedules.duplicates import should_submit
from inbox_poller.schedules.table import ExportSchedule

if TYPE_CHECKING:
    from inbox_poller.ledger.store import Store

logger = logging.getLogger("inbox_poller.loop")

FAILED_STATUSES = frozenset({"failed", "error", "cancelled", "canceled", "expired", JOB_NOT_FOUND})
FINISHED_STATUSES = frozenset({"complete", "completed", "done", "finished", "success"})
LAST_FIRE_KEY = "schedule:{name}:last_fire"


def _ids(export: Export) -> dict[str, object]:
    """The ``extra`` of a log line about *export*: its ``export_id`` and ``job_id``."""
    return {"export_id": export.export_id, "job_id": export.job_id}


class Submitter:
    """Submits exports through the API and records every outcome in the ledger."""

    def __init__(
        self,
        store: Store,
        api: ExportApi,
        *,
        clock: Callable[[], datetime] = utc_now,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.api = api
        self.clock = clock
        self.metrics: Metrics = metrics or NoMetrics()
        self._gave_up: set[int] = set()  # log "giving up" once per export and process

    def submit(
        self,
        request: ExportRequest,
        *,
        replaces: Export | None = None,
        schedule: str | None = None,
        origin: str | None = None,
        seen: int | None = None,
    ) -> Export:
        """Record the export, POST it once, and record the job ID (or why there is none).

        *seen*: how many exports of *request* the schedule had made when it decided
        (``Store.create_export``: a decision on an outdated view is refused).

        :raises ApiError: after the export is marked ``submit_failed`` or ``submit_unknown``.
        :raises DuplicateSubmission: the schedule's export is in the ledger already.
        """
        export = self.store.create_export(
            request, self.clock(), replaces=replaces, schedule=schedule, origin=origin, seen=seen
        )
        logger.info(
            "export %d: submitting %s %s start=%s end=%s",
            export.export_id,
            request.method,
            describe(request),
            request.startdate or "-",
            request.enddate or "-",
            extra={"export_id": export.export_id},
        )
        crash_point("submit:before-post")
        try:
            with log_context(export_id=export.export_id):
                job_id = self.api.submit(request)
        except ApiError as exc:
            self.metrics.failure("api", exc)
            if exc.definitive:
                self.store.mark_submit_failed(export.export_id, str(exc), self.clock())
                logger.error(
                    "export %d: Pinpointe refused the request: %s",
                    export.export_id,
                    exc,
                    extra={"export_id": export.export_id},
                )
            else:
                self.store.mark_submit_unknown(export.export_id, str(exc), self.clock())
                logger.error(
                    "export %d: the outcome of the submit is unknown (not retried, the export"
                    " may exist; its notification will be adopted if it names one job ID): %s",
                    export.export_id,
                    exc,
                    extra={"export_id": export.export_id},
                )
            raise
        crash_point("submit:after-post")
        raw = self.api.last_response or f"job {job_id}"
        export = self.store.mark_submitted(export.export_id, job_id, raw, self.clock())
        logger.info(
            "export %d (job %s): submitted",
            export.export_id,
            job_id,
            extra={"export_id": export.export_id, "job_id": job_id},
        )
        return export

    # ---- schedules -------------------------------------------------------------------

    def submit_due(
        self, schedules: Sequence[ExportSchedule], now: datetime, *, notify_deadline_s: float = 0.0
    ) -> list[Export]:
        """Submit every scheduled window that is due and not exported or pending yet.

        An export of the window whose link failed less than *notify_deadline_s* ago is
        left to a later mail or to :meth:`reconcile`, which resubmits it after that long.
        """
        if not schedules:
            return []
        values = self.store.daemon_values()
        last_fire = {
            s.name: datetime.fromisoformat(values[key])
            if (key := LAST_FIRE_KEY.format(name=s.name)) in values
            else None
            for s in schedules
        }
        submitted: list[Export] = []
        unexpanded: set[str] = set()
        sends: dict[int, list[Send]] = {}
        for due in due_requests(schedules, last_fire, now):
            expanded = [due]
            if due.sends_days is not None:
                found = self._expand_sends(due, sends)
                if found is None:
                    unexpanded.add(due.schedule_name)
                    continue
                expanded = found
            for one in expanded:
                export = self._submit_one_due(one, timedelta(seconds=notify_deadline_s))
                if export is not None:
                    submitted.append(export)
        for schedule in schedules:
            if schedule.name in unexpanded:
                continue  # its sends are asked for again at the next fire: nothing is missed
            key = LAST_FIRE_KEY.format(name=schedule.name)
            previous = last_fire.get(schedule.name)
            # never move a schedule's clock backwards (a stepped system clock)
            self.store.set_daemon_value(key, max(now, previous or now).isoformat())
        return submitted

    def _expand_sends(
        self, due: DueSubmission, cache: dict[int, list[Send]]
    ) -> list[DueSubmission] | None:
        """One submission per send of the last N days (None: Pinpointe could not say)."""
        days = due.sends_days
        assert days is not None
        if days not in cache:
            try:
                cache[days] = self.api.newsletters_sent(days)
            except ApiError as exc:
                self.metrics.failure("api", exc)
                logger.error(
                    "schedule %s: cannot list the sends of the last %d days (asked again at"
                    " the next fire): %s",
                    due.schedule_name,
                    days,
                    exc,
                )
                return None
        found = cache[days]
        logger.info(
            "schedule %s: %d send(s) in the last %d days for window %s..%s: %s",
            due.schedule_name,
            len(found),
            days,
            due.startdate or "-",
            due.enddate or "-",
            ", ".join(send.statid for send in found) or "none",
        )
        return [
            replace(
                due,
                stat=send.statid,
                template=ExportRequest(send.statid, due.startdate, due.enddate),
                sends_days=None,
                origin=send.describe(),
            )
            for send in found
        ]

    def _submit_one_due(self, due: DueSubmission, link_grace: timedelta) -> Export | None:
        request = due.request
        what = describe(request) + (f" from {due.origin}" if due.origin else "")
        existing = self.store.exports_for(request)
        wanted, reason = should_submit(due, existing, link_grace=link_grace)
        if not wanted:
            logger.info("schedule %s: not submitting %s: %s", due.schedule_name, what, reason)
            return None
        logger.info("schedule %s: submitting %s: %s", due.schedule_name, what, reason)
        try:
            seen = sum(
                1 for e in existing if e.schedule == due.schedule_name and e.replaces is None
            )
            return self.submit(request, schedule=due.schedule_name, origin=due.origin, seen=seen)
        except DuplicateSubmission as exc:
            logger.info("schedule %s: not submitting %s: %s", due.schedule_name, what, exc)
            return None
        except ApiError:
            return None  # recorded in the ledger and logged by submit()

    # ---- deadlines and expired links ---------------------------------------------------

    def reconcile(
        self, now: datetime, *, notify_deadline_s: float, max_resubmits: int
    ) -> list[Export]:
        """Check overdue exports with Pinpointe, and ask again where a link expired."""
        deadline = timedelta(seconds=notify_deadline_s)
        resubmitted: list[Export] = []
        for export in self.store.list_exports([ExportState.SUBMITTED]):
            checked = export.checked_at or export.submitted_at or export.created_at
            if now - checked < deadline or export.job_id is None:
                continue
            try:
                with log_context(export_id=export.export_id, job_id=export.job_id):
                    status = self.api.job_status([export.job_id]).get(export.job_id, JOB_NOT_FOUND)
            except ApiError as exc:
                self.metrics.failure("api", exc)
                logger.warning(
                    "export %d (job %s): cannot check: %s",
                    export.export_id,
                    export.job_id,
                    exc,
                    extra=_ids(export),
                )
                continue
            if status in FAILED_STATUSES or status in FINISHED_STATUSES:
                why = (
                    f"Pinpointe reports the job as {status!r}"
                    if status in FAILED_STATUSES
                    else f"Pinpointe finished the job ({status!r}) but no notification arrived"
                )
                reason = f"no notification after {notify_deadline_s:.0f}s; {why}"
                self.store.mark_failed(export.export_id, reason, now)
                logger.warning(
                    "export %d (job %s): %s",
                    export.export_id,
                    export.job_id,
                    reason,
                    extra=_ids(export),
                )
                replacement = self._resubmit(self.store.get_export(export.export_id), max_resubmits)
                if replacement is not None:
                    resubmitted.append(replacement)
            else:
                self.store.mark_checked(export.export_id, status, now)
                logger.info(
                    "export %d (job %s): no notification yet; Pinpointe reports %r",
                    export.export_id,
                    export.job_id,
                    status,
                    extra=_ids(export),
                )
        for export in self.store.list_exports([ExportState.LINK_EXPIRED]):
            if now - (export.submitted_at or export.created_at) < deadline:
                continue  # its real notification may still come, with a link that works
            replacement = self._resubmit(export, max_resubmits)
            if replacement is not None:
                resubmitted.append(replacement)
        return resubmitted

    def _resubmit(self, export: Export, max_resubmits: int) -> Export | None:
        if self.store.successor(export.export_id) is not None:
            return None
        if export.resubmits >= max_resubmits:
            if export.export_id not in self._gave_up:
                self._gave_up.add(export.export_id)
                logger.error(
                    "export %d (job %s): not resubmitted: %d resubmission(s) already",
                    export.export_id,
                    export.job_id,
                    export.resubmits,
                    extra=_ids(export),
                )
            return None
        try:
            replacement = self.submit(export.request, replaces=export)
        except InboxPollerError:
            return None
        logger.info(
            "export %d (job %s): resubmitted as export %d (job %s)",
            export.export_id,
            export.job_id,
            replacement.export_id,
            replacement.job_id,
            extra=_ids(export),
        )
        return replacement
