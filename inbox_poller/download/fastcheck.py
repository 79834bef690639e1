"""The fast path: validate a payload with simdjson while it downloads, or leave it undecided.

:class:`FastCheck`, fed the payload piece by piece, validates it with simdjson at about
1.5 GB/s in bounded memory and answers with its :class:`~inbox_poller.download.shape.Shape`,
or answers *undecided* (``None``). It never says "invalid": ``validation.validate``
(ijson) is the authority, decides every payload left undecided here, and only it
refuses one.

How it proves a payload valid
-----------------------------
The *main array* is the array whose items are counted as ``records`` (the rule of
``inbox_poller.mainarray``).
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
   yields exactly one value at the main array's prefix: that string;
3. ``H`` and ``T`` keep the outline (``outline.py``): ``H`` nests at most ``MAX_DEPTH``
   deep and leaves the main array open at depth ``d``; ``T``, followed from depth ``d``,
   nests no deeper, and nothing but whitespace follows the end of the top-level value
   (ijson alone accepts a document followed by a string that never ends).

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

Nesting: each chunk is parsed inside ``_pad(d)`` padding arrays (``[[...[ci]...]]``), so
simdjson's own limit (a value nested deeper than 1,024) refuses every chunk whose
elements would nest deeper than ``MAX_DEPTH`` in the document; a padding level holding
anything but the next one (a chunk that closed its own ``[``) is refused too. At exactly
the limit simdjson refuses a little more (an innermost container that is not empty),
which leaves such a payload undecided, never accepted wrongly. Walking the padding costs
about 35 µs per 1 MiB chunk.

Where simdjson and ijson differ, the fast path leaves the decision to ijson: simdjson
refuses integers beyond 64 bits, doubles beyond ±1.8e308 and lone surrogate escapes, all
of which ijson reads (the last ones only to refuse them, by the outline), so these
become *undecided*, never "invalid". ijson counts records only while no item of the main
array is longer than ``validation.MAX_ITEM_BYTES``; the fast path counts only when its
chunk sizes prove the same (no item, and no stretch before the first or after the last,
can then be that long), and is undecided otherwise. Any other doubt (no main array in
the head, no cut within ``MAX_ITEM_BYTES``, the closing ``]`` not among the last
``MAX_CLOSE_TRIES`` candidates, an unexpected error) also leaves the payload undecided.
The probe goes through ``ijsonbackend.DigitRuns`` like every input ijson sees.
"""

from __future__ import annotations

import io
import secrets
from typing import Any

import ijson
import simdjson

from inbox_poller import mainarray
from inbox_poller.download import validation
from inbox_poller.download.ijsonbackend import BACKEND, DigitRuns
from inbox_poller.download.outline import MAX_DEPTH, OutlineError, check_outline
from inbox_poller.download.shape import Shape, sniff_shape
from inbox_poller.mainarray import CLOSERS, OPENERS, WHITESPACE, main_array_offset

FAST_CHUNK_BYTES = 1 << 20
"""Bytes of the main array per simdjson call: large enough that per-call costs vanish,
small enough to stay in cache and to bound the parser's buffers."""
MAX_CUT_TRIES = 3
"""Commas tried as chunk ends per attempt, before waiting for more data."""
MAX_CLOSE_TRIES = 8
"""``]`` bytes tried, from the end, as the main array's closing bracket."""
_CUT_SCAN_COMMAS = 64
"""Commas looked at, from the end, for one between two objects or arrays."""

# No document can know this per-process random key. Its letters are digit-free, so
# shortening digit runs never touches it.
_PROBE_VALUE = "\x00" + secrets.token_hex(16).translate(str.maketrans("0123456789", "ghijklmnop"))
_PROBE_JSON = b'"\\u0000' + _PROBE_VALUE[1:].encode() + b'"'

SIMDJSON_MAX_DEPTH = 1024
"""simdjson refuses a document with a value nested deeper than this (its default)."""
assert MAX_DEPTH < SIMDJSON_MAX_DEPTH


def _pad(depth: int) -> int:
    """Padding arrays around a chunk of a main array at nesting *depth*: with them,
    simdjson's own depth limit refuses exactly the chunks whose elements would nest
    deeper than ``MAX_DEPTH`` in the document (and, at the limit, a few more)."""
    return SIMDJSON_MAX_DEPTH - 1 - MAX_DEPTH + depth


