"""Decide what one notification mail means for our exports (pure, no I/O).

A :class:`~inbox_poller.models.Notification` is judged against every export the
ledger knows (any state). Links are judged one distinct URL at a time; the job
IDs the mail mentions pick the export; exactly one acceptable link must remain.
Nothing is guessed: zero or several possibilities leave the mail unmatched or
refused, with a short sentence saying why. docs/matching.md states the rules.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit

from inbox_poller.models import (
    Export,
    ExportState,
    Link,
    LinkVerdict,
    MailOutcome,
    Match,
    Notification,
)
from inbox_poller.urlpolicy import HostRule, UrlRefused, check_url

logger = logging.getLogger(__name__)

MIN_BARE_JOB_ID_CHARS = 3
"""Known job IDs are searched for as bare tokens only from this length (the shortest
candidate the extractor reports, too): a bare "42" occurs in too many places."""

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

_WEB_SCHEMES = frozenset({"http", "https"})
_ANCHOR_ONLY_KINDS = frozenset({"social", "logo", "login"})
_PIECE_RE = re.compile(r"[a-z0-9]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ROOT_PATHS = frozenset({"", "/"})
_IMAGE_EXT_RE = re.compile(r"(?i)\.(?:png|jpe?g|gif|svg|ico|webp|bmp)$")
_FILE_EXT_RE = re.compile(r"(?i)\.(?:json|jsonl|ndjson|csv|xml|zip|gz|tgz|bz2|xz|zst)$")
_DOWNLOAD_WORD_RE = re.compile(r"(?i)\bdownload")
_TRACKER_SEGMENTS = frozenset(
    {
        "click",
        "clicks",
        "track",
        "tracking",
        "trk",
        "redirect",
        "redir",
        "link",
        "links",
        "ls",
        "wf",
        "r",
        "t",
        "c",
        "l",
        "ct",
    }
)
"""Path segments of click-tracking redirects (``/link.php``, ``/ls/click``, ``/r/...``)."""
_SOCIAL_HOST_RE = re.compile(
    r"(?i)(?:^|\.)(?:facebook|fb|twitter|x|linkedin|instagram|youtube|pinterest|tiktok)\.com$"
)

# (what the link is, words in its anchor text, whole path segments that name it)
_AUXILIARY: tuple[tuple[str, re.Pattern[str], frozenset[str]], ...] = (
    (
        "unsubscribe",
        re.compile(r"(?i)unsubscribe|\bopt[ -]?out\b|\bstop receiving\b|\bremove me\b"),
        frozenset({"unsubscribe", "unsub", "optout", "opt-out", "opt_out"}),
    ),
    (
        "preferences",
        re.compile(
            r"(?i)preferences|manage (?:your )?subscriptions?|subscription (?:center|centre)"
            r"|update (?:your )?profile|e-?mail settings"
        ),
        frozenset(
            {
                "preferences",
                "preference",
                "prefs",
                "preference-center",
                "manage-subscription",
                "subscription-center",
            }
        ),
    ),
    (
        "help",
        re.compile(r"(?i)\bhelp\b|\bfaqs?\b|knowledge ?base|\blearn more\b"),
        frozenset({"help", "faq", "faqs", "kb", "knowledgebase", "helpdesk"}),
    ),
    (
        "support",
        re.compile(r"(?i)\bsupport\b|\bcontact us\b"),
        frozenset({"support", "contact-us", "contactus"}),
    ),
    ("privacy", re.compile(r"(?i)privacy"), frozenset({"privacy", "privacy-policy"})),
    (
        "terms",
        re.compile(r"(?i)\bterms\b|\blegal\b"),
        frozenset({"terms", "tos", "legal", "terms-of-service", "terms-and-conditions"}),
    ),
    (
        "view-in-browser",
        re.compile(
            r"(?i)\bview (?:this |the |it )?(?:e-?mail |message |newsletter )?(?:in|on) "
            r"(?:your |a )?(?:web )?browser\b|\bview (?:it |this )?(?:e-?mail |message )?online\b"
            r"|\bweb version\b|\bonline version\b|\bview as (?:a )?web ?page\b|trouble viewing"
            r"|\bopen in (?:your |a )?browser\b"
        ),
        frozenset(
            {
                "webversion",
                "web-version",
                "view-online",
                "viewonline",
                "view-in-browser",
                "browser",
                "webview",
                "display",
            }
        ),
    ),
    (
        "social",
        re.compile(
            r"(?i)\b(?:facebook|twitter|linkedin|instagram|youtube|pinterest|tiktok|follow us)\b"
            r"|forward to a friend|\bshare\b"
        ),
        frozenset({"forward", "forward-to-a-friend"}),
    ),
    ("logo", re.compile(r"(?i)\blogo\b"), frozenset({"logo"})),
    (
        "login",
        re.compile(r"(?i)\blog ?in\b|\bsign ?in\b"),
        frozenset({"login", "signin", "sign-in", "log-in"}),
    ),
)


@dataclass
class _UrlFacts:
    """Everything the mail says about one distinct URL (internal)."""

    url: str
    texts: list[tuple[str, bool]] = field(default_factory=list)
    """The words that label it, each with whether they come from running text (weaker)."""
    direct: bool = False
    """It occurs as a link of its own, not only as an unwrapped redirect target."""
    wrappers: list[str] = field(default_factory=list)
    has_target: bool = False
    """It is a redirect whose target was unwrapped."""


# --- link verdicts ----------------------------------------------------------------


def judge_links(links: Sequence[Link], rules: tuple[HostRule, ...]) -> tuple[LinkVerdict, ...]:
    """Return one verdict per distinct URL, in order of first appearance.

    Relies on the extractor's order: each ``unwrapped`` link follows the link it
    was found in.
    """
    facts = _collect_facts(links)
    own = {url: _auxiliary_kind(f) for url, f in facts.items()}
    verdicts: list[LinkVerdict] = []
    for url, fact in facts.items():
        kind = own[url]
        if kind is None and not fact.direct and fact.wrappers:
            # the target of an unsubscribe link is as unwanted as the link itself
            wrapper_kinds = [own.get(w) for w in fact.wrappers]
            if all(wrapper_kinds):
                kind = wrapper_kinds[0]
        verdicts.append(_verdict(fact, kind, rules))
    return tuple(verdicts)


def _collect_facts(links: Sequence[Link]) -> dict[str, _UrlFacts]:
    facts: dict[str, _UrlFacts] = {}
    wrapper: str | None = None
    for link in links:
        fact = facts.setdefault(link.url, _UrlFacts(link.url))
        words = (link.text, link.source == "text")
        if link.text and words not in fact.texts:
            fact.texts.append(words)
        if link.source != "unwrapped":
            fact.direct = True
            wrapper = link.url
        elif wrapper is not None and wrapper != link.url:
            if wrapper not in fact.wrappers:
                fact.wrappers.append(wrapper)
            facts[wrapper].has_target = True
    return facts


def _verdict(fact: _UrlFacts, auxiliary: str | None, rules: tuple[HostRule, ...]) -> LinkVerdict:
    url = fact.url
    scheme = _scheme(url)
    if scheme not in _WEB_SCHEMES:
        what = f"a {scheme}: link" if scheme else "not an absolute http(s) URL"
        return LinkVerdict(url, False, f"{what}, not a download")
    try:
        check_url(url, rules)
    except UrlRefused as exc:
        return LinkVerdict(url, False, str(exc))
    if auxiliary is not None:
        return LinkVerdict(url, False, f"{auxiliary} link")
    if fact.has_target:
        return LinkVerdict(url, False, "tracking redirect; its target is judged instead")
    return LinkVerdict(url, True, "allowed host")


def _scheme(url: str) -> str:
    head, sep, _ = url.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", head):
        return ""
    return head.lower()


def _auxiliary_kind(fact: _UrlFacts) -> str | None:
    """Name what a link is for when it is plainly not a download (judged by URL and words)."""
    try:
        parts = urlsplit(fact.url)
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if _SOCIAL_HOST_RE.search(host):
        return "social"
    segments = [unquote(s).lower() for s in parts.path.split("/") if s]
    stems = {re.sub(r"\.(?:php|aspx?|html?|jsp|cgi)$", "", s) for s in segments}
    params = {v.lower() for v in re.split(r"[&;=]", parts.query) if v}
    for kind, _words, names in _AUXILIARY:
        if stems & names or (kind in ("unsubscribe", "preferences") and params & names):
            return kind
    if segments and _IMAGE_EXT_RE.search(segments[-1]):
        return "logo (image)"
    if parts.path in _ROOT_PATHS and not parts.query:
        return "home page (logo)"
    for text, running in fact.texts:
        named = _kind_from_words(text, running=running)
        if named is not None:
            return named
    return None


def _kind_from_words(text: str, *, running: bool) -> str | None:
    """Name the link's purpose from its words; "download" in them overrules all but
    unsubscribe and preferences. Words before a URL in running text ("Unsubscribe: ")
    are a weaker sign than an anchor's own text, so they name fewer purposes."""
    downloadish = bool(_DOWNLOAD_WORD_RE.search(text))
    for kind, words, _names in _AUXILIARY:
        if running and kind in _ANCHOR_ONLY_KINDS:
            continue
        if words.search(text) and (kind in ("unsubscribe", "preferences") or not downloadish):
            return kind
    return None


