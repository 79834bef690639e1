"""Read one raw mail into a :class:`~inbox_poller.models.Notification` (pure, no I/O).

Pinpointe does not document its notification mail (pinpointe-api.md, gap 1), so
nothing here assumes a subject, a sender or a template. Every ``text/*`` and
HTML part is read, at any depth (nested multiparts, text attachments, forwarded
``message/rfc822``), in any transfer encoding and charset. Links come from
``href`` attributes and from bare URLs; tracking redirects are unwrapped; tokens
the mail labels as a job ID are collected. Judging the links and matching the
job IDs is ``match.py``'s business; the rules are stated in docs/matching.md.

Hostile input is expected: decoded parts, links and parts walked are capped, and
malformed MIME becomes a defect string, never an exception. :class:`ExtractError`
is raised only when nothing at all can be read.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email
import email.policy
import html
import itertools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import unquote, urljoin, urlsplit

from bs4 import BeautifulSoup, Comment
from bs4.element import Tag

from inbox_poller.errors import ExtractError
from inbox_poller.models import Link, Notification

logger = logging.getLogger(__name__)

MAX_PART_BYTES = 2 * 1024 * 1024
"""Decoded bytes read from one part; a hostile mail cannot make us parse more."""
MAX_HTML_CHARS = 1024 * 1024
"""Characters of one HTML part given to the parser (html.parser needs about 2 s per MiB of
the worst markup)."""
MAX_TOTAL_BYTES = 4 * 1024 * 1024
"""Decoded bytes read from all parts together."""
MAX_PARTS = 200
"""MIME parts walked per mail, nested ones included."""
MAX_DEPTH = 12
"""Nesting of multiparts and attached messages followed."""
MAX_LINKS = 1000
MAX_URL_CHARS = 8192
MAX_LINK_TEXT_CHARS = 300
MAX_LABEL_CHARS = 60
"""Words kept from before a URL in running text, to label it."""
MAX_UNWRAP_DEPTH = 3
"""Tracking redirects unwrapped inside one another (a Safe Links wrapper around a
click tracker, for example)."""
MAX_DEFECTS = 50

# --- URLs -------------------------------------------------------------------------

# RFC 3986 characters only: a URL in running text ends at the first space, quote,
# bracket or non-ASCII character (Japanese text puts "。" right after a link).
_BARE_URL_RE = re.compile(r"(?i)\bhttps?://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
# RFC 3986 appendix C: a URL in angle brackets may be broken over lines.
_ANGLE_URL_RE = re.compile(
    r"(?i)<\s*(?:URL:)?\s*(https?://[^<>\s]+(?:[ \t]*\r?\n[ \t]*[^<>\s]+)+)\s*>"
)
_ANGLE_TAG_URL_RE = re.compile(r"(?i)<((?:URL:)?https?://[^<>\s\"]+)>")
_TRAILING_PUNCT = ".,;:!?'\"*"
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_AUTHORITY_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)")
_HTTP_RE = re.compile(r"(?i)^https?://")
_ENCODED_HTTP_RE = re.compile(r"(?i)^https?(?:%3A|:)(?:%2F|/)")
_PROOFPOINT_V2_RE = re.compile(r"(?i)^https?-3A__")
_PROOFPOINT_V3_RE = re.compile(r"(?i)/v3/__(https?://.+?)__;")
_EMBEDDED_URL_RE = re.compile(r"(?i)https?(?::|%3A)(?://|%2F%2F)")
_BASE64_VALUE_RE = re.compile(r"^[A-Za-z0-9+/_-]{16,}={0,2}$")
_HREF_ATTR_RE = re.compile(r"""(?i)\bhref\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_TAG_RE = re.compile(r"<[^>]{0,2000}>")
_HTML_SNIFF_RE = re.compile(r"(?i)<(?:html|body|div|table|p|br|a\s[^>]{0,500}href)\b")
_META_CHARSET_RE = re.compile(
    rb"""(?i)<meta[^>]{0,200}charset\s*=\s*["']?([A-Za-z0-9_.:-]{1,40})"""
)
_SPACES_RE = re.compile(r"[ \t\f\v\u00a0\u200b\u200c\u200d\u2060\ufeff]+")

