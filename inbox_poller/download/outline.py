"""The outline of a JSON text, followed before any parser is fed: nesting, end, escapes.

ijson's C parser, the authority (``validation``), has three faults this module keeps
from it (docs/reliability.md §3.5):

* its memory grows with the square of the nesting depth: 65,536 nested arrays, a
  128 KiB payload that deflates to 152 bytes, took 10 GiB;
* it accepts a document followed by a string that never ends (``[...]"ERROR: export
  incomplete``);
* it turns an unpaired high surrogate escape (``"\\ud800"``) into ``?`` while it refuses
  an unpaired low one (``"\\udc00"``).

:class:`Outline` reads the payload's bytes in order, before a parser sees them, and stops
at the first byte that breaks one of these rules:

1. arrays and objects nest at most ``MAX_DEPTH`` deep;
2. nothing but whitespace follows the top-level value;
3. a ``\\uD800``-``\\uDFFF`` escape is half of a pair: a high one followed at once by a low
   one. A lone surrogate is not a character: no UTF-8 text can hold it, and RFC 7493
   (I-JSON) §2.1 forbids it.

It is not a validator: anything else, valid or not, is left to the parser, which sees the
bytes before a stop and reports its own error there first, if it has one. On a valid
prefix the outline is exact; past the first error a parser would report, its state no
longer matters.

How it stays fast
-----------------
The parser reads about 90 MB/s; a byte-by-byte loop in Python would be slower than that.
Inside the top-level value, a region of the text is reduced with C-speed ``bytes``
methods: escaped backslashes and escaped quotes are removed, every byte but quotes and
brackets is dropped, and the strings (pairs of quotes) go with the brackets inside them.
What is left, the region's brackets, bounds the depth it reaches. Only a region where
the top-level value may end, or the depth may pass the limit, is read token by token.
Surrogate escapes are looked for with one regular expression, and only in a region that
holds one.
"""

from __future__ import annotations

import re

MAX_DEPTH = 512
"""Arrays and objects nested deeper than this make a payload invalid: ijson's memory
grows with the square of the depth, and Python's ``json`` itself stops near 1,000."""
REGION_BYTES = 1 << 16
"""Bytes judged at once: the unit of the fast reduction and of the token-by-token fallback."""
LOOKAHEAD_BYTES = 11
"""Bytes held back after each region: a high surrogate escape starting on the region's last
byte needs 5 more bytes, and the low one that may follow 6 more."""

_WHITESPACE = b" \t\r\n"
_OPENERS = b"[{"
_CLOSERS = b"]}"
_NOT_MARKS = bytes(byte for byte in range(256) if byte not in b'"[]{}')
_PARENS = bytes.maketrans(b"[{]}", b"(())")  # each opener "(", each closer ")"
_EIGHT_QUOTES = b'"' * 8
_STRING_MARKS = re.compile(rb'"[^"]*"')
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
"""A string's bytes up to its closing quote, a backslash ending the text, or the end."""
_SCALAR = re.compile(rb'[^ \t\r\n\[\]{}:,"]*')
_NON_SPACE = re.compile(rb"[^ \t\r\n]")
_SURROGATE_HINT = re.compile(rb"\\u[dD][89a-fA-F]")
_ESCAPES = re.compile(
    rb"(?P<backslash>\\\\)"
    rb"|(?P<pair>\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?P<lone>\\u[dD][89a-fA-F][0-9a-fA-F]{2})"
)
"""Escaped backslashes (read in pairs, so a ``\\\\`` never starts an escape), surrogate
pairs, and lone surrogates."""
_LOW_ESCAPE_BYTES = 6


