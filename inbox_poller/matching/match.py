"""Decide what one notification mail means for our exports (pure, no I/O).

A :class:`~inbox_poller.models.Notification` is judged against every export the
ledger knows (any state). Links are judged one distinct URL at a time
(``verdicts.py``); the job IDs the mail mentions pick the export (``jobids.py``
finds them); exactly one acceptable link must remain, or, for a digest naming
several exports, each must have exactly one link of its own. Nothing is guessed:
zero or several possibilities leave the mail unmatched or refused, with a short
sentence saying why. docs/matching.md §6 states the rules.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from inbox_poller.matching.jobids import (
    MIN_JOB_ID_CHARS,
    ascii_lower,
    find_known_ids,
    text_pieces,
    url_forms,
)
from inbox_poller.matching.verdicts import choose_download_link, judge_links
from inbox_poller.models import (
    Export,
    ExportState,
    LinkVerdict,
    MailOutcome,
    Match,
    Notification,
    Pairing,
    link_failed,
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
IN_PROGRESS_STATES = frozenset(
    {ExportState.NOTIFIED, ExportState.DOWNLOADING, ExportState.VERIFIED}
)
"""A duplicate's new link is kept for these, in case the current link fails."""
FAILURE_STATES = frozenset(
    {ExportState.SUBMIT_FAILED, ExportState.LINK_EXPIRED, ExportState.FAILED}
)
MATCHABLE_STATES = frozenset(
    {ExportState.SUBMITTED, ExportState.SUBMITTING, ExportState.SUBMIT_UNKNOWN}
)
"""States from which a notification may move an export to NOTIFIED."""
ORPHAN_STATES = frozenset({ExportState.SUBMITTING, ExportState.SUBMIT_UNKNOWN})
"""A submit whose answer (the job ID) was lost: only a notification can reveal the ID."""
RETRY_STATES = frozenset({ExportState.LINK_EXPIRED, ExportState.FAILED})
"""States a later notification may lift back to NOTIFIED, when the link is what failed."""


@dataclass(frozen=True)
class MatchOptions:
    """The switches of the weaker rules (docs/matching.md §6)."""

    by_elimination: bool = True
    """A mail with no job ID may be matched to the only export waiting for one
    (``[matching] by_elimination``)."""
    may_adopt: bool = True
    """The mail may reveal the job ID of an export whose submit answer was lost: always
    when ``[sender]`` is off, only for an authenticated sender when it is on."""
    resubmitted: frozenset[int] = frozenset()
    """Exports known to have been resubmitted, besides those whose successor is among
    the exports given (re-matching gives only the exports older than the mail)."""


def awaiting_link(
    exports: Sequence[Export], resubmitted: Collection[int] = frozenset()
) -> list[Export]:
    """Return the exports a notification may still bring to ``notified``.

    Those awaiting their first notification, and those whose link failed and that were
    not resubmitted (a fresh link from a later mail is preferred to a new request).
    """
    replaced = _replaced(exports, resubmitted)
    return [
        e
        for e in exports
        if e.state in MATCHABLE_STATES or (link_failed(e) and e.export_id not in replaced)
    ]


def _replaced(exports: Sequence[Export], resubmitted: Collection[int]) -> frozenset[int]:
    return frozenset(resubmitted) | {e.replaces for e in exports if e.replaces is not None}


# --- job IDs ----------------------------------------------------------------------


def mentioned_exports(
    notification: Notification, exports: Sequence[Export]
) -> tuple[list[Export], tuple[str, ...]]:
    """Return the known exports the mail mentions, and its job IDs (known ones first).

    A known job ID counts when it occurs as a whole token in the subject, any
    text, or any link (raw or percent-decoded), or when the mail labels it.
    """
    haystacks = _haystacks(notification)
    bare = [e.job_id for e in exports if e.job_id and len(e.job_id) >= MIN_JOB_ID_CHARS]
    present = find_known_ids(haystacks, bare)
    present |= {ascii_lower(c) for c in notification.candidate_job_ids}
    mentioned = [e for e in exports if e.job_id and ascii_lower(e.job_id) in present]
    known = list(dict.fromkeys(e.job_id for e in mentioned if e.job_id))
    known_lower = {ascii_lower(k) for k in known}
    others = [c for c in notification.candidate_job_ids if ascii_lower(c) not in known_lower]
    return mentioned, tuple(known + others)


def _haystacks(notification: Notification) -> list[str]:
    """Where a job ID may be written: the subject, every text, every link in its forms."""
    haystacks: list[str] = [notification.subject, *notification.texts]
    for link in notification.links:
        haystacks += url_forms(link.url)
    return haystacks


def mention_keys(notification: Notification) -> set[str]:
    """Return the keys under which an export the mail mentions may be found: the pieces of
    its text (``jobids.id_key`` of a job ID written in it) and its labelled job IDs,
    lower-cased. Every export :func:`mentioned_exports` would find has its job ID's key
    or its lower-cased job ID among them, so a caller holding many exports can look up
    the few worth giving it (``loop/reader.py``)."""
    keys = text_pieces(_haystacks(notification))
    keys |= {ascii_lower(c) for c in notification.candidate_job_ids}
    return keys


