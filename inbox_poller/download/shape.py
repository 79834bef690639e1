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
import io
from collections.abc import Iterator
from dataclasses import dataclass, field

import ijson

from inbox_poller.download.ijsonbackend import BACKEND, DigitRuns
from inbox_poller.download.outline import cleared_prefix
from inbox_poller.mainarray import main_array


@dataclass(frozen=True)
class Shape:
    """What validation found: the top-level type and the main array's length."""

    top_level: str
    records: int | None
    format: str = field(default="json", repr=False)
    """The payload's format (``download.formats``)."""


SNIFF_READ_BYTES = 4096
"""Bytes of the head ijson parses at a time. The main array is usually found in the
first few hundred bytes, and ijson's C backend builds every event of a piece before
yielding the first: parsing the whole 64 KiB head at once cost 1.4 ms per payload,
whatever its size (bench/README.md, the backlog)."""


def _events(head: bytes) -> Iterator[tuple[str, str]]:
    """Yield the head's ``(prefix, event)`` pairs, ending quietly where ijson stops."""
    with contextlib.suppress(ijson.JSONError, ValueError, ArithmeticError):
        for prefix, event, _ in BACKEND.parse(io.BytesIO(head), buf_size=SNIFF_READ_BYTES):
            yield prefix, event


def sniff_shape(head: bytes) -> tuple[str, str | None]:
    """Return the top-level type and the ijson prefix of the main array's items.

    The rule is ``mainarray.main_array``'s. Only *head* is looked at, and only up to a
    byte that breaks the outline (nesting deeper than ``MAX_DEPTH`` costs ijson memory
    with the square of the depth); an invalid head is left for the parser to report.
    """
    return main_array(_events(DigitRuns().shorten(cleared_prefix(head))))