# --- the download link ------------------------------------------------------------


def choose_download_link(
    verdicts: Sequence[LinkVerdict], job_id: str | None
) -> tuple[str | None, str]:
    """Pick the one download link among the kept links, or say why there is none.

    One kept URL is the link. Among several, the link is
    the only one that names *job_id* (as a whole token); failing that, the only
    one to a file (a data-file extension, or "download" in its path); failing
    that, the only one that is not a click tracker. Otherwise there is none.
    """
    kept = list(dict.fromkeys(v.url for v in verdicts if v.kept))
    if not kept:
        return None, "no acceptable download link"
    if len(kept) == 1:
        return kept[0], "the only acceptable link"
    singled_out: list[tuple[list[str], str]] = [
        ([u for u in kept if _looks_like_file(u)], "the only acceptable link to a file"),
        ([u for u in kept if not _looks_like_tracker(u)], "the only one not a click tracker"),
    ]
    if job_id is not None:
        naming = [url for url in kept if find_known_ids(_url_forms(url), [job_id])]
        singled_out.insert(0, (naming, f"the only acceptable link that names job {job_id}"))
    for candidates, why in singled_out:
        if len(candidates) == 1:
            return candidates[0], why
    return None, f"{len(kept)} acceptable links and none singled out"


def _looks_like_tracker(url: str) -> bool:
    try:
        segments = urlsplit(url).path.lower().split("/")
    except ValueError:
        return False
    return any(re.sub(r"\.(?:php|aspx?)$", "", s) in _TRACKER_SEGMENTS for s in segments)