# --- the decision -----------------------------------------------------------------


def match_notification(
    notification: Notification,
    exports: Sequence[Export],
    rules: tuple[HostRule, ...],
    options: MatchOptions = MatchOptions(),
    *,
    mentions: tuple[list[Export], tuple[str, ...]] | None = None,
) -> Match:
    """Decide what *notification* is, given every export the ledger knows (any state).

    *mentions* is ``mentioned_exports(notification, exports)`` when the caller has it
    already (the reader asks it first, to choose *exports*): it is not worked out twice.
    """
    verdicts = judge_links(notification.links, rules)
    mentioned, job_ids = mentions or mentioned_exports(notification, exports)
    base = Match(outcome=MailOutcome.UNMATCHED, reason="", job_ids=job_ids, links=verdicts)
    replaced = _replaced(exports, options.resubmitted)
    if len(mentioned) > 1:
        return _match_digest(base, mentioned, verdicts, replaced)
    if mentioned:
        export = mentioned[0]
        url, why = choose_download_link(verdicts, export.job_id)
        return _single(base, _judge(export, url, why, replaced))
    if job_ids:
        return _match_unknown_job(base, job_ids, exports, verdicts, options)
    return _match_without_job_id(base, exports, verdicts, options, replaced)


def _some(items: Sequence[str], limit: int = 5) -> str:
    """Join at most *limit* items, so that a reason stays one short sentence."""
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


def _orphans(exports: Sequence[Export]) -> list[Export]:
    """Return the exports whose submit answer (and so their job ID) was lost."""
    return [e for e in exports if e.state in ORPHAN_STATES and e.job_id is None]


def _with(base: Match, outcome: MailOutcome, reason: str) -> Match:
    """Return *base* with a decision that concerns no export of ours."""
    return replace(base, outcome=outcome, reason=reason)


def _single(base: Match, pairing: Pairing) -> Match:
    """Return *base* decided by the one export the mail is about."""
    return replace(
        base,
        outcome=pairing.outcome,
        reason=pairing.reason,
        export_id=pairing.export_id,
        job_id=pairing.job_id,
        download_url=pairing.download_url if pairing.outcome is MailOutcome.MATCHED else None,
        pairings=(pairing,),
    )


def _judge(export: Export, url: str | None, why: str, replaced: Collection[int]) -> Pairing:
    """Say what a mail naming *export* and offering *url* (None: no single link) means."""
    job_id = export.job_id
    who = f"job {job_id} (export {export.export_id})"
    state = export.state.value

    def pairing(outcome: MailOutcome, reason: str, link: str | None = None) -> Pairing:
        return Pairing(export.export_id, job_id, outcome, reason, link)

    if export.state in DUPLICATE_STATES:
        duplicate = f"{who} is already {state}: a duplicate notification"
        if export.state in IN_PROGRESS_STATES and url is not None and not _tried(export, url):
            # a spoofed first mail must not make the real one useless: keep its link
            return pairing(
                MailOutcome.DUPLICATE,
                f"{duplicate}; its link is kept in case the current one fails",
                url,
            )
        return pairing(MailOutcome.DUPLICATE, duplicate)
    if link_failed(export):
        if export.export_id in replaced:
            return pairing(
                MailOutcome.REFUSED, f"{who} is {state} and was resubmitted: not acted on"
            )
        if url is None:
            return pairing(MailOutcome.REFUSED, f"{who} is {state}, and this mail offers {why}")
        if _tried(export, url):
            return pairing(
                MailOutcome.REFUSED, f"{who} is {state}, and this mail's link already failed"
            )
        return pairing(
            MailOutcome.MATCHED, f"{who} is {state}; this mail offers another link: {why}", url
        )
    if export.state in FAILURE_STATES:
        return pairing(MailOutcome.REFUSED, f"{who} is {state}: not acted on")
    if url is None:
        return pairing(MailOutcome.REFUSED, f"{who}: {why}")
    return pairing(MailOutcome.MATCHED, f"{who} awaited this notification; {why}", url)


def _tried(export: Export, url: str) -> bool:
    """The export has (or had) this link already: it is never downloaded again."""
    return url == export.download_url or url in export.failed_links