class _Window:
    """``pad`` padding ``[``, then ``b"["`` and the main array's bytes not yet checked.

    ``data[:first]`` is ``[`` * (``pad`` + 1); the contents start at ``first``, and
    ``size`` ends them. ``data`` always has room for ``pad`` + 1 closing brackets after
    ``size``. The buffer is reused in place: a bytearray that grew and shrank by a
    megabyte per chunk would make the allocator map fresh pages for every chunk
    (measured: a page fault per 4 KiB).
    """

    def __init__(self, start: bytes | bytearray | memoryview, pad: int) -> None:
        self.pad = pad
        self.first = pad + 1
        self.size = self.first + len(start)
        # made at its size in one piece: the contents are copied once, into fresh memory
        self.data = bytearray(self.size + self.first)
        self.data[: self.first] = b"[" * self.first
        self.data[self.first : self.size] = start

    @property
    def used(self) -> int:
        """``b"["`` and the contents: the length the chunk sizes are measured by."""
        return self.size - self.pad

    def append(self, piece: bytes | bytearray | memoryview) -> None:
        end = self.size + len(piece)
        if end + self.first > len(self.data):  # grow by doubling, rarely
            wanted = max(end + self.first, 2 * len(self.data))
            self.data.extend(bytes(wanted - len(self.data)))
        self.data[self.size : end] = piece
        self.size = end

    def drop(self, end: int) -> None:
        """Remove ``data[first:end]``."""
        rest = self.size - end
        self.data[self.first : self.first + rest] = self.data[end : self.size]
        self.size = self.first + rest

    def trailing_whitespace(self, end: int) -> int:
        """How many whitespace bytes end ``data[first:end]``."""
        pos = end
        while pos > self.first and self.data[pos - 1] in WHITESPACE:
            pos -= 1
        return end - pos


