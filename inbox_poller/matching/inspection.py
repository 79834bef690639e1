"""``inbox-poller inspect-email``: show what the extractor and the matcher make of one mail.

Pure: the CLI reads the file and prints. Given job IDs stand for exports awaiting
their notification, so an operator can ask "would this mail match job 123?"
without a ledger. The report holds the full download URL: the operator is
inspecting their own mail, and the report is printed, never logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from inbox_poller.matching.extract import extract
from inbox_poller.matching.match import match_notification
from inbox_poller.matching.verdicts import choose_download_link
from inbox_poller.models import Export, ExportRequest, ExportState
from inbox_poller.safetext import escape_controls
from inbox_poller.urlpolicy import HostRule

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LINE_BREAKS = str.maketrans({"\n": " ", "\t": " "})


def pending_exports(job_ids: Sequence[str]) -> list[Export]:
    """Return one synthetic SUBMITTED export per distinct, non-empty job ID."""
    unique = list(dict.fromkeys(j.strip() for j in job_ids if j.strip()))
    return [
        Export(
            export_id=number,
            request=ExportRequest(stat="0"),
            state=ExportState.SUBMITTED,
            created_at=_EPOCH,
            updated_at=_EPOCH,
            job_id=job_id,
        )
        for number, job_id in enumerate(unique, start=1)
    ]


def inspect_email(
    raw: bytes, pending_job_ids: Sequence[str], rules: tuple[HostRule, ...]
) -> dict[str, object]:
    """Return a JSON-able report of one mail: what was read, each link's verdict, the match.

    ``download_url`` is the matched link when job IDs are given; without them it is
    the link that would be chosen if the choice is unambiguous. ``pairing`` lists each
    export the mail is about with its outcome and link (several for a digest); without
    job IDs, it is the pairing the mail's own labelled job IDs would get.
    :raises ExtractError: nothing in *raw* can be read.
    """
    notification = extract(raw)
    exports = pending_exports(pending_job_ids)
    match = match_notification(notification, exports, rules)
    if exports:
        download_url = match.download_url
        download_reason = match.reason
        paired = match
    else:
        only = match.job_ids[0] if len(match.job_ids) == 1 else None
        download_url, download_reason = choose_download_link(match.links, only)
        hypothetical = pending_exports(notification.candidate_job_ids)
        paired = match_notification(notification, hypothetical, rules)
    texts = {link.url: link.text for link in reversed(notification.links) if link.text}
    sources: dict[str, list[str]] = {}
    via: dict[str, list[str]] = {}
    for link in notification.links:
        sources.setdefault(link.url, [])
        if link.source not in sources[link.url]:
            sources[link.url].append(link.source)
        wrappers = via.setdefault(link.url, [])
        if link.via is not None and link.via not in wrappers:
            wrappers.append(link.via)
    return {
        "sender": notification.sender,
        "subject": notification.subject,
        "message_id": notification.message_id,
        "job_ids": list(match.job_ids),
        "candidate_job_ids": list(notification.candidate_job_ids),
        "pending_job_ids": [e.job_id for e in exports],
        "links": [
            {
                "url": verdict.url,
                "kept": verdict.kept,
                "reason": verdict.reason,
                "text": texts.get(verdict.url, ""),
                "sources": sources.get(verdict.url, []),
                "via": via.get(verdict.url, []),
            }
            for verdict in match.links
        ],
        "match": {
            "outcome": match.outcome.value,
            "job_id": match.job_id,
            "reason": match.reason,
        },
        "download_url": download_url,
        "download_reason": download_reason,
        "pairing": [
            {
                "job_id": pairing.job_id,
                "outcome": pairing.outcome.value,
                "download_url": pairing.download_url,
                "reason": pairing.reason,
            }
            for pairing in paired.pairings
        ],
        "defects": list(notification.defects),
    }


def format_inspection(report: dict[str, object]) -> str:
    """Render :func:`inspect_email`'s report for a terminal.

    Every string from the mail is escaped: a subject must not be able to send
    terminal control sequences or reorder the text with bidi controls.
    """
    lines = [
        f"From:       {_safe(report.get('sender')) or '(none)'}",
        f"Subject:    {_safe(report.get('subject'))}",
        f"Message-ID: {_safe(report.get('message_id')) or '(none)'}",
        f"Job IDs:    {', '.join(_safe(j) for j in _items(report.get('job_ids'))) or '(none)'}",
    ]
    links = [link for link in _items(report.get("links")) if isinstance(link, dict)]
    lines.append(f"Links:      {len(links)}")
    for link in links:
        mark = "kept   " if link.get("kept") else "refused"
        text = f'  "{_safe(link["text"])[:60]}"' if link.get("text") else ""
        lines.append(f"  {mark} {_safe(link.get('url'))}{text}")
        lines.append(f"          {_safe(link.get('reason'))}")
    match = report.get("match")
    if isinstance(match, dict):
        outcome = str(match.get("outcome", ""))
        job = f" (job {_safe(match['job_id'])})" if match.get("job_id") else ""
        lines.append(f"Match:      {outcome}{job}: {_safe(match.get('reason'))}")
    url = report.get("download_url")
    reason = _safe(report.get("download_reason"))
    lines.append(f"Download:   {_safe(url)}" if url else f"Download:   none ({reason})")
    pairs = [pair for pair in _items(report.get("pairing")) if isinstance(pair, dict)]
    if len(pairs) > 1:
        assumed = "" if _items(report.get("pending_job_ids")) else " (if these were pending)"
        lines.append(f"Digest:     {len(pairs)} exports, each with its own link{assumed}")
        for pair in pairs:
            target = _safe(pair.get("download_url")) or "no link"
            job_id, outcome = _safe(pair.get("job_id")), _safe(pair.get("outcome"))
            lines.append(f"  job {job_id}: {outcome}, {target}")
            lines.append(f"          {_safe(pair.get('reason'))}")
    for defect in _items(report.get("defects")):
        lines.append(f"Defect:     {_safe(defect)}")
    return "\n".join(lines)


def _items(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


def _safe(value: object) -> str:
    if value is None:
        return ""
    return escape_controls(str(value).translate(_LINE_BREAKS))
