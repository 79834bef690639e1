"""CSV and XML payloads: what format arrived, and their records, streamed in bounded memory.

Pure (reads a binary stream it is handed; no network, no files of its own). The download
room validates with it (``download.formats``) and ``archive_reader`` streams records
with it, so both count ``records`` by the same rules:

* :func:`sniff` names what the first bytes are: ``json`` (``{`` or ``[``), ``xml``,
  ``html`` (never a payload), ``empty`` or ``text`` (a CSV candidate);
* CSV (:func:`csv_rows`): the stdlib ``csv`` module over UTF-8 text (a BOM allowed),
  strict quoting; a header row, then rows of exactly the header's column count (blank
  lines are skipped); ``records`` is the number of rows after the header. A file that
  does not end with a line break is refused as truncated: a cut in the last field
  cannot be told from a complete one otherwise. A NUL byte, a line longer than
  ``MAX_LINE_CHARS``, more than ``MAX_COLUMNS`` columns or a field over the ``csv``
  module's limit (128 KiB) is refused, so memory stays bounded by those limits;
* XML (:func:`xml_shape`, :func:`xml_records`): parsed by defusedxml's expat reader
  with DTDs forbidden (so no entity can be declared: no expansion bomb, no external
  entity, no DTD fetch), through SAX callbacks that keep no tree and no text, so memory
  is bounded by the nesting depth (at most ``MAX_DEPTH``). The *record element* is the
  element path (``response/data/item``) that occurs most often within ``RECORD_DEPTH``
  levels below the root (ties: the shallower one, so a record's own fields never win);
  ``records`` is its count.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import BinaryIO
from xml.sax import SAXException
from xml.sax.handler import ContentHandler
from xml.sax.xmlreader import AttributesImpl

SNIFF_BYTES = 4096
"""How much of a payload's head :func:`sniff` looks at."""
MAX_LINE_CHARS = 1 << 20
MAX_COLUMNS = 10_000
MAX_DEPTH = 64
RECORD_DEPTH = 4
MAX_RECORD_KEYS = 1000
"""Distinct (parent, tag) pairs tracked while looking for the record element."""
MAX_FIELD_CHARS = 1 << 20
"""Text kept per field of an XML record when records are read (the rest is cut)."""
READ_BYTES = 1 << 16

_HTML_MARKS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<title", b"<!--")


class FormatError(ValueError):
    """The payload is not a well-formed document of its format; the message says where."""


def sniff(head: bytes) -> str:
    """Return what *head* (a payload's first bytes) looks like.

    ``json``, ``xml``, ``html``, ``empty`` or ``text``. Only JSON's structural openers
    count as JSON: a CSV's first field may well start with a quote or a digit.
    """
    text = head.removeprefix(codecs.BOM_UTF8).lstrip(b" \t\r\n")
    if not text:
        return "empty"
    if text[:1] in (b"{", b"["):
        return "json"
    lowered = text[:1024].lower()
    if any(lowered.startswith(mark) for mark in _HTML_MARKS) or b"<html" in lowered:
        return "html"
    if text[:1] == b"<":
        return "xml"
    return "text"


# ---- CSV -----------------------------------------------------------------------------------


def _lines(stream: BinaryIO) -> Generator[str, None, None]:
    """Yield the decoded lines of *stream*, each checked for NUL, length and its line break."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="strict", newline="")
    number = 0
    try:
        while line := text.readline(MAX_LINE_CHARS + 1):
            number += 1
            if len(line) > MAX_LINE_CHARS:
                raise FormatError(f"CSV line {number} is longer than {MAX_LINE_CHARS} characters")
            if "\x00" in line:
                raise FormatError(f"CSV line {number} holds a NUL byte: not a text file")
            if not line.endswith(("\n", "\r")):
                raise FormatError(
                    f"the CSV ends in the middle of line {number} (no final line break): truncated"
                )
            yield line
    except UnicodeDecodeError as exc:
        raise FormatError(f"the CSV is not UTF-8 text (line {number + 1}: {exc.reason})") from None
    finally:
        with contextlib.suppress(ValueError):  # the stream was closed under us
            text.detach()


def csv_rows(stream: BinaryIO) -> Iterator[list[str]]:
    """Yield the header, then every row, of the CSV in *stream*; raise ``FormatError``.

    Every row has the header's column count; blank lines are skipped.
    """
    lines = _lines(stream)
    reader = csv.reader(lines, strict=True)
    columns = 0
    try:
        for row in reader:
            if not row:
                continue
            if not columns:
                if len(row) > MAX_COLUMNS:
                    raise FormatError(f"the CSV header has over {MAX_COLUMNS} columns")
                columns = len(row)
            elif len(row) != columns:
                raise FormatError(
                    f"CSV row {reader.line_num} has {len(row)} columns, the header {columns}"
                )
            yield row
    except csv.Error as exc:
        raise FormatError(f"CSV line {reader.line_num}: {exc}") from None
    finally:
        lines.close()
    if not columns:
        raise FormatError("the CSV is empty: no header row")


def count_csv(stream: BinaryIO) -> int:
    """Validate the CSV in *stream* to its end; return its records (rows after the header)."""
    rows = -1
    for _ in csv_rows(stream):
        rows += 1
    return rows


def csv_records(stream: BinaryIO) -> Iterator[dict[str, str]]:
    """Yield each row of the CSV in *stream* as a dict keyed by the header."""
    rows = csv_rows(stream)
    header = next(rows)
    for row in rows:
        yield dict(zip(header, row, strict=True))


# ---- XML -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class XmlShape:
    """What a well-formed XML payload holds."""

    root: str
    record_path: str | None
    """The record element's path from the root (``response/data/item``); None if none."""
    records: int