def _match_digest(
    base: Match,
    mentioned: Sequence[Export],
    verdicts: Sequence[LinkVerdict],
    replaced: Collection[int],
) -> Match:
    """Rule 2: a mail naming several of our exports, each with exactly one link of its own."""
    named = _some(sorted({e.job_id or "?" for e in mentioned}))
    ambiguous = f"it names {len(mentioned)} of our exports (jobs {named}): ambiguous"
    pairs = pair_links(mentioned, verdicts)
    if pairs is None:
        return _with(base, MailOutcome.REFUSED, f"{ambiguous}, not one link per job")
    pairings = tuple(
        _judge(export, url, f"the one acceptable link naming job {export.job_id}", replaced)
        for export, url in pairs
    )
    outcomes = [p.outcome for p in pairings]
    outcome = next(
        (o for o in (MailOutcome.MATCHED, MailOutcome.DUPLICATE) if o in outcomes),
        MailOutcome.REFUSED,
    )
    counts = ", ".join(f"{outcomes.count(o)} {o.value}" for o in MailOutcome if outcomes.count(o))
    reason = f"a digest of {len(pairs)} of our exports (jobs {named}), one link each: {counts}"
    return replace(base, outcome=outcome, reason=reason, pairings=pairings)


def pair_links(
    exports: Sequence[Export], verdicts: Sequence[LinkVerdict]
) -> list[tuple[Export, str]] | None:
    """Pair each export with the one acceptable link that names its job ID, or return None.

    The pairing exists when each job ID occurs (as a whole token) in exactly one kept
    link and each such link names exactly one of them; links naming none of them are
    left alone. Job IDs shorter than ``MIN_JOB_ID_CHARS`` are never paired.
    """
    kept = list(dict.fromkeys(v.url for v in verdicts if v.kept))
    ids = [e.job_id for e in exports if e.job_id and len(e.job_id) >= MIN_JOB_ID_CHARS]
    named_in = {url: find_known_ids(url_forms(url), ids) for url in kept}
    pairs: list[tuple[Export, str]] = []
    for export in exports:
        own = ascii_lower(export.job_id or "")
        links = [url for url in kept if own in named_in[url]]
        if len(links) != 1 or len(named_in[links[0]]) != 1:
            return None
        pairs.append((export, links[0]))
    return pairs


def _match_unknown_job(
    base: Match,
    job_ids: tuple[str, ...],
    exports: Sequence[Export],
    verdicts: Sequence[LinkVerdict],
    options: MatchOptions,
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
        orphan = orphans[0]
        url, why = choose_download_link(verdicts, job_ids[0])
        if url is None:
            return _with(
                base,
                MailOutcome.UNMATCHED,
                f"{not_ours}; export {orphan.export_id} lost its submit answer, but {why}",
            )
        if not options.may_adopt:
            return _with(
                base,
                MailOutcome.UNMATCHED,
                f"{not_ours}; export {orphan.export_id} lost its submit answer, but only an "
                "authenticated sender may reveal its job ID",
            )
        return _single(
            base,
            Pairing(
                orphan.export_id,
                job_ids[0],
                MailOutcome.MATCHED,
                f"job {job_ids[0]} is unknown, but export {orphan.export_id} lost its submit "
                f"answer and is the only one it can belong to: adopted; {why}",
                url,
            ),
        )
    if orphans:
        return _with(
            base,
            MailOutcome.UNMATCHED,
            f"{not_ours}; {len(orphans)} exports lost their submit answer: ambiguous",
        )
    return _with(base, MailOutcome.UNMATCHED, not_ours)


def _match_without_job_id(
    base: Match,
    exports: Sequence[Export],
    verdicts: Sequence[LinkVerdict],
    options: MatchOptions,
    replaced: Collection[int],
) -> Match:
    """Rules 5 and 6: no job ID at all; match only when nothing else is possible."""
    url, why = choose_download_link(verdicts, None)
    if not any(v.kept for v in verdicts):
        return _with(
            base, MailOutcome.UNMATCHED, "not a notification: no job ID and no download link"
        )
    if not options.by_elimination:
        return _with(
            base,
            MailOutcome.UNMATCHED,
            "no job ID, and matching by elimination is off ([matching] by_elimination)",
        )
    if url is None:
        return _with(base, MailOutcome.UNMATCHED, f"no job ID and {why}")
    seen = [e for e in exports if _tried(e, url)]
    if seen:
        return _match_known_link(base, seen[0])
    waiting = [
        e
        for e in awaiting_link(exports, replaced)
        if e.state is ExportState.SUBMITTED or link_failed(e)
    ]
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
    if link_failed(export):
        reason = (
            f"no job ID, and export {export.export_id} (job {export.job_id}) is the only "
            f"one waiting (its link failed; this is another); {why}"
        )
    else:
        reason = (
            f"no job ID, and export {export.export_id} (job {export.job_id}) is the only "
            f"one waiting; {why}"
        )
    return _single(base, Pairing(export.export_id, export.job_id, MailOutcome.MATCHED, reason, url))


def _match_known_link(base: Match, export: Export) -> Match:
    """A job-less mail whose link an export already has (or had): the same notification again.

    Never matched to another waiting export, which would archive the old payload
    under the new export; left unmatched (the reason names the export).
    """
    return _with(
        base,
        MailOutcome.UNMATCHED,
        f"no job ID, and its link is already stored for export {export.export_id} "
        f"(job {export.job_id}, {export.state.value}): a repeat, not matched again",
    )