# --- job IDs ----------------------------------------------------------------------

# "Job ID: 123", "job #123", "jobid=123", "Job 123", "export id 123", "Export 123",
# "request id 123", '"jobId": "123"'. Bounded quantifiers only: this runs on
# attacker-controlled text.
_JOB_LABEL_RE = re.compile(
    r"(?i)(?<![A-Za-z0-9])"
    r"(?:async[ _-]?)?(?:(?:export|async)[ _-]?)?"
    r"(?P<label>jobs?|exports?|requests?)"
    r"(?P<suffix>[ _-]?(?:identifiers?|ids?|numbers?|nos?\.?|num|nr\.?|n[°º]|refs?|#|№)"
    r"(?![A-Za-z]))?"
    r"(?P<sep>[\s:#=\"'()\[\]\-“”‘’«»„：]{0,6})"
    r"(?:is[\s:]{1,3})?"
    r"(?P<value>[A-Za-z0-9][A-Za-z0-9._-]{0,80})"
)
_JOB_VALUE_RE = re.compile(r"^[A-Za-z0-9._-]{3,64}$")
_LIST_NEXT_RE = re.compile(r"^\s*(?:,|and|&)\s*([A-Za-z0-9][A-Za-z0-9._-]{2,63})")
_NOT_AN_ID_RE = re.compile(
    r"^(?:\d{4}[-./]\d{1,2}(?:[-./]\d{1,2})?|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}|\d+(?:[.,]\d+)+)$"
)
_FILE_EXT_RE = re.compile(r"(?i)(?:\.(?:json|jsonl|ndjson|gz|csv|zip|xml|txt|tgz|tar|zst))+$")
_JOB_PARAM_NAMES = frozenset(
    {
        "job",
        "jobid",
        "jobids",
        "jobno",
        "jobnumber",
        "jobref",
        "exportid",
        "exportjob",
        "exportjobid",
        "asyncjobid",
        "asyncjob",
    }
)
_JOB_PATH_SEGMENTS = frozenset({"job", "jobs", "jobid", "asyncjob", "asyncjobs", "exportjob"})
_JOB_HEADER_RE = re.compile(r"(?i)^x-(?:[a-z0-9]+-){0,3}(?:async-)?(?:job|export)(?:-?id)?$")
_TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,63}")

# --- charsets ---------------------------------------------------------------------

_CHARSET_ALIASES = {
    "ks_c_5601-1987": "cp949",
    "x-sjis": "shift_jis",
    "gb2312": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "x-mac-roman": "mac-roman",
    "unicode-1-1-utf-7": "utf-7",
}
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SINGLE_BYTE_RE = re.compile(r"^(?:ascii|latin-1|iso8859-\d+|cp125\d|mac-\w+|koi8-\w+)$")


@dataclass
class _Reader:
    """What has been read so far from one mail (internal, mutable)."""

    texts: list[str] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    header_ids: list[str] = field(default_factory=list)
    parts: int = 0
    budget: int = MAX_TOTAL_BYTES
    _seen: set[tuple[str, str, str]] = field(default_factory=set)

    def defect(self, text: str) -> None:
        if text not in self.defects and len(self.defects) < MAX_DEFECTS:
            self.defects.append(text)

    def add_text(self, text: str) -> None:
        """Keep *text* with runs of spaces and of blank lines collapsed."""
        lines: list[str] = []
        for line in _SPACES_RE.sub(" ", text).splitlines():
            line = line.strip()
            if line or (lines and lines[-1]):
                lines.append(line)
        tidy = "\n".join(lines).strip()
        if tidy:
            self.texts.append(tidy)

    def add_link(self, url: str, text: str, source: str, depth: int = 0) -> None:
        """Add a link, then (right after it) every redirect target found inside it."""
        key = (url, text, source)
        if not url or key in self._seen:
            return
        if len(self.links) >= MAX_LINKS:
            self.defect(f"more than {MAX_LINKS} links: the rest were ignored")
            return
        self._seen.add(key)
        self.links.append(Link(url=url, text=text, source=source))
        if depth < MAX_UNWRAP_DEPTH:
            for target in unwrap_redirect(url):
                self.add_link(target, text, "unwrapped", depth + 1)


