"""Is a payload one valid JSON document, and how many records does it hold? (pure)

Two paths answer with the same :class:`Shape`:

* :class:`FastCheck`, fed the payload piece by piece while it downloads, validates it
  with simdjson at about 1.5 GB/s in bounded memory, or answers *undecided* (``None``).
  It never says "invalid".
* :func:`validate` runs ijson's C parser over the whole payload (about 90 MB/s). It is
  the authority: it decides every payload the fast path leaves undecided, and only it
  refuses one (:class:`PayloadInvalid`).

The fast path
-------------
The *main array* is the array whose items are counted as ``records`` (:func:`sniff_shape`).
The document is split as ``H + B + T``: ``H`` ends with the main array's ``[``, ``B`` is
the array's contents and ``T`` starts with its ``]``. ``B`` is cut at commas into
chunks ``c1 , c2 , ... , cn , E`` and each chunk is parsed by simdjson as ``[ci]``, then
dropped; the number of records is the sum of the chunks' lengths. At the end, ``E`` and
``T`` are told apart by trying the last few ``]`` of the buffer. The payload is accepted
only when all of the following hold:

1. every ``[ci]`` is valid JSON with at least one element, and so is ``[E]`` (``E`` may be
   empty only when there was no cut);
2. ijson, over the *probe* ``H + "\\u0000<random>" + T`` (the document with the array's
   contents replaced by one string no payload can know), completes without error and
   yields exactly one value at the main array's prefix: that string.

Soundness: by (2) the probe is valid JSON and the last byte of ``H`` opens an array
whose single element is the probe string (were that ``[`` inside a string, the probe's
quote would end the string and leave a bare backslash, which is invalid). Replacing that
one element by a non-empty, comma-separated list of values yields valid JSON again,
because a JSON array admits any such list. By (1) ``B`` is such a list: it is the chunks
joined by the commas they were cut at, and each ``[ci]`` is a valid non-empty array; if
``B`` is only whitespace, the array is ``[ ]``, also valid. So ``H + B + T`` is valid.
Records: ijson counts the values whose prefix is the main array's item prefix. By (2)
the probe's string has that prefix and nothing else in ``H + T`` has it, so the values
counted are exactly the array's elements (values nested in an element have longer
prefixes), ``sum(len([ci])) + len([E])``.

Where simdjson and ijson differ, the fast path leaves the decision to ijson: simdjson
refuses integers beyond 64 bits, doubles beyond ±1.8e308, nesting beyond 1024 and lone
surrogate escapes, all of which ijson reads, so these become *undecided*, never
"invalid". ijson counts records only while no item of the main array is longer than
``MAX_ITEM_BYTES``; the fast path counts only when its chunk sizes prove the same
(no item, and no stretch before the first or after the last, can then be that long),
and is undecided otherwise. Any other doubt (no main array in the head, no cut within
``MAX_ITEM_BYTES``, the closing ``]`` not among the last ``MAX_CLOSE_TRIES`` candidates,
an unexpected error) also leaves the payload undecided.

ijson's number limits
---------------------
ijson converts every number it parses, and two conversions fail on valid JSON: beyond
Python's limit on integer digits (4300) yajl2_c (ijson 3.6) crashes the process with
SIGSEGV instead of raising; and ``Decimal`` raises InvalidOperation for an exponent of
19 digits (``1e-9999999999999999999``, which simdjson reads as 0.0). So ijson never sees
a run of more than ``MAX_DIGIT_RUN`` ASCII digits: each longer run is shortened to that
length on the way in (the head, the probe and :func:`validate` alike). No verdict and no
count changes: digits stay digits, so every token keeps its kind and its boundaries; a
run is never emptied, and one starting with ``0`` keeps a second digit, so a leading
zero stays invalid; inside strings digits are plain characters. (Keys that differ only
beyond a run's 17th digit look alike to ijson; both paths share that view.)
"""

from __future__ import annotations

import contextlib
import io
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ijson
import simdjson

from inbox_poller.errors import PayloadInvalid

JSON_BACKEND = "yajl2_c"
"""The only ijson backend used: C, fast, and no ffi callbacks (MemoryDenyWriteExecute)."""
_JSON = ijson.get_backend(JSON_BACKEND)  # ImportError at start-up, never a silent fallback

