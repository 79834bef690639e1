"""The shape of a JSON payload: its top-level type and its main array, found in its head.

The *main array* is the array whose items are counted as ``records``, chosen by the one
rule of ``inbox_poller.mainarray`` (shared with ``archive_reader``, which streams those
items for analysts). Both validators answer with a :class:`Shape`: ``fastcheck.FastCheck``
while the payload streams, and ``validation.validate``, the authority, for every payload
the fast path leaves undecided. :func:`sniff_shape` feeds the rule the head's parse
events, through the outline and the digit-run guard that keep ijson safe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import ijson

from inbox_poller.download.ijsonbackend import BACKEND, DigitRuns
from inbox_poller.download.outline import Outline
from inbox_poller.mainarray import main_array


@dataclass(frozen=True)
class Shape:
    """What validation found: the top-level type and the main array's length."""

    top_level: str
    records: int | None
    format: str = field(default="json", repr=False)
    """The payload's format (``download.formats``)."""


SNIFF_READ_BYTES = 4096
"""Bytes of the head ijson parses at a time, after a first piece of ``SNIFF_FIRST_BYTES``."""
SNIFF_FIRST_BYTES = 512
"""The first piece of the head looked at. The main array is usually found in the first
few hundred bytes, and each piece is cleared by the outline, shortened by ``DigitRuns``
and parsed by ijson (whose C backend builds every event of a piece before yielding the
first) only when the rule asks for more: sniffing the whole 64 KiB head at once cost
0.34 ms per payload, whatever its size, and 4 KiB pieces 0.14 ms (bench/README.md, the
backlog)."""


class _ClearedHead:
    """The head as ijson reads it: cleared by the outline and with digit runs shortened,
    piece by piece, only as far as ijson asks (``read``)."""

    def __init__(self, head: bytes) -> None:
        self._head = memoryview(head)
        self._pos = 0
        self._outline = Outline()
        self._digits = DigitRuns()
        self._done = False

    def read(self, size: int = -1) -> bytes:
        """At least one byte while any is left (ijson ends at an empty read); *size* is
        not followed, except ``read(0)``, with which ijson asks for the type of the data."""
        if size == 0:
            return b""
        cleared = b""
        while not cleared and not self._done:
            step = SNIFF_FIRST_BYTES if self._pos == 0 else SNIFF_READ_BYTES
            piece = bytes(self._head[self._pos : self._pos + step])
            self._pos += len(piece)
            if piece:
                cleared = self._outline.feed(piece)
            if not piece or self._outline.error is not None:
                cleared += self._outline.finish(end_of_text=False)
                self._done = True
            cleared = self._digits.shorten(cleared) if cleared else b""
        return cleared


def _events(head: bytes) -> Iterator[tuple[str, str]]:
    """Yield the head's ``(prefix, event)`` pairs, ending quietly where ijson stops."""
    with contextlib.suppress(ijson.JSONError, ValueError, ArithmeticError):
        for prefix, event, _ in BACKEND.parse(_ClearedHead(head), buf_size=SNIFF_READ_BYTES):
            yield prefix, event


def sniff_shape(head: bytes) -> tuple[str, str | None]:
    """Return the top-level type and the ijson prefix of the main array's items.

    The rule is ``mainarray.main_array``'s. Only *head* is looked at, and only up to a
    byte that breaks the outline (nesting deeper than ``MAX_DEPTH`` costs ijson memory
    with the square of the depth); an invalid head is left for the parser to report.
    """
    return main_array(_events(head))