class FastCheck:
    """Validate a payload fed in order, in bounded memory; see the module docstring.

    ``feed`` every decoded piece, then ``finish``: a :class:`Shape` means valid, None means
    undecided (``reason`` says why). It never raises for any input.

    ``mainarray.HEAD_BYTES`` and ``validation.MAX_ITEM_BYTES`` are read through their modules
    at run time, not bound at import: tests lower them.
    """

    def __init__(self, *, chunk_bytes: int | None = None) -> None:
        self._chunk_bytes = chunk_bytes or FAST_CHUNK_BYTES
        self._gap_limit = validation.MAX_ITEM_BYTES - validation.PARSE_SLICE_BYTES
        self._parser = simdjson.Parser()
        self._head = bytearray()
        self._window: _Window | None = None  # None until the head is sniffed
        self._skeleton_head = b""  # H: the document up to and including the main "["
        self._depth = 0  # the nesting depth at the end of H: the main array's own
        self._top = "unknown"
        self._prefix = ""
        self._seen = 0
        self._records = 0
        self._chunks = 0
        self._last_ws = 0  # whitespace ending the last chunk (after its last element)
        self._next_try = 0
        self.reason: str | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Take the next piece of the payload."""
        if self.reason is not None:
            return
        self._seen += len(data)
        try:
            if self._window is None:
                if not self._head and len(data) >= mainarray.HEAD_BYTES:
                    self._start(data)  # the head is in this piece (a body in one piece)
                else:
                    self._head += data
                    if len(self._head) >= mainarray.HEAD_BYTES:
                        self._start(self._head)
            else:
                self._window.append(data)
                self._cut()
        except Exception as exc:  # the fast path may only ever fall back to ijson
            self._give_up(f"unexpected {type(exc).__name__}")

    def finish(self) -> Shape | None:
        """Return the payload's shape if it is valid, None if undecided."""
        found = None
        try:
            if self.reason is None and self._window is None:
                self._start(self._head)
            if self.reason is None:
                found = self._close()
        except Exception as exc:  # the fast path may only ever fall back to ijson
            self._give_up(f"unexpected {type(exc).__name__}")
        self._head = bytearray()
        self._window = None
        return found

    def _give_up(self, reason: str) -> None:
        self.reason = self.reason or reason
        self._head = bytearray()
        self._window = None

    def _start(self, source: bytes | bytearray | memoryview) -> None:
        """Sniff the head at the start of *source* (all that was fed so far) and open the
        window on the rest. A body fed in one piece is *source* itself, read here only:
        no copy of it is kept but the head's and the window's (page faults on fresh
        copies were most of what checking a 100 KB payload cost, issue 13)."""
        head_bytes = mainarray.HEAD_BYTES
        with memoryview(source) as whole:
            head = bytes(whole[:head_bytes])
            self._top, prefix = sniff_shape(head)
            offset = main_array_offset(head)
            if prefix is None or offset is None:
                self._give_up(f"no main array in the first {head_bytes} bytes")
                return
            self._prefix = prefix
            self._skeleton_head = head[: offset + 1]
            try:
                before = check_outline(self._skeleton_head, end_of_text=False)
            except OutlineError as exc:
                self._give_up(f"before the main array: {exc.reason}")
                return
            if before.in_string or not 0 < before.depth <= MAX_DEPTH:
                self._give_up("the main array's offset is not where a value may start")
                return
            self._depth = before.depth
            with whole[offset + 1 :] as rest:
                self._window = _Window(rest, pad=_pad(before.depth))
        self._head = bytearray()
        self._next_try = self._chunk_bytes
        self._cut()

    def _cut(self) -> None:
        """Validate and drop whole elements from the window while it is large enough."""
        while self._window is not None and self._window.used >= self._next_try:
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
        if window.used > self._gap_limit:
            self._give_up(f"no element boundary within {self._gap_limit} bytes")
            return
        self._next_try = window.used + self._chunk_bytes

    def _cut_candidates(self, window: _Window) -> list[int]:
        """The last commas that may end a chunk: between two objects or arrays if any."""
        data = window.data
        commas: list[int] = []
        between: list[int] = []
        pos = window.size
        while len(commas) < _CUT_SCAN_COMMAS and len(between) < MAX_CUT_TRIES:
            comma = data.rfind(b",", window.first, pos)
            if comma < window.first:
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
        while before > window.pad and data[before] in WHITESPACE:
            before -= 1
        while after < window.size and data[after] in WHITESPACE:
            after += 1
        return data[before] in CLOSERS and after < window.size and data[after] in OPENERS

    def _count_through(self, window: _Window, end: int) -> int | None:
        """The length of the chunk ``data[first:end]`` as an array, if simdjson accepts it.

        The bytes from *end* are swapped in place for the closing brackets of the chunk
        and its padding (``_pad``), and put back.
        """
        data = window.data
        close = end + window.first
        saved = bytes(data[end:close])
        data[end:close] = b"]" * window.first
        try:
            return self._count(window, close)
        finally:
            data[end:close] = saved

    def _count(self, window: _Window, close: int) -> int | None:
        """The length of the chunk if ``data[:close]``, chunk and padding, is accepted."""
        with memoryview(window.data) as whole, whole[:close] as view:
            try:
                doc: Any = self._parser.parse(view)
            except (ValueError, RuntimeError):  # invalid, or beyond simdjson's limits
                return None
            for _ in range(window.pad):
                # each padding level (an array: we opened it) must hold exactly the next
                # one; a second element means the chunk closed its own "["
                if len(doc) != 1:
                    doc = None
                    break
                doc = doc[0]
            count = len(doc) if isinstance(doc, simdjson.Array) else None
            del doc  # the parser refuses to parse again while a document is alive
        return count

    def _first_gap(self) -> int:
        """Bytes before the window that precede its first element (H, before any cut)."""
        return len(self._skeleton_head) if not self._chunks else 0

    def _drop(self, window: _Window, comma: int, count: int) -> None:
        """Account for the chunk ``data[1:comma]`` and remove it with its comma."""
        # from the last element before this chunk to its last element (MAX_ITEM_BYTES)
        if comma - window.pad + self._last_ws + self._first_gap() > self._gap_limit:
            self._give_up(f"an element may be over {validation.MAX_ITEM_BYTES} bytes")
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
            close = window.data.rfind(b"]", window.first, pos)
            if close < window.first:
                break
            pos = close
            if not self._probe(bytes(window.data[close : window.size])):
                continue
            count = self._count_through(window, close)
            if count is None or (count == 0 and self._chunks):
                continue
            if not self._counting_agrees(window, close, count):
                self._give_up(f"an element may be over {validation.MAX_ITEM_BYTES} bytes")
                return None
            return Shape(self._top, self._records + count)
        self._give_up("the end of the main array did not validate")
        return None

    def _counting_agrees(self, window: _Window, close: int, count: int) -> bool:
        """Whether ijson, given this payload, would count its records (MAX_ITEM_BYTES)."""
        if not self._chunks and not count:
            return self._seen <= self._gap_limit
        to_last = close - window.pad + self._last_ws + self._first_gap()
        after_last = window.trailing_whitespace(close) + window.size - close
        return to_last <= self._gap_limit and after_last <= self._gap_limit

    def _probe(self, tail: bytes) -> bool:
        """Whether ijson accepts ``H + probe + tail`` with the probe as the only item.

        *tail* must keep the outline first: it closes the document at the nesting depth
        H leaves open, and only whitespace may follow (ijson would accept a string that
        never ends there).
        """
        try:
            check_outline(tail, depth=self._depth)
        except OutlineError:
            return False
        probe = DigitRuns().shorten(self._skeleton_head + _PROBE_JSON + tail)
        found: list[object] = []
        try:
            for item in BACKEND.items(io.BytesIO(probe), self._prefix):
                found.append(item)
                if len(found) > 1:
                    return False
        except (ijson.JSONError, ValueError, ArithmeticError):
            return False
        return found == [_PROBE_VALUE]