HEAD_BYTES = 1 << 16
"""Where the main array must start to be counted ("near the start")."""
PARSE_SLICE_BYTES = 1 << 16
"""Bytes per ijson parser call; measured faster than 1 MiB (cache-friendly item building)."""
MAX_ITEM_BYTES = 4 << 20
"""ijson builds each item of the main array to count it; a longer item (or stretch
between items) makes :func:`validate` raise :class:`CountingAbandoned`, so memory stays
bounded."""
FAST_CHUNK_BYTES = 1 << 20
"""Bytes of the main array per simdjson call: large enough that per-call costs vanish,
small enough to stay in cache and to bound the parser's buffers."""
MAX_CUT_TRIES = 3
"""Commas tried as chunk ends per attempt, before waiting for more data."""
MAX_CLOSE_TRIES = 8
"""``]`` bytes tried, from the end, as the main array's closing bracket."""
_CUT_SCAN_COMMAS = 64
"""Commas looked at, from the end, for one between two objects or arrays."""

_WHITESPACE = b" \t\r\n"
_OPENERS = b"{["
_CLOSERS = b"}]"
_STRUCTURAL = b"[]{}:,"
_DELIMITERS = b' \t\r\n[]{}:,"'
_DIGIT_MAP = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x78 for byte in range(256))
"""``bytes.translate`` table: each ASCII digit becomes ``0``, any other byte ``x``."""
MAX_DIGIT_RUN = 17
"""ijson sees no run of ASCII digits longer than this (see "ijson's number limits")."""
_LONG_RUN = b"0" * (MAX_DIGIT_RUN + 1)
# No document can know these per-process random keys.
_NOWHERE = "\x00" + secrets.token_hex(16)
# The probe's letters are digit-free, so shortening digit runs never touches it.
_PROBE_VALUE = "\x00" + secrets.token_hex(16).translate(str.maketrans("0123456789", "ghijklmnop"))
_PROBE_JSON = b'"\\u0000' + _PROBE_VALUE[1:].encode() + b'"'


@dataclass(frozen=True)
class Shape:
    """What validation found: the top-level type and the main array's length."""

    top_level: str
    records: int | None


class CountingAbandoned(Exception):
    """An item of the main array is too large to build: validate again without counting."""


# --- the main array -----------------------------------------------------------------------


def _item_prefix(prefix: str) -> str:
    return f"{prefix}.item" if prefix else "item"


class _DigitRuns:
    """Shorten every run of ASCII digits to ``MAX_DIGIT_RUN`` digits, across pieces.

    This changes no token boundary and no verdict: digits stay digits, a run is never
    emptied, and a run of two or more digits starting with ``0`` stays one (ijson's
    number limits, in the module docstring).
    """

    def __init__(self) -> None:
        self._carry = 0  # digits ending what was passed on so far

    def shorten(self, piece: bytes) -> bytes:
        mapped = piece.translate(_DIGIT_MAP)
        first_other = mapped.find(b"x")
        leading = len(piece) if first_other < 0 else first_other
        kept = min(leading, MAX_DIGIT_RUN - self._carry)
        if first_other < 0:
            self._carry += kept
            return piece[:kept]
        last_other = mapped.rfind(b"x")
        self._carry = min(len(piece) - 1 - last_other, MAX_DIGIT_RUN)
        run = mapped.find(_LONG_RUN, leading)
        if kept == leading and run < 0:
            return piece  # the usual case: nothing to shorten
        parts = [piece[:kept]]
        pos = leading
        while run >= 0:
            parts.append(piece[pos : run + MAX_DIGIT_RUN])
            pos = mapped.find(b"x", run)
            if pos < 0:  # the run ends the piece: the carry says how much was kept
                return b"".join(parts)
            run = mapped.find(_LONG_RUN, pos)
        parts.append(piece[pos:])
        return b"".join(parts)


def sniff_shape(head: bytes) -> tuple[str, str | None]:
    """Return the top-level type and the ijson prefix of the main array's items.

    The main array is the top-level array; in a top-level object, the first array at
    depth <= 2 whose items are objects or arrays (records), else the first one with any
    items, else the first empty one: ``{"errors": [], "meta": {"fields": ["a"]},
    "data": {"item": [{...}]}}`` counts ``data.item``. Only *head* is looked at; an
    invalid head is left for the parser to report.
    """
    head = _DigitRuns().shorten(head)
    kinds: list[str] = []  # the containers enclosing the current event
    top = "unknown"
    found: dict[str, str] = {}  # "empty" / "scalars" -> the first such array's item prefix
    opened: str | None = None  # an array just opened, not yet classified
    with contextlib.suppress(ijson.JSONError, ValueError, ArithmeticError):
        for prefix, event, _ in _JSON.parse(io.BytesIO(head)):
            if opened is not None:
                if event in ("start_map", "start_array"):
                    return top, opened
                found.setdefault("empty" if event == "end_array" else "scalars", opened)
                opened = None
            if top == "unknown":
                top = {"start_map": "object", "start_array": "array"}.get(event, event)
                if top != "object":
                    return top, "item" if top == "array" else None
            if event == "start_array" and len(kinds) <= 2 and set(kinds) == {"start_map"}:
                opened = _item_prefix(prefix)
            if event in ("start_map", "start_array"):
                kinds.append(event)
            elif event in ("end_map", "end_array"):
                kinds.pop()
    return top, opened or found.get("scalars") or found.get("empty")


