"""Read the header fields of one parsed mail (pure, no I/O).

Two kinds of reading. ``header_text`` and ``sender_address`` are lenient: they
always return something to show or to filter on. ``from_domain`` and
``authentication_results`` feed the sender check (``sender.py``) and are strict:
an ambiguous or damaged From field gives no domain at all, and
``Authentication-Results`` values are kept raw (never RFC 2047-decoded), in
order, top-most first. ``email.utils.parseaddr`` is never used
(CVE-2023-27043, docs/reliability.md §4.2).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.headerregistry import AddressHeader
from email.message import Message
from typing import cast

from inbox_poller.matching.charsets import clean_surrogates

MAX_AUTH_RESULTS = 20
"""``Authentication-Results`` fields kept, top-most first. Only the top-most one with our
authserv-id counts, and our receiving system writes it above everything older."""

Defect = Callable[[str], None]
"""Where a reader notes what it could not read."""

# a match starts only where a run of address characters starts: tried from every position
# of a long run (no "@" in it), the pattern was quadratic
_BARE_EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+'-])[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
)
_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*"
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")


def normal_domain(text: str) -> str | None:
    """Return *text* as a lower-case ASCII host name without a trailing dot, or None.

    Anything else (an address literal, non-ASCII, empty labels) is None: a
    domain that cannot be compared exactly is never trusted.
    """
    name = text.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    return name if name.isascii() and _DOMAIN_RE.match(name) else None


def has_headers(msg: Message) -> bool:
    try:
        return bool(msg.keys())
    except Exception:
        return False


def header_text(msg: Message, name: str, defect: Defect) -> str:
    """Return the decoded (RFC 2047) header, or its raw text when decoding fails."""
    try:
        value = msg.get(name)
        text = "" if value is None else str(value)
    except Exception as exc:
        defect(f"header {name} could not be decoded ({type(exc).__name__})")
        text = raw_header(msg, name)
    return " ".join(clean_surrogates(text).split())


def raw_header(msg: Message, name: str) -> str:
    """Return the first *name* field exactly as written (folded, undecoded), or ""."""
    for key, value in raw_items(msg):
        if key.lower() == name.lower():
            return value
    return ""


def raw_items(msg: Message) -> list[tuple[str, str]]:
    """Return every header field as written, in order; [] when the headers are unreadable."""
    try:
        return [(str(key), str(value)) for key, value in msg.raw_items()]
    except Exception:
        return []


def sender_address(msg: Message, defect: Defect) -> str | None:
    """Return the first From address.

    A filter, never authentication (docs/reliability.md §4.2).
    """
    try:
        header = msg.get("From")
        addresses = getattr(header, "addresses", ())
        for address in addresses:
            if address.addr_spec and address.addr_spec != "<>":
                return clean_surrogates(str(address.addr_spec))
    except Exception as exc:
        defect(f"header From could not be parsed ({type(exc).__name__})")
    return bare_address(raw_header(msg, "From"))


def bare_address(text: str) -> str | None:
    """Return the first thing in *text* shaped like an address (linear in *text*)."""
    found = _BARE_EMAIL_RE.search(text)
    return found.group(0) if found else None


def from_domain(msg: Message) -> str | None:
    """Return the domain of the one From mailbox, or None when anything is doubtful.

    Doubtful: no From field or several (a classic way past DMARC), several
    mailboxes, a group, any parse defect, or a domain that is not a plain host name.
    """
    if sum(1 for name, _value in raw_items(msg) if name.strip().lower() == "from") != 1:
        return None  # counted before parsing any: each one parsed costs time
    try:
        field = cast(object, msg.get("From"))  # a header object, or a str when unparsed
        if not isinstance(field, AddressHeader) or getattr(field, "defects", True):
            return None
        addresses = field.addresses
        if len(addresses) != 1 or any(g.display_name is not None for g in field.groups):
            return None
        domain = addresses[0].domain
    except Exception:  # the header parser failed: no domain is the safe answer
        return None
    return normal_domain(domain)


def authentication_results(msg: Message, defect: Defect) -> tuple[str, ...]:
    """Return the raw ``Authentication-Results`` values, unfolded, top-most first."""
    values: list[str] = []
    for name, value in raw_items(msg):
        if name.strip().lower() != "authentication-results":
            continue
        if len(values) >= MAX_AUTH_RESULTS:
            defect(
                f"more than {MAX_AUTH_RESULTS} Authentication-Results fields: lower ones ignored"
            )
            break
        unfolded = _FOLD_RE.sub("", value).replace("\r", " ").replace("\n", " ")
        values.append(clean_surrogates(unfolded).strip())
    return tuple(values)
