"""The main array of a JSON payload: the array whose items are its records.

One rule, used by whoever counts or reads records: the download room counts them for the
manifest's ``records`` (``download/shape.py``, ``download/fastcheck.py``) and
``archive_reader`` streams them for analysts, so the two can never disagree.

The rule: the top-level array; in a top-level object, the first array at depth <= 2 whose
items are objects or arrays (records), else the first one with any items, else the first
empty one: ``{"errors": [], "meta": {"fields": ["a"]}, "data": {"item": [{...}]}}``
counts ``data.item``. Only the first ``HEAD_BYTES`` of the payload are looked at.

:func:`main_array` applies it to parse events (``(prefix, event)`` pairs as ijson
yields them, from any parser the caller trusts), :func:`main_array_offset` to raw bytes
with a plain tokenizer, to tell a fast path where that array starts. This module parses
nothing itself and imports no parser: callers bring the events.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

HEAD_BYTES = 1 << 16
"""Where the main array must start to be counted ("near the start")."""

WHITESPACE = b" \t\r\n"
OPENERS = b"{["
CLOSERS = b"}]"
_STRUCTURAL = b"[]{}:,"
_DELIMITERS = b' \t\r\n[]{}:,"'
_TOP_LEVEL = {"start_map": "object", "start_array": "array"}


def _item_prefix(prefix: str) -> str:
    return f"{prefix}.item" if prefix else "item"


def main_array(events: Iterable[tuple[str, str]]) -> tuple[str, str | None]:
    """Return the top-level type and the ijson prefix of the main array's items.

    *events* are ``(prefix, event)`` pairs of the payload's head, in ijson's terms
    (``start_map``, ``map_key``, ``start_array``, ``string``, ...); they may stop early
    (a head cut mid-value, or a parser that stopped at an error). The top-level type is
    ``object``, ``array``, a scalar event's name (``string``, ``number``, ``boolean``,
    ``null``) or ``unknown`` when there are no events.
    """
    kinds: list[str] = []  # the containers enclosing the current event
    top = "unknown"
    found: dict[str, str] = {}  # "empty" / "scalars" -> the first such array's item prefix
    opened: str | None = None  # an array just opened, not yet classified
    for prefix, event in events:
        if opened is not None:
            if event in ("start_map", "start_array"):
                return top, opened
            found.setdefault("empty" if event == "end_array" else "scalars", opened)
            opened = None
        if top == "unknown":
            top = _TOP_LEVEL.get(event, event)
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
    """Return the offset of the main array's ``[`` in *head*, by :func:`main_array`'s rule.

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