class OutlineError(ValueError):
    """The text breaks a rule of the outline at byte ``offset`` (counted from its start)."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} (byte {offset})")
        self.reason = reason
        self.offset = offset


class Outline:
    """Follow a JSON text fed in order; pass on only bytes that keep the outline's rules.

    ``feed`` returns the bytes cleared so far, holding back the last ``LOOKAHEAD_BYTES``;
    ``finish`` returns the rest. At the first byte that breaks a rule, ``error`` is set
    and the bytes before it are the last ones returned.

    :param depth: the nesting depth at the start of the text, when it starts inside the
        top-level value (the fast path checks a document's tail this way).
    """

    def __init__(self, *, depth: int = 0) -> None:
        self.depth = depth
        self.error: OutlineError | None = None
        self.in_string = False
        self._escaped = False  # the next byte is escaped by a backslash ending the last region
        self._resume = 0  # bytes of the next region the surrogate scan has read already
        self._scalar = False  # a top-level number or literal runs on into the next region
        self._ended = False  # the top-level value is complete
        self._held = b""
        self._base = 0  # the offset of self._held[0] in the text

    def feed(self, data: bytes) -> bytes:
        """Take the next bytes; return those cleared (all but the last few, held back)."""
        if self.error is not None:
            return b""
        held = self._held + data
        return self._clear(held, max(0, len(held) - LOOKAHEAD_BYTES), end_of_text=False)

    def finish(self, *, end_of_text: bool = True) -> bytes:
        """Clear and return what is held back.

        With *end_of_text* false the text may go on beyond what was fed (a head, a
        prefix): a surrogate escape near the end is then not judged.
        """
        if self.error is not None:
            return b""
        return self._clear(self._held, len(self._held), end_of_text=end_of_text)

    def _clear(self, buf: bytes, upto: int, *, end_of_text: bool) -> bytes:
        """Judge ``buf[:upto]`` region by region; keep the rest; return what passed."""
        start = 0
        while start < upto:
            stop = min(upto, start + REGION_BYTES)
            escaped = self._escaped
            bad = self._structure(buf, start, stop)
            lone = self._surrogates(buf, start, stop, escaped, end_of_text=end_of_text)
            if bad is not None or lone is not None:
                return self._stop(buf, bad, lone)
            start = stop
        self._held = buf[upto:]
        self._base += upto
        return buf[:upto]

    def _stop(self, buf: bytes, bad: tuple[int, str] | None, lone: int | None) -> bytes:
        """Record the first broken rule; return the bytes before it."""
        if lone is not None and (bad is None or lone < bad[0]):
            bad = (lone, "a string holds an unpaired UTF-16 surrogate escape")
        assert bad is not None
        at, reason = bad
        self.error = OutlineError(reason, self._base + at)
        self._held = b""
        return buf[:at]

    # --- nesting and the end of the top-level value --------------------------------------

    def _structure(self, buf: bytes, start: int, stop: int) -> tuple[int, str] | None:
        """Follow ``buf[start:stop]``; return (position, reason) of a broken rule, or None."""
        if self.depth > 0 and not self._ended and self._reduce(buf, start, stop):
            return None
        return self._tokens(buf, start, stop)

    def _reduce(self, buf: bytes, start: int, stop: int) -> bool:
        """Follow a region inside the top-level value at C speed, if it is plainly safe.

        Returns False, changing nothing, when the region may close the top-level value or
        pass ``MAX_DEPTH``; ``_tokens`` then reads it.
        """
        text = buf[start + 1 : stop] if self._escaped else buf[start:stop]
        escaped = False
        if b"\\" in text:
            # escapes are read in pairs from a known start, as the parser reads them
            text = text.replace(b"\\\\", b"")
            if text.endswith(b"\\"):
                escaped = True
                text = text[:-1]
            text = text.replace(b'\\"', b"")
        marks = text.translate(None, _NOT_MARKS)  # quotes and brackets only
        if self.in_string:
            marks = b'"' + marks
        if b'"' in marks:
            # dropping an even run of quotes keeps every bracket inside or outside its
            # string; most strings hold no bracket, so most quotes go in long runs first
            marks = marks.replace(_EIGHT_QUOTES, b"").replace(b'""', b"")
            if b'"' in marks:
                marks = _STRING_MARKS.sub(b"", marks)
        quote = marks.find(b'"')  # at most one is left: a string running on
        in_string = quote >= 0
        brackets = (marks[:quote] if in_string else marks).translate(_PARENS)
        opens = brackets.count(b"(")
        closes = len(brackets) - opens
        depth = self.depth
        if depth + opens > MAX_DEPTH or depth - closes < 1:
            # bound the depth by the unmatched brackets and how deep the matched ones nest
            nest = 0
            while b"()" in brackets:
                brackets = brackets.replace(b"()", b"")
                nest += 1
                if nest > MAX_DEPTH:
                    return False
            closes = brackets.count(b")")
            opens = len(brackets) - closes
            if depth - closes < 1 or depth + opens + nest > MAX_DEPTH:
                return False
        self.depth = depth + opens - closes
        self.in_string = in_string
        self._escaped = escaped and in_string
        return True

    def _tokens(self, buf: bytes, start: int, stop: int) -> tuple[int, str] | None:
        """Follow a region token by token: the start and end of the text, near the limit."""
        pos = start
        if self._escaped:
            pos += 1
            self._escaped = False
        while pos < stop:
            if self.in_string:
                end = _STRING_BODY.match(buf, pos, stop).end()  # type: ignore[union-attr]
                if end >= stop:
                    return None
                if buf[end] == 0x5C:  # the region's last byte: it escapes the next one
                    self._escaped = True
                    return None
                self.in_string = False
                self._ended = self.depth == 0
                pos = end + 1
                continue
            if self._scalar:
                pos = _SCALAR.match(buf, pos, stop).end()  # type: ignore[union-attr]
                if pos >= stop:
                    return None
                self._scalar = False
                self._ended = True
                continue
            found = _NON_SPACE.search(buf, pos, stop)
            if found is None:
                return None
            pos = found.start()
            if self._ended:
                return pos, "trailing garbage after the top-level value"
            byte = buf[pos]
            pos += 1
            if byte == 0x22:
                self.in_string = True
            elif byte in _OPENERS:
                self.depth += 1
                if self.depth > MAX_DEPTH:
                    return pos - 1, f"arrays and objects nested deeper than {MAX_DEPTH}"
                if self.depth == 1:  # the top-level value starts: on at C speed
                    return self._structure(buf, pos, stop)
            elif byte in _CLOSERS:
                self.depth = max(0, self.depth - 1)
                self._ended = self.depth == 0
            elif byte not in b",:":  # a number or a literal
                pos = _SCALAR.match(buf, pos, stop).end()  # type: ignore[union-attr]
                if self.depth == 0:
                    self._scalar = pos >= stop
                    self._ended = not self._scalar
        return None

    # --- surrogate escapes ----------------------------------------------------------------

    def _surrogates(
        self, buf: bytes, start: int, stop: int, escaped: bool, *, end_of_text: bool
    ) -> int | None:
        """Return the position of an unpaired surrogate escape starting in the region, or None.

        *escaped*: the region's first byte is escaped (a backslash ended the last region).
        ``buf`` holds the bytes after *stop* (up to ``LOOKAHEAD_BYTES``) for a pair that
        runs on; without them a pair cannot be told from a lone escape at the very end,
        which is judged only at the *end_of_text*.
        """
        pos = start + max(self._resume, int(escaped))
        self._resume = max(0, pos - stop)
        if pos >= stop or buf.find(b"\\", pos, stop) < 0:
            return None
        if _SURROGATE_HINT.search(buf, pos, stop + 3) is None:
            return None
        limit = min(len(buf), stop + LOOKAHEAD_BYTES)
        for escape in _ESCAPES.finditer(buf, pos, limit):
            if escape.start() >= stop:
                break
            if escape.lastgroup == "lone":
                room = limit - escape.end()
                if room < _LOW_ESCAPE_BYTES and not end_of_text and limit == len(buf):
                    break  # a low half may follow beyond the bytes known
                return escape.start()
            self._resume = max(0, escape.end() - stop)
        return None


def check_outline(data: bytes, *, depth: int = 0, end_of_text: bool = True) -> Outline:
    """Follow all of *data*; return the outline at its end, or raise :class:`OutlineError`."""
    outline = Outline(depth=depth)
    outline.feed(data)
    outline.finish(end_of_text=end_of_text)
    if outline.error is not None:
        raise outline.error
    return outline