class _Scan(ContentHandler):
    def __init__(self) -> None:
        super().__init__()
        self.path: list[str] = []
        self.root: str | None = None
        self.counts: dict[str, int] = {}

    def startElement(self, name: str, attrs: AttributesImpl) -> None:
        if self.root is None:
            self.root = name
        self.path.append(name)
        if len(self.path) > MAX_DEPTH:
            raise FormatError(f"the XML nests deeper than {MAX_DEPTH} elements")
        if 1 < len(self.path) <= RECORD_DEPTH + 1:
            key = "/".join(self.path)
            if key in self.counts or len(self.counts) < MAX_RECORD_KEYS:
                self.counts[key] = self.counts.get(key, 0) + 1

    def endElement(self, name: str) -> None:
        self.path.pop()


def _feed(stream: BinaryIO, handler: ContentHandler) -> Iterator[None]:
    """Feed *stream* to a defused expat parser calling *handler*; pause after each chunk."""
    # imported here: only XML payloads need expat (0.9 MiB in the daemon, bench/README.md)
    from defusedxml import DefusedXmlException
    from defusedxml.expatreader import create_parser

    parser = create_parser(forbid_dtd=True, forbid_entities=True, forbid_external=True)
    parser.setContentHandler(handler)
    try:
        while chunk := stream.read(READ_BYTES):
            parser.feed(chunk)
            yield
        parser.close()
    except DefusedXmlException as exc:
        raise FormatError(f"refused XML: {type(exc).__name__} ({exc})") from None
    except SAXException as exc:
        raise FormatError(f"the XML is not well-formed: {exc}") from None


def xml_shape(stream: BinaryIO) -> XmlShape:
    """Validate the XML in *stream* to its end; return its root, record element and count."""
    scan = _Scan()
    for _ in _feed(stream, scan):
        pass
    if scan.root is None:
        raise FormatError("the XML has no root element")
    if not scan.counts:
        return XmlShape(scan.root, None, 0)
    best = max(scan.counts.items(), key=lambda item: (item[1], -item[0].count("/")))
    return XmlShape(scan.root, best[0], best[1])


class _Records(ContentHandler):
    def __init__(self, record_path: str) -> None:
        super().__init__()
        self.target = record_path.split("/")
        self.path: list[str] = []
        self.record: dict[str, str] | None = None
        self.field: str | None = None
        self.text: list[str] = []
        self.size = 0
        self.done: list[dict[str, str]] = []

    def startElement(self, name: str, attrs: AttributesImpl) -> None:
        self.path.append(name)
        if len(self.path) > MAX_DEPTH:
            raise FormatError(f"the XML nests deeper than {MAX_DEPTH} elements")
        if self.path == self.target:
            self.record = {key: attrs.getValue(key) for key in attrs.getNames()}
        elif self.record is not None and len(self.path) == len(self.target) + 1:
            self.field, self.text, self.size = name, [], 0

    def characters(self, content: str) -> None:
        if self.field is not None and self.size < MAX_FIELD_CHARS:
            self.text.append(content[: MAX_FIELD_CHARS - self.size])
            self.size += len(content)

    def endElement(self, name: str) -> None:
        closes_field = len(self.path) == len(self.target) + 1
        if self.record is not None and self.field is not None and closes_field:
            self.record[self.field] = "".join(self.text)
            self.field = None
        if self.path == self.target and self.record is not None:
            self.done.append(self.record)
            self.record = None
        self.path.pop()


def xml_records(stream: BinaryIO, record_path: str) -> Iterator[dict[str, str]]:
    """Yield each record element at *record_path* as a dict: its attributes and the text
    of each child element (deeper elements are not kept). Memory: one chunk's records."""
    handler = _Records(record_path)
    for _ in _feed(stream, handler):
        yield from handler.done
        handler.done.clear()
    yield from handler.done
