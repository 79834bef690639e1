"""Read one HTML part: its visible text and its links with their words (pure, no I/O).

Always the standard library's ``html.parser``: parsers build different trees from the
same broken markup (docs/reliability.md §4.3). It is read as a stream of tags and text,
never built into a tree, so that the cost of every tag and every piece of text is bounded
by a constant: a tree (BeautifulSoup's) made 8,000 unclosed anchors cost 40 s, because
each anchor's words were the text of all the anchors inside it. ``<script>`` and
``<style>`` are not text; ``<img src>`` is never a link. Outlook-only (VML) buttons hide
in conditional comments, so hrefs are read from comments too.

``html.parser`` is linear while it reads markup it can finish; at the end of the input it
retries every unfinished tag or comment from where it starts, so a part of ``"<a " * N``
or ``"<!--" * N`` cost quadratic time (120 KB: minutes). What it cannot finish, beyond
:data:`MAX_UNFINISHED_CHARS`, is read as text with the tags taken out, in one pass.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from inbox_poller.matching.links import clean_url, is_http_url, join_angle_urls

MAX_LINK_TEXT_CHARS = 300
MAX_HREFS = 10_000
"""Elements with an ``href`` read from one part (the extractor keeps 1,000 distinct links)."""
MAX_OPEN_LINKS = 16
"""Link elements open at once that gather the words inside them: the innermost ones."""
MAX_UNFINISHED_CHARS = 2048
"""Markup after the first tag or comment that never ends, beyond which it is read as text
(``html.parser`` would retry each unfinished tag in it from its start)."""

_ANGLE_TAG_URL_RE = re.compile(r"(?i)<((?:URL:)?https?://[^<>\s\"]+)>")
_HREF_ATTR_RE = re.compile(r"""(?i)\bhref\s*=\s*(?:"([^"]*)"|'([^']*)')""")
# a tag ends at the first ">" and never spans a "<": each character is scanned once
_TAG_RE = re.compile(r"<[^<>]{0,2000}>")
_VOID_ELEMENTS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param"}
    | {"source", "track", "wbr", "basefont", "bgsound", "frame", "keygen", "spacer"}
)
_HIDDEN_ELEMENTS = frozenset({"script", "style"})


@dataclass
class Markup:
    """What one HTML part holds."""

    text: str = ""
    hrefs: list[tuple[str, str]] = field(default_factory=list)
    """(normalised URL, the words that label it), in document order."""
    problem: str | None = None
    """Why some of the part was not read as HTML, when that happened."""


@dataclass
class _Href:
    """One element with an ``href``, and the words gathered for it (internal)."""

    href: str
    attributes: list[str]
    """Its ``title`` and ``aria-label``."""
    text: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    """The ``alt`` and ``title`` of the images inside it."""
    room: int = 2 * MAX_LINK_TEXT_CHARS
    """Characters of text it may still gather (the words are cut to MAX_LINK_TEXT_CHARS)."""

    def add_text(self, data: str) -> None:
        words = data.strip()
        if words and self.room > 0:
            self.text.append(words[: self.room])
            self.room -= len(words)

    def add_image(self, words: list[str]) -> None:
        for word in words:
            if self.room > 0:
                self.images.append(word[: self.room])
                self.room -= len(word)

    def words(self) -> str:
        parts = [" ".join(self.text), *self.attributes[:2], *self.images]
        text = " ".join(" ".join(w.split()) for w in parts if w.strip())
        return text[:MAX_LINK_TEXT_CHARS]


