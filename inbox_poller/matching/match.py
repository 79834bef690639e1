"""Decide what one notification mail means for our exports (pure, no I/O).

A :class:`~inbox_poller.models.Notification` is judged against every export the
ledger knows (any state). Links are judged one distinct URL at a time
(``verdicts.py``); the job IDs the mail mentions pick the export (``jobids.py``
finds them); exactly one acceptable link must remain. Nothing is guessed: zero
or several possibilities leave the mail unmatched or refused, with a short
sentence saying why. docs/matching.md §6 states the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from inbox_poller.matching.jobids import MIN_JOB_ID_CHARS, ascii_lower, find_known_ids, url_forms
from inbox_poller.matching.verdicts import choose_download_link, judge_links
from inbox_poller.models import (
    Export,
    ExportState,
    LinkVerdict,
    MailOutcome,
    Match,
    Notification,
)
from inbox_poller.urlpolicy import HostRule

DUPLICATE_STATES = frozenset(
    {
        ExportState.NOTIFIED,
        ExportState.DOWNLOADING,
        ExportState.VERIFIED,
        ExportState.ARCHIVED,
        ExportState.ACKNOWLEDGED,
    }
)
"""The export already has its notification: another one is a duplicate."""
FAILURE_STATES = frozenset(
    {ExportState.SUBMIT_FAILED, ExportState.LINK_EXPIRED, ExportState.FAILED}
)
MATCHABLE_STATES = frozenset(
    {ExportState.SUBMITTED, ExportState.SUBMITTING, ExportState.SUBMIT_UNKNOWN}
)
"""States from which a notification may move an export to NOTIFIED."""
ORPHAN_STATES = frozenset({ExportState.SUBMITTING, ExportState.SUBMIT_UNKNOWN})
"""A submit whose answer (the job ID) was lost: only a notification can reveal the ID."""

# --- job IDs ----------------------------------------------------------------------


def mentioned_exports(
    notification: Notification, exports: Sequence[Export]
) -> tuple[list[Export], tuple[str, ...]]:
    """Return the known exports the mail mentions, and its job IDs (known ones first).

    A known job ID counts when it occurs as a whole token in the subject, any
    text, or any link (raw or percent-decoded), or when the mail labels it.
    """
    haystacks: list[str] = [notification.subject, *notification.texts]
    for link in notification.links:
        haystacks += url_forms(link.url)
    bare = [e.job_id for e in exports if e.job_id and len(e.job_id) >= MIN_JOB_ID_CHARS]
    present = find_known_ids(haystacks, bare)
    present |= {ascii_lower(c) for c in notification.candidate_job_ids}
    mentioned = [e for e in exports if e.job_id and ascii_lower(e.job_id) in present]
    known = list(dict.fromkeys(e.job_id for e in mentioned if e.job_id))
    known_lower = {ascii_lower(k) for k in known}
    others = [c for c in notification.candidate_job_ids if ascii_lower(c) not in known_lower]
    return mentioned, tuple(known + others)


# --- the decision -----------------------------------------------------------------


def match_notification(
    notification: Notification, exports: Sequence[Export], rules: tuple[HostRule, ...]
) -> Match:
    """Decide what *notification* is, given every export the ledger knows (any state)."""
    verdicts = judge_links(notification.links, rules)
    mentioned, job_ids = mentioned_exports(notification, exports)
    base = Match(outcome=MailOutcome.UNMATCHED, reason="", job_ids=job_ids, links=verdicts)
    if len(mentioned) > 1:
        named = _some(sorted({e.job_id or "?" for e in mentioned}))
        return _with(
            base,
            MailOutcome.REFUSED,
            f"it names {len(mentioned)} of our exports (jobs {named}): ambiguous",
        )
    if mentioned:
        return _match_known(base, mentioned[0], verdicts)
    if job_ids:
        return _match_unknown_job(base, job_ids, exports, verdicts)
    return _match_without_job_id(base, exports, verdicts)


def _some(items: Sequence[str], limit: int = 5) -> str:
    """Join at most *limit* items, so that a reason stays one short sentence."""
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


def _orphans(exports: Sequence[Export]) -> list[Export]:
    """Return the exports whose submit answer (and so their job ID) was lost."""
    return [e for e in exports if e.state in ORPHAN_STATES and e.job_id is None]


def _with(
    base: Match,
    outcome: MailOutcome,
    reason: str,
    export: Export | None = None,
    *,
    job_id: str | None = None,
    download_url: str | None = None,
) -> Match:
    """Return *base* with the decision filled in (the export's job ID unless adopted)."""
    return replace(
        base,
        outcome=outcome,
        reason=reason,
        export_id=export.export_id if export is not None else None,
        job_id=job_id or (export.job_id if export is not None else None),
        download_url=download_url,
    )


def _match_known(base: Match, export: Export, verdicts: Sequence[LinkVerdict]) -> Match:
    """Rule 3: the mail names exactly one of our exports."""
    job_id = export.job_id
    who = f"job {job_id} (export {export.export_id})"
    if export.state in DUPLICATE_STATES:
        return _with(
            base,
            MailOutcome.DUPLICATE,
            f"{who} is already {export.state.value}: a duplicate notification",
            export,
        )
    if export.state in FAILURE_STATES:
        return _with(
            base, MailOutcome.REFUSED, f"{who} is {export.state.value}: not acted on", export
        )
    url, why = choose_download_link(verdicts, job_id)
    if url is None:
        return _with(base, MailOutcome.REFUSED, f"{who}: {why}", export)
    return _with(
        base,
        MailOutcome.MATCHED,
        f"{who} awaited this notification; {why}",
        export,
        download_url=url,
    )


def _match_unknown_job(
    base: Match,
    job_ids: tuple[str, ...],
    exports: Sequence[Export],
    verdicts: Sequence[LinkVerdict],
) -> Match:
    """Rule 4: job IDs that are not ours; adopt one only for a lone orphaned submit."""
    orphans = _orphans(exports)
    named = _some(job_ids)
    not_ours = (
        f"job ID {named} is not one of ours"
        if len(job_ids) == 1
        else f"job IDs {named} are not ours"
    )
    if len(job_ids) == 1 and len(orphans) == 1:
        url, why = choose_download_link(verdicts, job_ids[0])
        if url is not None:
            orphan = orphans[0]
            return _with(
                base,
                MailOutcome.MATCHED,
                f"job {job_ids[0]} is unknown, but export {orphan.export_id} lost its submit "
                f"answer and is the only one it can belong to: adopted; {why}",
                orphan,
                job_id=job_ids[0],
                download_url=url,
            )
        return _with(
            base,
            MailOutcome.UNMATCHED,
            f"{not_ours}; export {orphans[0].export_id} lost its submit answer, but {why}",
        )
    if orphans:
        return _with(
            base,
            MailOutcome.UNMATCHED,
            f"{not_ours}; {len(orphans)} exports lost their submit answer: ambiguous",
        )
    return _with(base, MailOutcome.UNMATCHED, not_ours)


def _match_without_job_id(
    base: Match, exports: Sequence[Export], verdicts: Sequence[LinkVerdict]
) -> Match:
    """Rules 5 and 6: no job ID at all; match only when nothing else is possible."""
    url, why = choose_download_link(verdicts, None)
    if not any(v.kept for v in verdicts):
        return _with(
            base, MailOutcome.UNMATCHED, "not a notification: no job ID and no download link"
        )
    if url is None:
        return _with(base, MailOutcome.UNMATCHED, f"no job ID and {why}")
    seen = [e for e in exports if e.download_url == url]
    if seen:
        return _match_known_link(base, seen[0])
    waiting = [e for e in exports if e.state is ExportState.SUBMITTED]
    orphans = _orphans(exports)
    if orphans:
        return _with(
            base,
            MailOutcome.UNMATCHED,
            f"no job ID, {len(waiting)} export(s) waiting and {len(orphans)} whose "
            "submit answer was lost: ambiguous",
        )
    if not waiting:
        return _with(base, MailOutcome.UNMATCHED, "no job ID and no export is waiting")
    if len(waiting) > 1:
        return _with(
            base,
            MailOutcome.UNMATCHED,
            f"no job ID and {len(waiting)} exports are waiting: ambiguous",
        )
    export = waiting[0]
    return _with(
        base,
        MailOutcome.MATCHED,
        f"no job ID, and export {export.export_id} (job {export.job_id}) is the only "
        f"one waiting; {why}",
        export,
        download_url=url,
    )


def _match_known_link(base: Match, export: Export) -> Match:
    """A job-less mail whose link an export already stored: the same notification again.

    Never matched to another waiting export, which would archive the old payload
    under the new export; left unmatched (the reason names the export).
    """
    return _with(
        base,
        MailOutcome.UNMATCHED,
        f"no job ID, and its link is already stored for export {export.export_id} "
        f"(job {export.job_id}, {export.state.value}): a repeat, not matched again",
    )
