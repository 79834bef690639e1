"""Find URLs in mail text, normalise them, and unwrap tracking redirects (pure, no I/O).

Nothing here judges a link; ``verdicts.py`` does. The rules are in
docs/matching.md §2. Every function takes attacker-controlled text, so the
patterns use bounded look-behind only and every loop is capped.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from urllib.parse import unquote, urljoin, urlsplit

from inbox_poller.models import Link

MAX_LINKS = 1000
"""Links kept per mail (and URLs read from one text)."""
MAX_URL_CHARS = 8192
MAX_LABEL_CHARS = 60
"""Words kept from before a URL in running text, to label it."""

# RFC 3986 characters only: a URL in running text ends at the first space, quote,
# bracket or non-ASCII character (Japanese text puts "。" right after a link).
BARE_URL_RE = re.compile(r"(?i)\bhttps?://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
# RFC 3986 appendix C: a URL in angle brackets may be broken over lines. One way only to
# match the spaces after "<": "<\s*(?:URL:)?\s*" tried every split of a long run of them.
_ANGLE_URL_RE = re.compile(
    r"(?i)<\s*(?:URL:\s*)?(https?://[^<>\s]+(?:[ \t]*\r?\n[ \t]*[^<>\s]+)+)\s*>"
)
_TRAILING_PUNCT = ".,;:!?'\"*"
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_AUTHORITY_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)")
_HTTP_RE = re.compile(r"(?i)^https?://")
_ENCODED_HTTP_RE = re.compile(r"(?i)^https?(?:%3A|:)(?:%2F|/)")
_PROOFPOINT_V2_RE = re.compile(r"(?i)^https?-3A__")
_PROOFPOINT_V3_RE = re.compile(r"(?i)/v3/__(?=https?://)")
_EMBEDDED_URL_RE = re.compile(r"(?i)https?(?::|%3A)(?://|%2F%2F)")
_BASE64_VALUE_RE = re.compile(r"^[A-Za-z0-9+/_-]{16,}={0,2}$")
_C0_AND_SPACE = "".join(map(chr, range(0x21)))


def url_scheme(url: str) -> str:
    """Return the lower-cased scheme of an absolute URL, or "" for a relative one."""
    found = _SCHEME_RE.match(url)
    return found.group(1).lower() if found else ""


def is_http_url(url: str) -> bool:
    """Return whether *url* starts with ``http://`` or ``https://`` (any case)."""
    return bool(_HTTP_RE.match(url))


def join_angle_urls(text: str) -> str:
    """Join ``<https://...>`` and ``<URL:...>`` forms that are broken over lines."""
    return _ANGLE_URL_RE.sub(lambda m: "<" + "".join(m.group(1).split()) + ">", text)


# --- bare URLs in text ------------------------------------------------------------


def find_bare_urls(text: str) -> list[str]:
    """Return the http(s) URLs written out in *text*, without trailing punctuation."""
    return list(dict.fromkeys(url for url, _label in labelled_bare_urls(text)))


def labelled_bare_urls(text: str) -> list[tuple[str, str]]:
    """Return each URL written out in *text* with the words that introduce it.

    The words are those between the line start (or the previous URL) and the
    URL ("Unsubscribe: https://..."); when there are none, a previous line ending
    in ":" ("Download your file here:").
    """
    found: list[tuple[str, str]] = []
    previous_end = 0
    for match in BARE_URL_RE.finditer(text):
        if match.end() - match.start() > MAX_URL_CHARS:
            continue
        url = clean_url(_strip_trailing(match.group(0)), None)
        if url:
            found.append((url, _label_before(text, previous_end, match.start())))
            if len(found) >= MAX_LINKS:
                break
        previous_end = match.end()
    return found


def _label_before(text: str, floor: int, start: int) -> str:
    # look back a bounded distance only: a hostile line may be megabytes long
    window = max(floor, start - 4 * MAX_LABEL_CHARS)
    newline = text.rfind("\n", window, start)
    line_start = newline + 1 if newline >= 0 else window
    label = " ".join(text[line_start:start].split())[-MAX_LABEL_CHARS:]
    if label or newline < 0:
        return label
    # nothing before the URL on its line: a previous line ending in ":" introduces it
    before = text[max(floor, newline - 2 * MAX_LABEL_CHARS) : newline]
    previous = " ".join(before.rsplit("\n", 1)[-1].split())
    return previous[-MAX_LABEL_CHARS:] if previous.endswith(":") else ""


def _strip_trailing(url: str) -> str:
    """Drop sentence punctuation after a URL, and closing brackets it never opened."""
    opened = {")": url.count("("), "]": url.count("[")}
    closed = {")": url.count(")"), "]": url.count("]")}
    end = len(url)
    while end:
        last = url[end - 1]
        if last in _TRAILING_PUNCT:
            end -= 1
        elif last in closed and closed[last] > opened[last]:
            closed[last] -= 1
            end -= 1
        else:
            break
    return url[:end]