class _StreamReader(HTMLParser):
    """Gathers text, hrefs, the base URL and comment hrefs as ``html.parser`` reads."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self.hrefs: list[_Href] = []
        self.comment_hrefs: list[str] = []
        self.base: str | None = None
        self.base_seen = False
        self.hidden: str | None = None
        """The ``<script>`` or ``<style>`` being read: its content is no text."""
        self.open: list[tuple[str, _Href]] = []
        """Open elements with an href, innermost last, at most MAX_OPEN_LINKS."""
        self.dropped_hrefs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_ELEMENTS:
            self.hidden = tag
            return
        values: dict[str, str] = {}
        for name, value in attrs:
            values.setdefault(name, value or "")  # a browser keeps the first of duplicates
        if tag == "img":
            words = [values.get("alt", ""), values.get("title", "")]
            for _tag, link in self.open:
                link.add_image([w for w in words if w.strip()])
        href = values.get("href")
        if href is None:
            return
        if tag == "base":
            if not self.base_seen:  # the first <base href> counts, if it is a web URL
                self.base_seen = True
                self.base = href if is_http_url(href.strip()) else None
            return
        if tag == "link":
            return
        if len(self.hrefs) >= MAX_HREFS:
            self.dropped_hrefs += 1
            return
        link = _Href(href, [values.get("title", ""), values.get("aria-label", "")])
        self.hrefs.append(link)
        if tag not in _VOID_ELEMENTS:
            self.open.append((tag, link))
            del self.open[:-MAX_OPEN_LINKS]

    def handle_endtag(self, tag: str) -> None:
        if self.hidden is not None:
            if tag == self.hidden:
                self.hidden = None
            return
        for index in range(len(self.open) - 1, -1, -1):
            if self.open[index][0] == tag:
                del self.open[index:]
                return

    def handle_data(self, data: str) -> None:
        if self.hidden is not None:
            return
        self.texts.append(data)
        for _tag, link in self.open:
            link.add_text(data)

    def handle_comment(self, data: str) -> None:
        self.comment_hrefs += _quoted_hrefs(data)

    def read_unfinished(self) -> int:
        """Take over what ``html.parser`` could not finish when it is long; return its size.

        The rest of the part is read as text without its tags (hrefs in quotes still
        count), unless it is inside ``<script>``/``<style>``, which ``html.parser`` drops.
        """
        tail: str = self.rawdata  # html.parser keeps the unfinished markup here
        if len(tail) <= MAX_UNFINISHED_CHARS:
            return 0
        self.rawdata = ""
        if self.hidden is None:
            self.comment_hrefs += _quoted_hrefs(tail)
            self.handle_data(html.unescape(_TAG_RE.sub(" ", tail)))
        return len(tail)


def read_markup(markup: str) -> Markup:
    """Return the visible text of *markup* and every ``href`` in it, with its words."""
    # "<https://...>" in text is not a tag; html.parser would swallow it as one
    markup = _ANGLE_TAG_URL_RE.sub(r"&lt;\1&gt;", join_angle_urls(markup))
    found = Markup()
    reader = _StreamReader()
    try:
        reader.feed(markup)
        unfinished = reader.read_unfinished()
        reader.close()
    except Exception as exc:  # html.parser rejects some markup outright
        found.problem = f"HTML could not be parsed ({type(exc).__name__}); read as text"
        found.hrefs += [(u, "") for u in _clean_all(_quoted_hrefs(markup), None)]
        found.text = html.unescape(_TAG_RE.sub(" ", markup))
        return found
    if unfinished:
        found.problem = (
            f"HTML: the last {unfinished:,} characters start with a tag that never ends;"
            " read as text"
        )
    elif reader.dropped_hrefs:
        found.problem = f"HTML: more than {MAX_HREFS:,} links; the rest were ignored"
    for link in reader.hrefs:
        url = clean_url(link.href, reader.base)
        if url:
            found.hrefs.append((url, link.words()))
    found.hrefs += [(u, "") for u in _clean_all(reader.comment_hrefs, reader.base)]
    found.text = " ".join(reader.texts)
    return found


def _quoted_hrefs(markup: str) -> list[str]:
    return [html.unescape(m.group(1) or m.group(2) or "") for m in _HREF_ATTR_RE.finditer(markup)]


def _clean_all(hrefs: list[str], base: str | None) -> list[str]:
    return [url for url in (clean_url(href, base) for href in hrefs) if url]
