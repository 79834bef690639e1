"""Validate a whole payload with ijson, the authority, and count its records.

ijson's C parser reads the payload from its start (about 90 MB/s), in bounded memory. It
decides every payload the fast path (``fastcheck``) leaves undecided, and only it refuses
one (:class:`PayloadInvalid`). Every byte passes ``outline.Outline`` before ijson sees it,
so the nesting limit, the end of the document and paired surrogate escapes hold here too
(ijson alone keeps none of them). Counting builds each item of the main array; an item
longer than ``MAX_ITEM_BYTES`` abandons the count (:class:`CountingAbandoned`), and the
caller validates again without counting.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import ijson

from inbox_poller import mainarray
from inbox_poller.download.ijsonbackend import BACKEND, DigitRuns
from inbox_poller.download.outline import Outline
from inbox_poller.download.shape import Shape, sniff_shape
from inbox_poller.errors import PayloadInvalid

PARSE_SLICE_BYTES = 1 << 16
"""Bytes per ijson parser call; measured faster than 1 MiB (cache-friendly item building)."""
MAX_ITEM_BYTES = 4 << 20
"""ijson builds each item of the main array to count it; a longer item (or stretch
between items) makes :func:`validate` raise :class:`CountingAbandoned`, so memory stays
bounded."""
# No document can know this per-process random key.
_NOWHERE = "\x00" + secrets.token_hex(16)


class CountingAbandoned(Exception):
    """An item of the main array is too large to build: validate again without counting."""


class _Feed:
    """The payload as a file for ijson: the head kept for sniffing, slices counted.

    Every slice passes the outline first, and digit runs are shortened on the way
    (``DigitRuns``); ``fed`` counts the payload's own bytes handed on. At a byte that
    breaks the outline, ijson gets the bytes before it (and may report an earlier
    error of its own); the next read raises :class:`PayloadInvalid`. While
    ``guard_items``, a stretch of more than ``MAX_ITEM_BYTES`` without a counted item
    raises :class:`CountingAbandoned`.
    """

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._buffer = b""
        self._pos = 0
        self._outline = Outline()
        self._ended = False
        self._digits = DigitRuns()
        self.fed = 0
        self.item_mark = 0
        self.guard_items = False

    def head(self, size: int) -> bytes:
        """Return up to *size* first bytes without consuming them."""
        while len(self._buffer) < size and (piece := self._read(size - len(self._buffer))):
            self._buffer += piece
        return self._buffer[:size]

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson probes the type with read(0)
            return b""
        while True:
            broken = self._outline.error
            if broken is not None:
                raise PayloadInvalid(_message(broken.offset, broken.reason))
            if self._pos >= len(self._buffer) and not self._ended:
                self._buffer, self._pos = self._read(PARSE_SLICE_BYTES), 0
            if self.guard_items and self.fed - self.item_mark > MAX_ITEM_BYTES:
                raise CountingAbandoned
            if self._ended:
                return b""
            if self._buffer:
                piece = self._buffer[self._pos : self._pos + PARSE_SLICE_BYTES]
                self._pos += len(piece)
                cleared = self._outline.feed(piece)
            else:
                self._ended = True
                cleared = self._outline.finish()
            self.fed += len(cleared)
            shortened = self._digits.shorten(cleared)
            if shortened:  # b"" would tell ijson the payload ended
                return shortened


def _message(offset: int, reason: str) -> str:
    return f"not one valid JSON document (at or before byte {offset}): {reason}"


def _short_reason(exc: Exception) -> str:
    """The first line of an ijson error, without the payload excerpt yajl appends."""
    if isinstance(exc, UnicodeError):
        return "a string is not valid UTF-8 or Unicode"
    if isinstance(exc, ArithmeticError):
        return "a number out of range"
    if not isinstance(exc, ijson.JSONError):
        return f"unreadable value ({type(exc).__name__})"
    text = str(exc)
    if text[:2] in ("b'", 'b"'):
        text = text[2:]
    return text.replace("\\n", "\n").split("\n", 1)[0].strip().rstrip(".")


def validate(read: Callable[[int], bytes], *, count: bool = True) -> Shape:
    """Validate the whole payload with ijson, reading it with *read* (``file.read``).

    :raises PayloadInvalid: not one valid JSON document.
    :raises CountingAbandoned: counting would build an item over ``MAX_ITEM_BYTES``; call
        again on the payload from its start with ``count=False``.
    """
    feed = _Feed(read)
    # read through the module at run time, not bound at import: tests lower HEAD_BYTES
    top_level, prefix = sniff_shape(feed.head(mainarray.HEAD_BYTES))
    counting = count and prefix is not None
    feed.guard_items = counting
    records = 0
    try:
        for _ in BACKEND.items(feed, prefix if counting else _NOWHERE, buf_size=PARSE_SLICE_BYTES):
            records += 1
            feed.item_mark = feed.fed
    except (ijson.JSONError, ValueError, ArithmeticError) as exc:
        # "from None": yajl's message quotes the payload (contact data) next to the error
        raise PayloadInvalid(_message(feed.fed, _short_reason(exc))) from None
    return Shape(top_level, records if counting else None)
