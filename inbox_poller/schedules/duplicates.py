"""A due submission against the ledger's exports: never twice, failures bounded.

The ledger, not APScheduler, remembers what was submitted, so a crash or a restart
that computes the same windows again submits nothing twice (docs/schedules.md §4).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from inbox_poller.models import FINAL_STATES, Export, ExportState, link_failed
from inbox_poller.schedules.due import DueSubmission

MAX_FAILED_EXPORTS = 3
"""Failed exports of one (stat, window) after which it is no longer resubmitted."""

DONE_STATES = frozenset({ExportState.ARCHIVED, ExportState.ACKNOWLEDGED})
RETRY_STATES = FINAL_STATES - DONE_STATES
PENDING_STATES = frozenset(ExportState) - FINAL_STATES - DONE_STATES


def should_submit(
    due: DueSubmission,
    existing: Iterable[Export],
    *,
    max_failed: int = MAX_FAILED_EXPORTS,
    link_grace: timedelta = timedelta(0),
) -> tuple[bool, str]:
    """Decide whether *due* is submitted, given the ledger's exports; return (yes, why).

    Only exports of the same request count (stat, startdate, enddate and method). A pending
    one blocks; an archived or acknowledged one blocks; failed ones are resubmitted until
    *max_failed* of them exist. An export whose link failed, not resubmitted, blocks for
    *link_grace* after it failed (``exports.notify_deadline``): a later mail may still
    bring it a working link, and the deadline check resubmits it otherwise, so a scheduled
    request now could archive the window twice. For a window without dates (``none``)
    each fire wants fresh data, so finished and failed exports created before the fire
    time are ignored.
    """
    same = sorted(
        (e for e in existing if e.request == due.request), key=lambda e: e.export_id, reverse=True
    )
    replaced = {e.replaces for e in same}
    for export in same:
        if export.state in PENDING_STATES:
            return (
                False,
                f"export {export.export_id} for the same stat and window is {export.state}",
            )
        revivable = link_failed(export) and export.export_id not in replaced
        if revivable and due.fire_time - export.updated_at < link_grace:
            return (
                False,
                f"export {export.export_id} for the same stat and window lost its link at"
                f" {export.updated_at:%Y-%m-%d %H:%M} UTC; a later mail or its resubmission"
                " may still bring it",
            )
    if due.startdate is None and due.enddate is None:
        same = [e for e in same if e.created_at >= due.fire_time]
    for export in same:
        if export.state in DONE_STATES:
            return False, f"already exported as export {export.export_id} ({export.state})"
    failed = [e for e in same if e.state in RETRY_STATES]
    if len(failed) >= max_failed:
        return False, (
            f"not resubmitted: {len(failed)} exports of this stat and window failed"
            f" (the last is export {failed[0].export_id})"
        )
    if failed:
        last = failed[0]
        return True, (
            f"resubmitting: export {last.export_id} ended in {last.state}"
            f" ({last.reason or 'no reason recorded'})"
        )
    return True, "no export of this stat and window yet"
