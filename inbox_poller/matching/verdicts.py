"""Judge every link of a notification, and pick the download link (pure, no I/O).

One verdict per distinct URL: not a web link, refused by the URL policy, an
auxiliary link (unsubscribe, help, logo, ...), a tracking redirect whose target
is judged instead, or kept. Among the kept links, :func:`choose_download_link`
picks one only when something singles it out; there is never a guess between
equals. docs/matching.md §3 and §4 state the rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from inbox_poller.matching.jobids import find_known_ids, url_forms
from inbox_poller.matching.links import url_scheme
from inbox_poller.models import Link, LinkVerdict
from inbox_poller.urlpolicy import HostRule, UrlRefused, check_url

MAX_WRAPPER_CHAIN = 8
"""Wrappers followed upwards when a redirect target inherits a wrapper's purpose (the
extractor unwraps 3 deep; a hand-made chain must not recurse without end)."""

_WEB_SCHEMES = frozenset({"http", "https"})
_ANCHOR_ONLY_KINDS = frozenset({"social", "logo", "login"})
_ROOT_PATHS = frozenset({"", "/"})
_IMAGE_EXT_RE = re.compile(r"(?i)\.(?:png|jpe?g|gif|svg|ico|webp|bmp)$")
_DATA_FILE_EXT_RE = re.compile(r"(?i)\.(?:json|jsonl|ndjson|csv|xml|zip|gz|tgz|bz2|xz|zst)$")
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

    An ``unwrapped`` link is tied to the link it was found in by its ``via``, not by
    where it stands in *links*.
    """
    facts = _collect_facts(links)
    own = {url: _auxiliary_kind(fact) for url, fact in facts.items()}
    return tuple(
        _verdict(fact, _purpose(fact, facts, own, MAX_WRAPPER_CHAIN), rules)
        for fact in facts.values()
    )


def _collect_facts(links: Sequence[Link]) -> dict[str, _UrlFacts]:
    facts: dict[str, _UrlFacts] = {}
    for link in links:
        fact = facts.setdefault(link.url, _UrlFacts(link.url))
        words = (link.text, link.source == "text")
        if link.text and words not in fact.texts:
            fact.texts.append(words)
        if link.source != "unwrapped":
            fact.direct = True
    for link in links:
        wrapper = facts.get(link.via) if link.via is not None else None
        if wrapper is not None and wrapper.url != link.url:
            fact = facts[link.url]
            if wrapper.url not in fact.wrappers:
                fact.wrappers.append(wrapper.url)
            wrapper.has_target = True
    return facts


def _purpose(
    fact: _UrlFacts, facts: dict[str, _UrlFacts], own: dict[str, str | None], depth: int
) -> str | None:
    """Return what a link is for: its own purpose or, for a target found only inside
    auxiliary links, theirs (the target of an unsubscribe link is as unwanted as the link)."""
    kind = own[fact.url]
    if kind is not None or fact.direct or not fact.wrappers or depth <= 0:
        return kind
    inherited = [_purpose(facts[w], facts, own, depth - 1) for w in fact.wrappers]
    return inherited[0] if all(inherited) else None


def _verdict(fact: _UrlFacts, auxiliary: str | None, rules: tuple[HostRule, ...]) -> LinkVerdict:
    url = fact.url
    scheme = url_scheme(url)
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
        naming = [url for url in kept if find_known_ids(url_forms(url), [job_id])]
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
    return bool(_DATA_FILE_EXT_RE.search(last) or _DOWNLOAD_WORD_RE.search(unquote(path)))
