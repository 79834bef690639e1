"""Read one HTML part: its visible text and its links with their words (pure, no I/O).

Always ``html.parser``, named explicitly: parsers build different trees from the
same broken markup (docs/reliability.md §4.3). ``<script>`` and ``<style>`` are not
text; ``<img src>`` is never a link. Outlook-only (VML) buttons hide in
conditional comments, so hrefs are read from comments too.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from bs4 import BeautifulSoup, Comment
from bs4.element import Tag

from inbox_poller.matching.links import clean_url, is_http_url, join_angle_urls

MAX_LINK_TEXT_CHARS = 300

_ANGLE_TAG_URL_RE = re.compile(r"(?i)<((?:URL:)?https?://[^<>\s\"]+)>")
_HREF_ATTR_RE = re.compile(r"""(?i)\bhref\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_TAG_RE = re.compile(r"<[^>]{0,2000}>")


@dataclass
class Markup:
    """What one HTML part holds."""

    text: str = ""
    hrefs: list[tuple[str, str]] = field(default_factory=list)
    """(normalised URL, the words that label it), in document order."""
    problem: str | None = None
    """Why the parser gave up, when it did (the text was then read without it)."""


def read_markup(markup: str) -> Markup:
    """Return the visible text of *markup* and every ``href`` in it, with its words."""
    # "<https://...>" in text is not a tag; html.parser would swallow it as one
    markup = _ANGLE_TAG_URL_RE.sub(r"&lt;\1&gt;", join_angle_urls(markup))
    found = Markup()
    try:
        soup = BeautifulSoup(markup, "html.parser")
        for tag in soup(["script", "style"]):
            tag.decompose()
        base = _base_href(soup)
        for tag in soup.find_all(href=True):
            if isinstance(tag, Tag) and tag.name not in ("link", "base"):
                url = clean_url(_attr(tag, "href"), base)
                if url:
                    found.hrefs.append((url, _anchor_text(tag)))
        for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
            found.hrefs += _comment_hrefs(str(comment), base)
        found.text = soup.get_text(" ")
    except Exception as exc:  # html.parser rejects some markup outright
        found.problem = f"HTML could not be parsed ({type(exc).__name__}); read as text"
        found.hrefs += _comment_hrefs(markup, None)
        found.text = html.unescape(_TAG_RE.sub(" ", markup))
    return found


def _comment_hrefs(markup: str, base: str | None) -> list[tuple[str, str]]:
    hrefs: list[tuple[str, str]] = []
    for found in _HREF_ATTR_RE.finditer(markup):
        url = clean_url(html.unescape(found.group(1) or found.group(2) or ""), base)
        if url:
            hrefs.append((url, ""))
    return hrefs


def _base_href(soup: BeautifulSoup) -> str | None:
    base = soup.find("base", href=True)
    href = _attr(base, "href") if isinstance(base, Tag) else ""
    return href if is_http_url(href.strip()) else None


def _attr(tag: Tag, name: str) -> str:
    value = tag.get(name)
    if isinstance(value, list):
        return " ".join(value)
    return value or ""


def _anchor_text(tag: Tag) -> str:
    """Return the words that label a link: its text, its title, its images' alt text."""
    words = [tag.get_text(" ", strip=True), _attr(tag, "title"), _attr(tag, "aria-label")]
    for image in tag.find_all("img"):
        if isinstance(image, Tag):
            words += [_attr(image, "alt"), _attr(image, "title")]
    text = " ".join(" ".join(w.split()) for w in words if w.strip())
    return text[:MAX_LINK_TEXT_CHARS]
