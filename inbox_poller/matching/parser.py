"""The email parser under caps: a hostile mail is refused before it can cost much (pure).

``email.message_from_bytes(..., policy=email.policy.default)`` parses the whole MIME tree
before anything is read, and its header parser is superlinear in some fields: a From field
folded over 300 KB took minutes, a Subject of 280 KB of encoded words gigabytes, and
24,000 tiny parts were all parsed before the walk's 200-part cap applied
(docs/reliability.md §4.3). This module runs the same parser with caps checked while it
parses, before any field is parsed for its structure:

* each header block: at most :data:`MAX_HEADER_FIELDS` fields and
  :data:`MAX_HEADER_BLOCK_BYTES`; each field at most :data:`MAX_HEADER_FIELD_BYTES`;
* at most :data:`MAX_PARSE_PARTS` MIME parts; a part nested deeper than
  :data:`MAX_PARSE_DEPTH` is kept as one text leaf, never parsed further.

Breaking one of these raises :class:`~inbox_poller.errors.MailTooCostly`. Within them, a
field is parsed for its structure (RFC 2047 words, addresses) only when it is short
(:data:`MAX_PARSED_ADDRESS_BYTES` for address fields, :data:`MAX_PARSED_FIELD_BYTES` for
others) and while the mail's :data:`MAX_PARSED_HEADER_BYTES` last; otherwise it is read as
written, and :attr:`ParseBudget.unparsed` names it. ``Content-Type``,
``Content-Disposition`` and ``Content-Transfer-Encoding`` are always read as written: the
parameter parser of ``email.message.Message`` reads them again anyway, and the structured
one was quadratic in their parameters.
"""

from __future__ import annotations

import email.policy
import re
from dataclasses import dataclass, field
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.parser import BytesFeedParser
from typing import Any

from inbox_poller.errors import MailTooCostly

MAX_HEADER_FIELD_BYTES = 32 * 1024
"""One header field, folded lines included (real ones stay under 8 KiB)."""
MAX_HEADER_BLOCK_BYTES = 128 * 1024
"""One header block: the mail's own, or one part's."""
MAX_HEADER_FIELDS = 500
"""Fields in one header block."""
MAX_PARSE_PARTS = 1000
"""MIME parts the parser may create (the walk reads the first 200, ``extract.MAX_PARTS``)."""
MAX_PARSE_DEPTH = 13
"""A part this deep is a leaf, whatever its type: one level below what the walk reads
(``extract.MAX_DEPTH``), so that the walk still notes what it ignores. Every level the
parser follows multiplies the cost of every line below it."""
MAX_PARSED_ADDRESS_BYTES = 1024
"""An address field (From, Sender, To, ...) longer than this is read as written: parsing a
4 KiB one took up to 0.4 s."""
MAX_PARSED_FIELD_BYTES = 4096
"""Any other field longer than this is read as written."""
MAX_PARSED_HEADER_BYTES = 16 * 1024
"""Header bytes parsed for their structure in one mail, forwarded messages included."""

_RAW_FIELDS = frozenset({"content-type", "content-disposition", "content-transfer-encoding"})
_ADDRESS_FIELDS = frozenset(
    {"from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-sender"}
    | {"resent-to", "resent-cc", "resent-bcc"}
)
_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")


@dataclass
class ParseBudget:
    """What one mail may still cost the parser (shared by the mail and its attached mails)."""

    parts: int = 0
    parsed_bytes: int = 0
    base_depth: int = 0
    """The depth of the message being parsed (an attached mail sits below its part)."""
    unparsed: list[str] = field(default_factory=list)
    """Header fields read as written because they were too long to parse (names, in order)."""
    parsed: dict[tuple[str, str], Any] = field(default_factory=dict)
    """Each field parsed so far, by (lower-cased name, text): a field read twice (``From``,
    for the sender and for its domain) is parsed and counted once."""


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, but each field's class is made once per name: the
    registry builds a new class for every field it parses (7 us, three times a mail)."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(key)
        return made


