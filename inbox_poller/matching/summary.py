"""What the ledger remembers of a mail so it can be matched again later.

An unmatched mail may name an export the ledger does not know yet, so the poller
re-matches it on later passes. Its body is never stored: :func:`summarize` keeps the
bounded set of tokens and links matching needs, and
:func:`notification_from_summary` turns that back into a matchable ``Notification``.
:func:`explain` renders a match's reason for the ledger and the log.
"""

from __future__ import annotations

from inbox_poller.matching.jobids import TOKEN_RE
from inbox_poller.models import Link, MailOutcome, MailSummary, Match, Notification
from inbox_poller.urlpolicy import redact_url

_MAX_SUMMARY_TOKENS = 5000


def summarize(notification: Notification, *, sender_authenticated: bool = False) -> MailSummary:
    """Keep what re-matching an unmatched mail needs, bounded in size; never the body.

    *sender_authenticated* says whether the mail passed the ``[sender]`` check as it was
    read; re-matching lets only such a mail reveal a job ID while the check is on.
    """
    tokens: dict[str, None] = {}
    words = (
        w for text in (notification.subject, *notification.texts) for w in TOKEN_RE.findall(text)
    )
    for word in words:
        if any(ch.isdigit() for ch in word):
            tokens.setdefault(word.rstrip("._-"), None)
            if len(tokens) >= _MAX_SUMMARY_TOKENS:
                break
    return MailSummary(
        message_id=notification.message_id,
        sender=notification.sender,
        subject=notification.subject[:500],
        tokens=tuple(tokens),
        links=tuple(
            Link(link.url, link.text[:200], link.source, link.via)
            for link in notification.links[:200]
        ),
        candidates=notification.candidate_job_ids,
        sender_authenticated=sender_authenticated,
    )


def notification_from_summary(summary: MailSummary) -> Notification:
    """Rebuild a matchable ``Notification`` from :func:`summarize`'s output."""
    return Notification(
        message_id=summary.message_id,
        sender=summary.sender,
        subject=summary.subject,
        texts=(" ".join(summary.tokens),),
        links=summary.links,
        candidate_job_ids=summary.candidates,
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