def _tokens(head: bytes) -> Iterator[tuple[int, int]]:
    """Yield ``(offset, first byte)`` of each token of *head*: strings, brackets, scalars.

    Stops at the first string that does not end within *head*.
    """
    pos, size = 0, len(head)
    while pos < size:
        byte = head[pos]
        if byte in _WHITESPACE:
            pos += 1
        elif byte == 0x22:  # a string: find its closing quote, skipping escaped ones
            end = head.find(b'"', pos + 1)
            while end > 0 and _escaped(head, end):
                end = head.find(b'"', end + 1)
            if end < 0:
                return
            yield pos, byte
            pos = end + 1
        else:
            yield pos, byte
            pos += 1
            if byte not in _STRUCTURAL:  # a number or literal: skip to its end
                while pos < size and head[pos] not in _DELIMITERS:
                    pos += 1


def _escaped(data: bytes, quote: int) -> bool:
    """Whether the quote at *quote* is escaped (preceded by an odd run of backslashes)."""
    run = 0
    while quote - run - 1 >= 0 and data[quote - run - 1] == 0x5C:
        run += 1
    return run % 2 == 1


def main_array_offset(head: bytes) -> int | None:
    """Return the offset of the main array's ``[`` in *head*, by :func:`sniff_shape`'s rule.

    A plain tokenizer, not a validator: the fast path proves the choice with its probe.
    """
    tokens = _tokens(head)
    offset, byte = next(tokens, (0, 0))
    if byte == 0x5B:
        return offset  # the top-level array
    if byte != 0x7B:
        return None
    stack = [byte]
    opened: int | None = None  # an array just opened, not yet classified
    found: dict[str, int] = {}
    for offset, byte in tokens:
        if opened is not None:
            if byte in _OPENERS:
                return opened
            found.setdefault("empty" if byte == 0x5D else "scalars", opened)
            opened = None
        if byte == 0x5B and len(stack) <= 2 and all(kind == 0x7B for kind in stack):
            opened = offset
        if byte in _OPENERS:
            stack.append(byte)
        elif byte in _CLOSERS:
            stack.pop()
            if not stack:
                break
    if opened is not None:
        return opened
    return found.get("scalars", found.get("empty"))


# --- the fast path --------------------------------------------------------------------------


class _Window:
    """``b"["`` followed by the main array's bytes not yet checked, in a buffer reused in
    place: a bytearray that grew and shrank by a megabyte per chunk would make the
    allocator map fresh pages for every chunk (measured: a page fault per 4 KiB)."""

    def __init__(self, start: bytes | bytearray) -> None:
        self.data = bytearray(b"[")
        self.size = 1
        self.append(start)

    def append(self, piece: bytes | bytearray) -> None:
        end = self.size + len(piece)
        if end > len(self.data):  # grow by doubling, rarely
            self.data.extend(bytes(max(end, 2 * len(self.data)) - len(self.data)))
        self.data[self.size : end] = piece
        self.size = end

    def drop(self, end: int) -> None:
        """Remove ``data[1:end]``."""
        rest = self.size - end
        self.data[1 : 1 + rest] = self.data[end : self.size]
        self.size = 1 + rest

    def trailing_whitespace(self, end: int) -> int:
        """How many whitespace bytes end ``data[1:end]``."""
        pos = end
        while pos > 1 and self.data[pos - 1] in _WHITESPACE:
            pos -= 1
        return end - pos


