"""Which format a payload is, and its validation when it is CSV or XML.

The format is decided by what was requested and confirmed by what arrives (the first
bytes, ``payloadformats.sniff``), never by the Content-Type:

* an HTML page is refused, whatever was asked for (a login or error page, not data);
* a JSON document (``{`` or ``[`` first) is JSON whatever was asked for: Pinpointe's
  default format, stored as what it is, and the manifest says ``json``;
* for a JSON request, anything else is left to the JSON validation, which refuses it;
* for a CSV request, text is validated as CSV; XML is refused (not what was asked for);
* for an XML request, XML is validated as XML; anything else is refused.

CSV and XML are validated from the stored bytes (``PayloadSink.read_back``), streaming,
by ``payloadformats``; JSON keeps its fast path and ijson (``fetcher``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from inbox_poller.download.fastcheck import FastCheck
from inbox_poller.download.shape import Shape
from inbox_poller.errors import PayloadInvalid
from inbox_poller.payloadformats import SNIFF_BYTES, FormatError, count_csv, sniff, xml_shape


class FormatCheck:
    """Fed the body while it streams: keeps its head, and runs the JSON fast check when
    JSON was asked for (a CSV or XML request never pays for it)."""

    def __init__(self, expected: str) -> None:
        self.expected = expected
        self.head = b""
        self.json: FastCheck | None = FastCheck() if expected == "json" else None

    def feed(self, chunk: memoryview) -> None:
        """Take the next piece (``spool.Check``: valid during the call only; never raises)."""
        if len(self.head) < SNIFF_BYTES:
            self.head += bytes(chunk[: SNIFF_BYTES - len(self.head)])
        if self.json is not None:
            self.json.feed(chunk)

    def arrived(self) -> str:
        """Return the format to validate the payload as; raise ``PayloadInvalid``."""
        seen = sniff(self.head)
        if seen == "html":
            raise PayloadInvalid(
                f"an HTML page arrived, not a {self.expected.upper()} payload (an error or"
                f" login page?); its first bytes: {self.head.lstrip()[:32]!r}"
            )
        if seen == "json" or self.expected == "json":
            return "json"
        if self.expected == "csv":
            if seen == "xml":
                raise PayloadInvalid("XML arrived for a CSV request")
            return "csv"
        if seen != "xml":
            raise PayloadInvalid(f"a CSV request or text arrived for an XML request ({seen})")
        return "xml"

    def fast_shape(self) -> Shape | None:
        """The JSON fast path's answer (None: undecided, or it did not run)."""
        return self.json.finish() if self.json is not None else None

    @property
    def reason(self) -> str | None:
        return self.json.reason if self.json is not None else "not requested as JSON"


def validate_stored(fmt: str, open_stream: Callable[[], BinaryIO]) -> Shape:
    """Validate the stored CSV or XML payload to its end; return its shape.

    ``top_level`` is ``table`` for CSV and ``element`` for XML.
    :raises PayloadInvalid: with the reason.
    """
    try:
        with open_stream() as stream:
            if fmt == "csv":
                return Shape("table", count_csv(stream), "csv")
            shape = xml_shape(stream)
            return Shape("element", shape.records, "xml")
    except FormatError as exc:
        raise PayloadInvalid(str(exc)) from None
