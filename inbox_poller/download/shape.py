"""The shape of a JSON payload: its top-level type and its main array, found in its head.

The *main array* is the array whose items are counted as ``records``. Both validators
answer with a :class:`Shape`: ``fastcheck.FastCheck`` while the payload streams, and
``validation.validate``, the authority, for every payload the fast path leaves undecided.
Both find the main array by the one rule of :func:`sniff_shape`, looking only at the
first ``HEAD_BYTES`` of the payload; :func:`main_array_offset` applies the same rule with
a plain tokenizer, to tell the fast path where that array starts.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

import ijson

from inbox_poller.download.ijsonbackend import BACKEND, DigitRuns
from inbox_poller.download.outline import cleared_prefix

HEAD_BYTES = 1 << 16
"""Where the main array must start to be counted ("near the start")."""

WHITESPACE = b" \t\r\n"
OPENERS = b"{["
CLOSERS = b"}]"
_STRUCTURAL = b"[]{}:,"
_DELIMITERS = b' \t\r\n[]{}:,"'


@dataclass(frozen=True)
class Shape:
    """What validation found: the top-level type and the main array's length."""

    top_level: str
    records: int | None


def _item_prefix(prefix: str) -> str:
    return f"{prefix}.item" if prefix else "item"


def sniff_shape(head: bytes) -> tuple[str, str | None]:
    """Return the top-level type and the ijson prefix of the main array's items.

    The main array is the top-level array; in a top-level object, the first array at
    depth <= 2 whose items are objects or arrays (records), else the first one with any
    items, else the first empty one: ``{"errors": [], "meta": {"fields": ["a"]},
    "data": {"item": [{...}]}}`` counts ``data.item``. Only *head* is looked at, and
    only up to a byte that breaks the outline (nesting deeper than ``MAX_DEPTH`` costs
    ijson memory with the square of the depth); an invalid head is left for the
    parser to report.
    """
    head = DigitRuns().shorten(cleared_prefix(head))
    kinds: list[str] = []  # the containers enclosing the current event
    top = "unknown"
    found: dict[str, str] = {}  # "empty" / "scalars" -> the first such array's item prefix
    opened: str | None = None  # an array just opened, not yet classified
    with contextlib.suppress(ijson.JSONError, ValueError, ArithmeticError):
        for prefix, event, _ in BACKEND.parse(io.BytesIO(head)):
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
        if byte in WHITESPACE:
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
            if byte in OPENERS:
                return opened
            found.setdefault("empty" if byte == 0x5D else "scalars", opened)
            opened = None
        if byte == 0x5B and len(stack) <= 2 and all(kind == 0x7B for kind in stack):
            opened = offset
        if byte in OPENERS:
            stack.append(byte)
        elif byte in CLOSERS:
            stack.pop()
            if not stack:
                break
    if opened is not None:
        return opened
    return found.get("scalars", found.get("empty"))