_HEADER_CLASSES = _HeaderClasses()


class _CappedPolicy(email.policy.EmailPolicy):
    """``email.policy.default`` with the caps above; one clone per mail carries its budget."""

    budget: ParseBudget | None = None

    def __init__(self, *, budget: ParseBudget | None = None) -> None:
        super().__init__(message_factory=CappedMessage, header_factory=_HEADER_CLASSES)
        object.__setattr__(self, "budget", budget)  # policies are read-only once made

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        size = sum(len(line) for line in sourcelines)
        if size > MAX_HEADER_FIELD_BYTES:
            name = sourcelines[0].split(":", 1)[0][:40]
            raise MailTooCostly(
                f"header field {name!r} is {size:,} bytes (at most {MAX_HEADER_FIELD_BYTES:,})"
            )
        return super().header_source_parse(sourcelines)

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):  # already a header object
            return value
        key = name.lower()
        if key in _RAW_FIELDS:
            return "".join(_LINE_BREAK_RE.split(value))
        budget = self.budget if self.budget is not None else ParseBudget()
        parsed = budget.parsed.get((key, value))
        if parsed is not None:
            return parsed
        limit = MAX_PARSED_ADDRESS_BYTES if key in _ADDRESS_FIELDS else MAX_PARSED_FIELD_BYTES
        if len(value) > limit or budget.parsed_bytes + len(value) > MAX_PARSED_HEADER_BYTES:
            if name not in budget.unparsed:
                budget.unparsed.append(name)
            return " ".join(_LINE_BREAK_RE.split(value))
        budget.parsed_bytes += len(value)
        parsed = super().header_fetch_parse(name, value)
        budget.parsed[(key, value)] = parsed
        return parsed


class CappedMessage(EmailMessage):
    """A parsed part that counts itself against its mail's budget, and knows its depth."""

    def __init__(self, policy: Any = None) -> None:
        super().__init__(policy)
        budget = getattr(self.policy, "budget", None)
        if budget is not None:
            budget.parts += 1
            if budget.parts > MAX_PARSE_PARTS:
                raise MailTooCostly(f"more than {MAX_PARSE_PARTS:,} MIME parts")
        self.depth = budget.base_depth if budget is not None else 0
        """0 for the mail itself; its parts one more than their parent."""
        self._header_bytes = 0
        self._header_fields = 0

    def set_raw(self, name: str, value: Any) -> None:
        """Store one field as parsed from the source (the parser's call), within the caps."""
        self._header_bytes += len(name) + len(value)
        self._header_fields += 1
        if self._header_fields > MAX_HEADER_FIELDS:
            raise MailTooCostly(f"more than {MAX_HEADER_FIELDS:,} header fields in one block")
        if self._header_bytes > MAX_HEADER_BLOCK_BYTES:
            raise MailTooCostly(f"a header block over {MAX_HEADER_BLOCK_BYTES:,} bytes")
        super().set_raw(name, value)

    def attach(self, payload: Any) -> None:
        if isinstance(payload, CappedMessage):
            payload.depth = self.depth + 1
        super().attach(payload)

    def get_content_type(self) -> str:
        # a part below the parser's depth is a leaf: its lines are never split further
        if self.depth >= MAX_PARSE_DEPTH:
            return "text/plain"
        return super().get_content_type()


def parse_mail(data: bytes, budget: ParseBudget, *, depth: int = 0) -> CappedMessage:
    """Parse *data* (one RFC 5322 message) within *budget*; the message sits at *depth*.

    :raises MailTooCostly: a cap was broken; nothing of the mail is returned.
    """
    budget.base_depth = depth
    parser = BytesFeedParser(policy=_CappedPolicy(budget=budget))
    parser.feed(data)
    root = parser.close()
    if not isinstance(root, CappedMessage):  # the policy's factory makes every part
        raise TypeError(f"unexpected message class {type(root).__name__}")
    return root