def extract(raw: bytes) -> Notification:
    """Read *raw* (one RFC 5322 message) into a :class:`Notification`.

    Never raises on malformed MIME: problems are listed in ``defects``.
    :raises ExtractError: *raw* is empty, or not even a header could be read.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ExtractError(f"a mail must be bytes, not {type(raw).__name__}")
    data = bytes(raw)
    if not data.strip():
        raise ExtractError("the mail is empty")
    try:
        return _extract(data)
    except ExtractError:
        raise
    except Exception as exc:  # a bug or a parser corner case must not kill the caller
        raise ExtractError(f"the mail could not be read ({type(exc).__name__})") from exc


def _extract(data: bytes) -> Notification:
    reader = _Reader()
    try:
        msg = email.message_from_bytes(data, policy=email.policy.default)
    except Exception as exc:  # the parser is lenient; this is a last resort
        reader.defect(f"the MIME structure could not be parsed ({type(exc).__name__})")
        _read_text(data.decode("utf-8", "replace"), reader)
        return _notification(None, None, "", reader)
    _record_defects("message", msg, reader)
    subject = _header_text(msg, "Subject", reader)
    sender = _sender(msg, reader)
    message_id = _header_text(msg, "Message-ID", reader) or None
    _collect_header_ids(msg, reader)
    _walk(msg, reader, depth=0)
    if not reader.texts and not subject and not reader.links and not _has_headers(msg):
        raise ExtractError("nothing readable: no headers and no text")
    return _notification(message_id, sender, subject, reader)


def _notification(
    message_id: str | None, sender: str | None, subject: str, reader: _Reader
) -> Notification:
    links = _without_broken_copies(reader.links)
    candidates = find_candidate_job_ids(subject, reader.texts, links, reader.header_ids)
    return Notification(
        message_id=message_id,
        sender=sender,
        subject=subject,
        texts=tuple(reader.texts),
        links=links,
        candidate_job_ids=candidates,
        defects=tuple(reader.defects),
    )


def _without_broken_copies(links: list[Link]) -> tuple[Link, ...]:
    """Drop a text part's URL that is only the start of an HTML link's URL.

    Text parts are often wrapped hard at 76 columns, which cuts a long URL in two;
    the HTML alternative holds it whole. The cut copy goes, with the redirect
    targets unwrapped from it (which follow it).
    """
    hrefs = [link.url for link in links if link.source == "href"]
    kept: list[Link] = []
    dropping = False
    for link in links:
        if link.source == "unwrapped" and dropping:
            continue
        dropping = link.source == "text" and any(
            len(h) > len(link.url) and h.startswith(link.url) for h in hrefs
        )
        if not dropping:
            kept.append(link)
    return tuple(kept)


# --- headers ----------------------------------------------------------------------


def _has_headers(msg: Message) -> bool:
    try:
        return bool(msg.keys())
    except Exception:
        return False


def _header_text(msg: Message, name: str, reader: _Reader) -> str:
    """Return the decoded (RFC 2047) header, or its raw text when decoding fails."""
    try:
        value = msg.get(name)
        text = "" if value is None else str(value)
    except Exception as exc:
        reader.defect(f"header {name} could not be decoded ({type(exc).__name__})")
        text = _raw_header(msg, name)
    return " ".join(_clean_surrogates(text).split())


def _raw_header(msg: Message, name: str) -> str:
    for key, value in msg.raw_items():
        if key.lower() == name.lower():
            return str(value)
    return ""


def _sender(msg: Message, reader: _Reader) -> str | None:
    """Return the first From address; a filter, never authentication (reliability.md 4.2)."""
    try:
        header = msg.get("From")
        addresses = getattr(header, "addresses", ())
        for address in addresses:
            if address.addr_spec and address.addr_spec != "<>":
                return _clean_surrogates(str(address.addr_spec))
    except Exception as exc:
        reader.defect(f"header From could not be parsed ({type(exc).__name__})")
    found = _BARE_EMAIL_RE.search(_raw_header(msg, "From"))
    return found.group(0) if found else None


_BARE_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def _collect_header_ids(msg: Message, reader: _Reader) -> None:
    """Take job IDs from vendor headers such as ``X-Job-ID`` or ``X-Export-Id``."""
    try:
        items = list(msg.raw_items())
    except Exception:
        return
    for name, value in items:
        if _JOB_HEADER_RE.match(name):
            for token in _TOKEN_RE.findall(str(value))[:5]:
                reader.header_ids.append(token)


def _record_defects(where: str, part: Message, reader: _Reader) -> None:
    for defect in getattr(part, "defects", ()):
        reader.defect(f"{where}: {type(defect).__name__}")


def _clean_surrogates(text: str) -> str:
    """Turn the parser's surrogate escapes (raw 8-bit header bytes) back into text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogateescape")
        return _decode_bytes(data, None, truncated=False)
    return text