class FastCheck:
    """Validate a payload fed in order, in bounded memory; see the module docstring.

    ``feed`` every decoded piece, then ``finish``: a :class:`Shape` means valid, None means
    undecided (``reason`` says why). It never raises for any input.
    """

    def __init__(self, *, chunk_bytes: int | None = None) -> None:
        self._chunk_bytes = chunk_bytes or FAST_CHUNK_BYTES
        # read at run time, not import time: tests lower MAX_ITEM_BYTES
        self._gap_limit = MAX_ITEM_BYTES - PARSE_SLICE_BYTES
        self._parser = simdjson.Parser()
        self._head = bytearray()
        self._window: _Window | None = None  # None until the head is sniffed
        self._skeleton_head = b""  # H: the document up to and including the main "["
        self._top = "unknown"
        self._prefix = ""
        self._seen = 0
        self._records = 0
        self._chunks = 0
        self._last_ws = 0  # whitespace ending the last chunk (after its last element)
        self._next_try = 0
        self.reason: str | None = None

    def feed(self, data: bytes) -> None:
        """Take the next piece of the payload."""
        if self.reason is not None:
            return
        self._seen += len(data)
        try:
            if self._window is None:
                self._head += data
                if len(self._head) >= HEAD_BYTES:
                    self._start()
            else:
                self._window.append(data)
                self._cut()
        except Exception as exc:  # the fast path may only ever fall back to ijson
            self._give_up(f"unexpected {type(exc).__name__}")

    def finish(self) -> Shape | None:
        """Return the payload's shape if it is valid, None if undecided."""
        shape = None
        try:
            if self.reason is None and self._window is None:
                self._start()
            if self.reason is None:
                shape = self._close()
        except Exception as exc:  # the fast path may only ever fall back to ijson
            self._give_up(f"unexpected {type(exc).__name__}")
        self._head = bytearray()
        self._window = None
        return shape

    def _give_up(self, reason: str) -> None:
        self.reason = self.reason or reason
        self._head = bytearray()
        self._window = None

    def _start(self) -> None:
        head = bytes(self._head[:HEAD_BYTES])
        self._top, prefix = sniff_shape(head)
        offset = main_array_offset(head)
        if prefix is None or offset is None:
            self._give_up(f"no main array in the first {HEAD_BYTES} bytes")
            return
        self._prefix = prefix
        self._skeleton_head = bytes(self._head[: offset + 1])
        self._window = _Window(self._head[offset + 1 :])
        self._head = bytearray()
        self._next_try = self._chunk_bytes
        self._cut()

    def _cut(self) -> None:
        """Validate and drop whole elements from the window while it is large enough."""
        while self._window is not None and self._window.size >= self._next_try:
            if not self._cut_once(self._window):
                self._wait_for_more(self._window)

    def _cut_once(self, window: _Window) -> bool:
        """Drop one chunk ending at one of the last candidate commas; False if none fits."""
        for comma in self._cut_candidates(window):
            count = self._count_through(window, comma)
            if count:  # never an empty chunk: it would hide ",," or "[,"
                self._drop(window, comma, count)
                return True
        return False

    def _wait_for_more(self, window: _Window) -> None:
        if window.size > self._gap_limit:
            self._give_up(f"no element boundary within {self._gap_limit} bytes")
            return
        self._next_try = window.size + self._chunk_bytes

    def _cut_candidates(self, window: _Window) -> list[int]:
        """The last commas that may end a chunk: between two objects or arrays if any."""
        data = window.data
        commas: list[int] = []
        between: list[int] = []
        pos = window.size
        while len(commas) < _CUT_SCAN_COMMAS and len(between) < MAX_CUT_TRIES:
            comma = data.rfind(b",", 1, pos)
            if comma < 1:
                break
            commas.append(comma)
            if self._between_containers(window, comma):
                between.append(comma)
            pos = comma
        return between or commas[:MAX_CUT_TRIES]

    @staticmethod
    def _between_containers(window: _Window, comma: int) -> bool:
        data = window.data
        before, after = comma - 1, comma + 1
        while before > 0 and data[before] in _WHITESPACE:
            before -= 1
        while after < window.size and data[after] in _WHITESPACE:
            after += 1
        return data[before] in _CLOSERS and after < window.size and data[after] in _OPENERS

    def _count_through(self, window: _Window, end: int) -> int | None:
        """Parse ``data[:end] + "]"`` (the byte at *end* swapped in place); its length or None."""
        data = window.data
        saved = data[end]
        data[end] = 0x5D  # "]"
        try:
            return self._count(window, end)
        finally:
            data[end] = saved

    def _count(self, window: _Window, end: int) -> int | None:
        """The length of the array ``data[: end + 1]`` if simdjson accepts it."""
        with memoryview(window.data) as whole, whole[: end + 1] as view:
            try:
                doc: Any = self._parser.parse(view)
            except (ValueError, RuntimeError):  # invalid, or beyond simdjson's limits
                return None
            count = len(doc) if isinstance(doc, simdjson.Array) else None
            del doc  # the parser refuses to parse again while a document is alive
        return count

    def _first_gap(self) -> int:
        """Bytes before the window that precede its first element (H, before any cut)."""
        return len(self._skeleton_head) if not self._chunks else 0

    def _drop(self, window: _Window, comma: int, count: int) -> None:
        """Account for the chunk ``data[1:comma]`` and remove it with its comma."""
        # from the last element before this chunk to its last element (MAX_ITEM_BYTES)
        if comma + self._last_ws + self._first_gap() > self._gap_limit:
            self._give_up(f"an element may be over {MAX_ITEM_BYTES} bytes")
            return
        self._last_ws = window.trailing_whitespace(comma)
        self._records += count
        self._chunks += 1
        window.drop(comma + 1)
        self._next_try = self._chunk_bytes

    def _close(self) -> Shape | None:
        """Find the main array's ``]`` among the last ones; check the last chunk and probe."""
        window = self._window
        assert window is not None
        pos = window.size
        for _ in range(MAX_CLOSE_TRIES):
            close = window.data.rfind(b"]", 1, pos)
            if close < 1:
                break
            pos = close
            if not self._probe(bytes(window.data[close : window.size])):
                continue
            count = self._count(window, close)
            if count is None or (count == 0 and self._chunks):
                continue
            if not self._counting_agrees(window, close, count):
                self._give_up(f"an element may be over {MAX_ITEM_BYTES} bytes")
                return None
            return Shape(self._top, self._records + count)
        self._give_up("the end of the main array did not validate")
        return None

    def _counting_agrees(self, window: _Window, close: int, count: int) -> bool:
        """Whether ijson, given this payload, would count its records (MAX_ITEM_BYTES)."""
        if not self._chunks and not count:
            return self._seen <= self._gap_limit
        to_last = close + self._last_ws + self._first_gap()
        after_last = window.trailing_whitespace(close) + window.size - close
        return to_last <= self._gap_limit and after_last <= self._gap_limit

    def _probe(self, tail: bytes) -> bool:
        """Whether ijson accepts ``H + probe + tail`` with the probe as the only item."""
        probe = _DigitRuns().shorten(self._skeleton_head + _PROBE_JSON + tail)
        found: list[object] = []
        try:
            for item in _JSON.items(io.BytesIO(probe), self._prefix):
                found.append(item)
                if len(found) > 1:
                    return False
        except (ijson.JSONError, ValueError, ArithmeticError):
            return False
        return found == [_PROBE_VALUE]