def clean_url(raw: str, base: str | None) -> str:
    """Normalise an href as a browser would: trim, drop tabs/newlines, resolve, lower-case
    the scheme and host. Returns "" for empty and same-page (``#...``) links."""
    url = raw.strip(_C0_AND_SPACE)
    url = url.replace("\t", "").replace("\n", "").replace("\r", "")
    url = url.replace(" ", "%20")  # as a browser sends it
    if "&amp;" in url:
        url = url.replace("&amp;", "&")  # HTML-escaped twice, or escaped in a text part
    if not url or url.startswith("#") or len(url) > MAX_URL_CHARS:
        return ""
    if url.startswith("//"):
        url = "https:" + url  # protocol-relative: webmail would open it over https
    elif base and not _SCHEME_RE.match(url):
        try:
            url = urljoin(base, url)
        except ValueError:
            return ""
    authority = _AUTHORITY_RE.match(url)
    if authority and "@" not in authority.group(2):
        url = authority.group(1).lower() + authority.group(2).lower() + url[authority.end() :]
    elif authority:
        url = authority.group(1).lower() + url[len(authority.group(1)) :]
    return url


def without_broken_copies(links: Sequence[Link]) -> tuple[Link, ...]:
    """Drop a text part's URL that is only the start of an HTML link's URL.

    Text parts are often wrapped hard at 76 columns, which cuts a long URL in two;
    the HTML alternative holds it whole. The cut copy goes, and so do the redirect
    targets unwrapped only from it (their ``via`` names no remaining link).
    """
    hrefs = [link.url for link in links if link.source == "href"]
    kept = [link for link in links if not (link.source == "text" and _cut_from(link.url, hrefs))]
    while True:  # a target unwrapped from a dropped link, then the targets inside it
        present = {link.url for link in kept}
        orphaned = {link for link in kept if link.via is not None and link.via not in present}
        if not orphaned:
            return tuple(kept)
        kept = [link for link in kept if link not in orphaned]


def _cut_from(url: str, hrefs: list[str]) -> bool:
    return any(len(href) > len(url) and href.startswith(url) for href in hrefs)


# --- tracking redirects -----------------------------------------------------------


def unwrap_redirect(url: str) -> list[str]:
    """Return the URLs a tracking or safety redirect in *url* points to.

    A query (or fragment) parameter whose value, percent-decoded once or twice or
    base64-decoded, is an http(s) URL; Proofpoint's v2 and v3 encodings; and,
    failing those, an http(s) URL embedded in the path (``/r/https%3A%2F%2F...``).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    targets: list[str] = []
    for params in (parts.query, parts.fragment):
        for _name, value in split_params(params):
            target = _as_url(value)
            if target and target != url and target not in targets:
                targets.append(target)
    if targets:
        return targets
    v3 = _proofpoint_v3_target(url)
    if v3:
        return [clean_url(v3, None)]
    start = len(parts.scheme) + 3 + len(parts.netloc)
    embedded = _EMBEDDED_URL_RE.search(url, start)
    if embedded and parts.scheme.lower() in ("http", "https"):
        target = _as_url(url[embedded.start() :])
        return [target] if target and target != url else []
    return []


def _proofpoint_v3_target(url: str) -> str | None:
    """Return the URL between ``/v3/__`` and the next ``__;``: one scan, not one per start."""
    start = _PROOFPOINT_V3_RE.search(url)
    if start is None:
        return None
    end = url.find("__;", start.end() + 1)
    return url[start.end() : end] if end >= 0 else None


def split_params(query: str) -> list[tuple[str, str]]:
    """Split a query string without turning '+' into spaces (a URL has no spaces)."""
    pairs: list[tuple[str, str]] = []
    for piece in re.split(r"[&;]", query):
        name, sep, value = piece.partition("=")
        if sep:
            pairs.append((unquote(name), unquote(value)))
    return pairs


def _as_url(value: str) -> str | None:
    value = value.strip()
    for _ in range(3):
        if _HTTP_RE.match(value):
            # decoding may have produced spaces; they stay encoded in a URL
            return clean_url(_strip_trailing(value).replace(" ", "%20"), None) or None
        if _ENCODED_HTTP_RE.match(value):
            value = unquote(value)
        elif _PROOFPOINT_V2_RE.match(value):
            value = unquote(re.sub(r"-([0-9A-Fa-f]{2})", r"%\1", value.replace("_", "/")))
        elif _BASE64_VALUE_RE.match(value):
            decoded = _b64_text(value)
            if decoded is None:
                return None
            value = decoded
        else:
            return None
    return None


def _b64_text(value: str) -> str | None:
    padded = value + "=" * (-len(value) % 4)
    try:
        decoded = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
        text = decoded.decode("ascii")
    except (binascii.Error, ValueError):
        return None
    return text if _HTTP_RE.match(text) else None