# --- the MIME walk ----------------------------------------------------------------


def _walk(part: Message, reader: _Reader, depth: int) -> None:
    reader.parts += 1
    if reader.parts > MAX_PARTS:
        reader.defect(f"more than {MAX_PARTS} MIME parts: the rest were ignored")
        return
    if depth > MAX_DEPTH:
        reader.defect(f"MIME nesting deeper than {MAX_DEPTH}: ignored")
        return
    try:
        ctype = part.get_content_type()
    except Exception:
        ctype = "text/plain"
    where = f"part {reader.parts} ({ctype})"
    if part.is_multipart():
        _record_defects(where, part, reader)
        forwarded = ctype in ("message/rfc822", "message/global")
        for child in _children(part):
            if forwarded:
                _read_inner_headers(child, reader)
            _walk(child, reader, depth + 1)
        return
    _read_leaf(part, ctype, where, reader, depth)


def _children(part: Message) -> Iterator[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        for child in payload:
            if isinstance(child, Message):
                yield child


def _read_inner_headers(inner: Message, reader: _Reader) -> None:
    """A forwarded notification's own subject can carry the job ID: keep it as text."""
    subject = _header_text(inner, "Subject", reader)
    sender = _header_text(inner, "From", reader)
    reader.add_text(f"From: {sender}\nSubject: {subject}")


def _read_leaf(part: Message, ctype: str, where: str, reader: _Reader, depth: int) -> None:
    kind = _leaf_kind(part, ctype)
    if kind is None:
        return
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:
        reader.defect(f"{where}: the body could not be decoded ({type(exc).__name__})")
        return
    _record_defects(where, part, reader)  # decoding is what finds bad base64
    if not isinstance(data, bytes):
        return
    if kind == "message":
        _read_attached_message(data, where, reader, depth)
        return
    text = _decode_part(part, data, kind, where, reader)
    if text is None:
        return
    if kind == "plain" and _HTML_SNIFF_RE.search(text[:65536]):
        kind = "html"  # HTML sent as text/plain, or a multipart whose boundary is missing
    if kind == "html":
        if len(text) > MAX_HTML_CHARS:
            reader.defect(f"{where}: HTML over {MAX_HTML_CHARS} characters, only the start read")
            text = text[:MAX_HTML_CHARS]
        _read_html(text, reader)
    else:
        _read_text(text, reader)


def _read_attached_message(data: bytes, where: str, reader: _Reader, depth: int) -> None:
    """Read an attached ``.eml``, or a ``message/rfc822`` the parser left as bytes."""
    try:
        inner = email.message_from_bytes(data[:MAX_PART_BYTES], policy=email.policy.default)
    except Exception:
        reader.defect(f"{where}: the attached message could not be parsed")
        return
    _read_inner_headers(inner, reader)
    _walk(inner, reader, depth + 1)


def _decode_part(part: Message, data: bytes, kind: str, where: str, reader: _Reader) -> str | None:
    """Return the part's text within the size caps, or None once the mail's budget is spent."""
    limit = min(MAX_PART_BYTES, reader.budget)
    if limit <= 0:
        reader.defect(f"more than {MAX_TOTAL_BYTES} bytes of text: {where} and later ignored")
        return None
    truncated = len(data) > limit
    if truncated:
        reader.defect(f"{where}: larger than {limit} bytes, only the start was read")
        data = data[:limit]
    reader.budget -= len(data)
    declared = _param(part, "charset")
    if kind == "html" and declared is None:
        sniffed = _META_CHARSET_RE.search(data[:4096])
        declared = sniffed.group(1).decode("ascii") if sniffed else None
    text = _decode_bytes(data, declared, truncated=truncated)
    if kind == "plain" and (_param(part, "format") or "").lower() == "flowed":
        text = _unflow(text, delsp=(_param(part, "delsp") or "").lower() == "yes")
    return text


def _leaf_kind(part: Message, ctype: str) -> str | None:
    """Return ``html``, ``plain``, ``message`` or None (not text: skipped)."""
    if ctype in ("text/html", "application/xhtml+xml"):
        return "html"
    if ctype.startswith(("text/", "multipart/")) or ctype == "application/json":
        return "plain"  # a multipart whose boundary never appears is one text body
    if ctype in ("message/rfc822", "message/global"):
        return "message"
    try:
        filename = (part.get_filename() or "").lower()
    except Exception:
        return None
    if filename.endswith((".html", ".htm")):
        return "html"
    if filename.endswith((".txt", ".text")):
        return "plain"
    if filename.endswith(".eml"):
        return "message"
    return None


def _param(part: Message, name: str) -> str | None:
    try:
        value = part.get_param(name)
    except Exception:
        return None
    if isinstance(value, tuple):  # RFC 2231 form: (charset, language, value)
        value = value[2]
    return str(value) if value else None


# --- charsets ---------------------------------------------------------------------


def _codec(charset: str | None) -> str | None:
    if not charset:
        return None
    name = charset.strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return None


def _decode_bytes(data: bytes, declared: str | None, *, truncated: bool) -> str:
    """Decode with the best guess: BOM, then the declared charset, then fallbacks.

    A declared single-byte charset is tried after UTF-8: valid multi-byte UTF-8 is
    almost never Latin-1 text, and mislabelled UTF-8 is common. The last resort,
    Latin-1, cannot fail.
    """
    for order in _decode_order(data, _codec(declared)):
        text = _try_decode(data, order, final=not truncated)
        if text is not None:
            return text.replace("\x00", "")
    return data.decode("latin-1").replace("\x00", "")


def _decode_order(data: bytes, codec: str | None) -> list[str]:
    for bom, name in _BOMS:
        if data.startswith(bom):
            return [name]
    order: list[str] = []
    if codec is None or not codec.startswith(("utf-16", "utf-32")):
        # UTF-16 without a BOM (or with a wrong label): many NUL bytes
        sample = data[:4096]
        if sample and sample.count(0) > len(sample) // 4:
            odd_nuls = sample[1::2].count(0)
            order += (
                ["utf-16-le", "utf-16-be"]
                if odd_nuls >= sample[::2].count(0)
                else [
                    "utf-16-be",
                    "utf-16-le",
                ]
            )
    if codec is not None and not _SINGLE_BYTE_RE.match(codec):
        order.append(codec)
    order.append("utf-8")
    if codec is not None and _SINGLE_BYTE_RE.match(codec):
        order.append(codec)
    order += ["cp1252", "latin-1"]
    return order


def _try_decode(data: bytes, codec: str, *, final: bool) -> str | None:
    try:
        decoder = codecs.getincrementaldecoder(codec)("strict")
        text = decoder.decode(data, final=final)
    except Exception:  # UnicodeDecodeError, or a bytes-to-bytes "charset" like base64
        return None
    return text if isinstance(text, str) else None


def _unflow(text: str, *, delsp: bool) -> str:
    """Undo RFC 3676 format=flowed, whose soft breaks can split a long URL."""
    out: list[str] = []
    pending = ""
    for raw_line in text.split("\n"):
        line = raw_line.rstrip("\r")
        if line.startswith(" "):
            line = line[1:]  # space-stuffing
        if line.endswith(" ") and line != "-- ":
            pending += line[:-1] if delsp else line
        else:
            out.append(pending + line)
            pending = ""
    if pending:
        out.append(pending)
    return "\n".join(out)


# --- HTML and text ----------------------------------------------------------------


def _read_html(markup: str, reader: _Reader) -> None:
    # "<https://...>" in text is not a tag; html.parser would swallow it as one
    markup = _ANGLE_URL_RE.sub(lambda m: "<" + "".join(m.group(1).split()) + ">", markup)
    markup = _ANGLE_TAG_URL_RE.sub(r"&lt;\1&gt;", markup)
    try:
        soup = BeautifulSoup(markup, "html.parser")
        for tag in soup(["script", "style"]):
            tag.decompose()
        base = _base_href(soup)
        for tag in soup.find_all(href=True):
            if isinstance(tag, Tag) and tag.name not in ("link", "base"):
                url = _clean_url(_attr(tag, "href"), base)
                if url:
                    reader.add_link(url, _anchor_text(tag), "href")
        for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
            _read_comment_hrefs(str(comment), base, reader)  # Outlook-only (VML) buttons
        text = soup.get_text(" ")
    except Exception as exc:  # html.parser rejects some markup outright
        reader.defect(f"HTML could not be parsed ({type(exc).__name__}); read as text")
        _read_comment_hrefs(markup, None, reader)
        text = html.unescape(_TAG_RE.sub(" ", markup))
    _read_text(text, reader)


def _read_comment_hrefs(markup: str, base: str | None, reader: _Reader) -> None:
    for found in _HREF_ATTR_RE.finditer(markup):
        url = _clean_url(html.unescape(found.group(1) or found.group(2) or ""), base)
        if url:
            reader.add_link(url, "", "href")


def _base_href(soup: BeautifulSoup) -> str | None:
    base = soup.find("base", href=True)
    href = _attr(base, "href") if isinstance(base, Tag) else ""
    return href if _HTTP_RE.match(href.strip()) else None


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


def _read_text(text: str, reader: _Reader) -> None:
    text = _ANGLE_URL_RE.sub(lambda m: "<" + "".join(m.group(1).split()) + ">", text)
    reader.add_text(text)
    for url, label in labelled_bare_urls(text.replace("\\/", "/")):  # JSON writes "\/"
        reader.add_link(url, label, "text")


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
    for match in _BARE_URL_RE.finditer(text):
        if match.end() - match.start() > MAX_URL_CHARS:
            continue
        url = _clean_url(_strip_trailing(match.group(0)), None)
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


def _clean_url(raw: str, base: str | None) -> str:
    """Normalise an href as a browser would: trim, drop tabs/newlines, resolve, lower-case
    the scheme and host. Returns "" for empty and same-page (``#...``) links."""
    url = raw.strip(
        "\x00\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f"
        "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f "
    )
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
        for _name, value in _split_params(params):
            target = _as_url(value)
            if target and target != url and target not in targets:
                targets.append(target)
    if targets:
        return targets
    v3 = _PROOFPOINT_V3_RE.search(url)
    if v3:
        return [_clean_url(v3.group(1), None)]
    start = len(parts.scheme) + 3 + len(parts.netloc)
    embedded = _EMBEDDED_URL_RE.search(url, start)
    if embedded and parts.scheme.lower() in ("http", "https"):
        target = _as_url(url[embedded.start() :])
        return [target] if target and target != url else []
    return []


def _split_params(query: str) -> list[tuple[str, str]]:
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
            return _clean_url(_strip_trailing(value).replace(" ", "%20"), None) or None
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


# --- job IDs ----------------------------------------------------------------------


def find_candidate_job_ids(
    subject: str,
    texts: tuple[str, ...] | list[str],
    links: tuple[Link, ...] | list[Link],
    extra: list[str] | tuple[str, ...] = (),
) -> tuple[str, ...]:
    """Return the tokens the mail labels as a job ID, de-duplicated in order of appearance.

    Sources: the subject and texts ("Job ID: 123", "export 123"), link query
    parameters (``jobid=123``) and path segments (``/jobs/123/``), and vendor
    headers (*extra*). A value is 3-64 characters of ``[A-Za-z0-9._-]`` with a
    digit; dates, decimals and file extensions are not job IDs.
    """
    found: list[str] = []
    for text in (subject, *texts):
        found += _labelled_ids(_BARE_URL_RE.sub(" ", text))
    for link in links:
        found += url_job_ids(link.url)
    found += list(extra)
    result: list[str] = []
    for value in found:
        cleaned = _clean_job_id(value)
        if cleaned and cleaned not in result:
            result.append(cleaned)
    return tuple(result)


def _labelled_ids(text: str) -> list[str]:
    values: list[str] = []
    for found in _JOB_LABEL_RE.finditer(text):
        value = found.group("value")
        bare = not found.group("suffix") and not re.search(r"[:#=]", found.group("sep"))
        if bare and found.group("label").lower().startswith("request"):
            continue  # "request 2 of 3": only "request id/#/:" labels a job
        tail = text[found.end() : found.end() + 1]
        if tail == "%":
            continue
        values.append(value)
        plural = (found.group("suffix") or "").rstrip(" .").lower().endswith("s") or found.group(
            "label"
        ).lower().endswith("s")
        if plural:
            values += _list_continuation(text, found.end())
    return values


def _list_continuation(text: str, pos: int) -> list[str]:
    """Read "Job IDs: 111, 222 and 333" past its first value."""
    values: list[str] = []
    for _ in range(10):
        following = _LIST_NEXT_RE.match(text[pos : pos + 80])
        if not following:
            break
        values.append(following.group(1))
        pos += following.end()
    return values


def url_job_ids(url: str) -> list[str]:
    """Return job IDs a URL labels: ``?jobid=123``, ``&export_id=123``, ``/jobs/123/``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    values: list[str] = []
    for params in (parts.query, parts.fragment):
        for name, value in _split_params(params):
            if _normal_name(name) in _JOB_PARAM_NAMES:
                values += [v for v in re.split(r"[,\s]+", value) if v]
    segments = [unquote(s) for s in parts.path.split("/")]
    for before, after in itertools.pairwise(segments):
        if _normal_name(before) in _JOB_PATH_SEGMENTS and after:
            values.append(after)
    return values


def _normal_name(name: str) -> str:
    return re.sub(r"[-_.\s]", "", name).lower()


def _clean_job_id(value: str) -> str | None:
    value = _FILE_EXT_RE.sub("", value.strip()).rstrip("._-")
    if not _JOB_VALUE_RE.match(value) or not any(c.isdigit() for c in value):
        return None
    if not value[0].isalnum() or _NOT_AN_ID_RE.match(value):
        return None
    return value
