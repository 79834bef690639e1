"""The ijson parser the download edge runs, and the digit runs its input must not hold.

Sniffing a payload's head (``shape``), the fast path's probe (``fastcheck``) and the
authoritative validation (``validation``) all parse with this one backend, and all feed
it through :class:`DigitRuns`.

ijson's number limits
---------------------
ijson converts every number it parses, and two conversions fail on valid JSON: beyond
Python's limit on integer digits (4300) yajl2_c (ijson 3.6) crashes the process with
SIGSEGV instead of raising; and ``Decimal`` raises InvalidOperation for an exponent of
19 digits (``1e-9999999999999999999``, which simdjson reads as 0.0). So ijson never sees
a run of more than ``MAX_DIGIT_RUN`` ASCII digits: each longer run is shortened to that
length on the way in (the head, the probe and ``validation.validate`` alike). No verdict
and no count changes: digits stay digits, so every token keeps its kind and its
boundaries; a run is never emptied, and one starting with ``0`` keeps a second digit, so
a leading zero stays invalid; inside strings digits are plain characters. (Keys that
differ only beyond a run's 17th digit look alike to ijson; both paths share that view.)
"""

from __future__ import annotations

import ijson

JSON_BACKEND = "yajl2_c"
"""The only ijson backend used: C, fast, and no ffi callbacks (MemoryDenyWriteExecute)."""
BACKEND = ijson.get_backend(JSON_BACKEND)  # ImportError at start-up, never a silent fallback

MAX_DIGIT_RUN = 17
"""ijson sees no run of ASCII digits longer than this (see "ijson's number limits")."""
_DIGIT_MAP = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x78 for byte in range(256))
"""``bytes.translate`` table: each ASCII digit becomes ``0``, any other byte ``x``."""
_LONG_RUN = b"0" * (MAX_DIGIT_RUN + 1)


class DigitRuns:
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
