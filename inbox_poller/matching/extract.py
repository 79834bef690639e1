"""Read one raw mail into a :class:`~inbox_poller.models.Notification` (pure, no I/O).

Pinpointe does not document its notification mail (docs/pinpointe-api.md, gap 1), so
nothing here assumes a subject, a sender or a template. Every ``text/*`` and
HTML part is read, at any depth (nested multiparts, text attachments, forwarded
``message/rfc822``), in any transfer encoding and charset. This module walks the
MIME tree and assembles the result; its helpers own the nouns: ``headers``
(header fields), ``charsets`` (bytes to text), ``markup`` (HTML), ``links``
(URLs and redirects) and ``jobids`` (labelled job IDs). Judging the links and matching the job IDs
is ``verdicts.py``'s and ``match.py``'s business; docs/matching.md states the rules.

Hostile input is expected: the parser runs under caps (``parser.py``), decoded parts,
links and parts walked are capped, and malformed MIME becomes a defect string, never an
exception. :class:`ExtractError` is raised only when nothing at all can be read, and
:class:`MailTooCostly` when the mail breaks a cap that bounds the cost of reading it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message

from inbox_poller.errors import ExtractError, MailTooCostly
from inbox_poller.matching.charsets import decode_bytes, unflow
from inbox_poller.matching.headers import (
    authentication_results,
    from_domain,
    has_headers,
    header_text,
    raw_items,
    sender_address,
)
from inbox_poller.matching.jobids import find_candidate_job_ids, header_job_ids
from inbox_poller.matching.links import (
    MAX_LINKS,
    join_angle_urls,
    labelled_bare_urls,
    unwrap_redirect,
    without_broken_copies,
)
from inbox_poller.matching.markup import read_markup
from inbox_poller.matching.parser import ParseBudget, parse_mail
from inbox_poller.models import Link, Notification

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
MAX_UNWRAP_DEPTH = 3
"""Tracking redirects unwrapped inside one another (a Safe Links wrapper around a
click tracker, for example)."""
MAX_DEFECTS = 50

_HTML_SNIFF_RE = re.compile(r"(?i)<(?:html|body|div|table|p|br|a\s[^<>]{0,500}href)\b")
_META_CHARSET_RE = re.compile(
    rb"""(?i)<meta[^>]{0,200}charset\s*=\s*["']?([A-Za-z0-9_.:-]{1,40})"""
)
_SPACES_RE = re.compile(r"[ \t\f\v\u00a0\u200b\u200c\u200d\u2060\ufeff]+")


@dataclass
class _Reader:
    """What has been read so far from one mail (internal, mutable)."""

    texts: list[str] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    parts: int = 0
    budget: int = MAX_TOTAL_BYTES
    parsing: ParseBudget = field(default_factory=ParseBudget)
    _seen: set[Link] = field(default_factory=set)

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

    def add_link(
        self, url: str, text: str, source: str, via: str | None = None, depth: int = 0
    ) -> None:
        """Add a link, then (right after it) every redirect target found inside it."""
        link = Link(url=url, text=text, source=source, via=via)
        if not url or link in self._seen:
            return
        if len(self.links) >= MAX_LINKS:
            self.defect(f"more than {MAX_LINKS} links: the rest were ignored")
            return
        self._seen.add(link)
        self.links.append(link)
        if depth < MAX_UNWRAP_DEPTH:
            for target in unwrap_redirect(url):
                self.add_link(target, text, "unwrapped", url, depth + 1)


def extract(raw: bytes) -> Notification:
    """Read *raw* (one RFC 5322 message) into a :class:`Notification`.

    Never raises on malformed MIME: problems are listed in ``defects``.
    :raises ExtractError: *raw* is empty, or not even a header could be read.
    :raises MailTooCostly: *raw* breaks a cap of the parser (``parser.py``), or reading it
        ran out of memory.
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
    except MemoryError:
        raise MailTooCostly("it needs more memory than the process may have") from None
    except Exception as exc:  # a bug or a parser corner case must not kill the caller
        raise ExtractError(f"the mail could not be read ({type(exc).__name__})") from exc


def _extract(data: bytes) -> Notification:
    reader = _Reader()
    try:
        msg = parse_mail(data, reader.parsing)
    except MailTooCostly:
        raise
    except Exception as exc:  # the parser is lenient; this is a last resort
        reader.defect(f"the MIME structure could not be parsed ({type(exc).__name__})")
        _read_text(data.decode("utf-8", "replace"), reader)
        return _notification(reader, subject="")
    _record_defects("message", msg, reader)
    # the mail's own fields first: forwarded messages share the budget for parsing fields
    subject = header_text(msg, "Subject", reader.defect)
    sender = sender_address(msg, reader.defect)
    message_id = header_text(msg, "Message-ID", reader.defect) or None
    domain = from_domain(msg)
    auth_results = authentication_results(msg, reader.defect)
    _walk(msg, reader, depth=0)
    for name in reader.parsing.unparsed:
        reader.defect(f"header {name} too long to parse: read as written")
    if not reader.texts and not subject and not reader.links and not has_headers(msg):
        raise ExtractError("nothing readable: no headers and no text")
    return _notification(
        reader,
        subject=subject,
        sender=sender,
        message_id=message_id,
        header_ids=header_job_ids(raw_items(msg)),
        auth_results=auth_results,
        domain=domain,
    )


def _notification(
    reader: _Reader,
    *,
    subject: str,
    sender: str | None = None,
    message_id: str | None = None,
    header_ids: list[str] | None = None,
    auth_results: tuple[str, ...] = (),
    domain: str | None = None,
) -> Notification:
    links = without_broken_copies(reader.links)
    candidates = find_candidate_job_ids(subject, reader.texts, links, header_ids or ())
    return Notification(
        message_id=message_id,
        sender=sender,
        subject=subject,
        texts=tuple(reader.texts),
        links=links,
        candidate_job_ids=candidates,
        defects=tuple(reader.defects),
        auth_results=auth_results,
        from_domain=domain,
    )


def _record_defects(where: str, part: Message, reader: _Reader) -> None:
    for defect in getattr(part, "defects", ()):
        reader.defect(f"{where}: {type(defect).__name__}")


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
    subject = header_text(inner, "Subject", reader.defect)
    sender = header_text(inner, "From", reader.defect)
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
        inner = parse_mail(data[:MAX_PART_BYTES], reader.parsing, depth=depth + 1)
    except MailTooCostly:
        raise
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
    text = decode_bytes(data, declared, truncated=truncated)
    if kind == "plain" and (_param(part, "format") or "").lower() == "flowed":
        text = unflow(text, delsp=(_param(part, "delsp") or "").lower() == "yes")
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


# --- HTML and text ----------------------------------------------------------------


def _read_html(markup: str, reader: _Reader) -> None:
    found = read_markup(markup)
    for url, words in found.hrefs:
        reader.add_link(url, words, "href")
    if found.problem is not None:
        reader.defect(found.problem)
    _read_text(found.text, reader)


def _read_text(text: str, reader: _Reader) -> None:
    text = join_angle_urls(text)
    reader.add_text(text)
    for url, label in labelled_bare_urls(text.replace("\\/", "/")):  # JSON writes "\/"
        reader.add_link(url, label, "text")