def _looks_like_file(url: str) -> bool:
    try:
        path = urlsplit(url).path
    except ValueError:
        return False
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return bool(_FILE_EXT_RE.search(last) or _DOWNLOAD_WORD_RE.search(unquote(path)))


# --- job IDs ----------------------------------------------------------------------


def find_known_ids(texts: Iterable[str], job_ids: Iterable[str]) -> set[str]:
    """Return which of *job_ids* (lower-cased) occur in *texts* as whole tokens.

    A whole token starts and ends where an alphanumeric run does: "export_123456.json"
    and "(123456)" contain "123456", "x123456" and "1234567" do not. Comparison
    ignores ASCII case. Linear in the text: only alphanumeric runs equal to the
    first run of some job ID are examined.
    """
    by_first: dict[str, list[str]] = {}
    for job_id in {j.translate(_ASCII_LOWER) for j in job_ids if j}:
        first = _PIECE_RE.match(job_id)
        if first is not None and first.start() == 0:
            by_first.setdefault(first.group(0), []).append(job_id)
    found: set[str] = set()
    if not by_first:
        return found
    for text in texts:
        lower = text.translate(_ASCII_LOWER)  # keeps every index where it was
        for piece in _PIECE_RE.finditer(lower):
            for job_id in by_first.get(piece.group(0), ()):
                end = piece.start() + len(job_id)
                if lower.startswith(job_id, piece.start()) and not (
                    end < len(lower)
                    and lower[end].isascii()
                    and lower[end].isalnum()
                    and job_id[-1].isalnum()
                ):
                    found.add(job_id)
    return found


def _url_forms(url: str) -> tuple[str, str, str]:
    once = unquote(url)
    return url, once, unquote(once)


def mentioned_exports(
    notification: Notification, exports: Sequence[Export]
) -> tuple[list[Export], tuple[str, ...]]:
    """Return the known exports the mail mentions, and its job IDs (known ones first).

    A known job ID counts when it occurs as a whole token in the subject, any
    text, or any link (raw or percent-decoded), or when the mail labels it.
    """
    haystacks: list[str] = [notification.subject, *notification.texts]
    for link in notification.links:
        haystacks += _url_forms(link.url)
    bare = [e.job_id for e in exports if e.job_id and len(e.job_id) >= MIN_BARE_JOB_ID_CHARS]
    present = find_known_ids(haystacks, bare)
    present |= {c.translate(_ASCII_LOWER) for c in notification.candidate_job_ids}
    mentioned = [e for e in exports if e.job_id and e.job_id.translate(_ASCII_LOWER) in present]
    known = list(dict.fromkeys(e.job_id for e in mentioned if e.job_id))
    known_lower = {k.translate(_ASCII_LOWER) for k in known}
    others = [
        c for c in notification.candidate_job_ids if c.translate(_ASCII_LOWER) not in known_lower
    ]
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
    orphans = [e for e in exports if e.state in ORPHAN_STATES and e.job_id is None]
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
    orphans = [e for e in exports if e.state in ORPHAN_STATES and e.job_id is None]
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