# --- the authority: ijson over the whole payload ----------------------------------------------


class _Feed:
    """The payload as a file for ijson: the head kept for sniffing, slices counted.

    Digit runs are shortened on the way (``_DigitRuns``); ``fed`` counts the payload's
    own bytes. While ``guard_items``, a stretch of more than ``MAX_ITEM_BYTES`` without a
    counted item raises :class:`CountingAbandoned`.
    """

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._buffer = b""
        self._pos = 0
        self._digits = _DigitRuns()
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
            if self._pos >= len(self._buffer):
                self._buffer, self._pos = self._read(PARSE_SLICE_BYTES), 0
            if self.guard_items and self.fed - self.item_mark > MAX_ITEM_BYTES:
                raise CountingAbandoned
            if not self._buffer:
                return b""
            piece = self._buffer[self._pos : self._pos + PARSE_SLICE_BYTES]
            self._pos += len(piece)
            self.fed += len(piece)
            shortened = self._digits.shorten(piece)
            if shortened:  # b"" would tell ijson the payload ended
                return shortened


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
    top_level, prefix = sniff_shape(feed.head(HEAD_BYTES))
    counting = count and prefix is not None
    feed.guard_items = counting
    records = 0
    try:
        for _ in _JSON.items(feed, prefix if counting else _NOWHERE, buf_size=PARSE_SLICE_BYTES):
            records += 1
            feed.item_mark = feed.fed
    except (ijson.JSONError, ValueError, ArithmeticError) as exc:
        # "from None": yajl's message quotes the payload (contact data) next to the error
        raise PayloadInvalid(
            f"not one valid JSON document (at or before byte {feed.fed}): {_short_reason(exc)}"
        ) from None
    return Shape(top_level, records if counting else None)
