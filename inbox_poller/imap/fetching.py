"""Fetching new mail from the selected folder: UID search by watermark, size before body.

``ImapMailbox.fetch_new`` delegates here. New mail is found with ``UID SEARCH UID n:*``
(its trap handled: the highest UID always answers, even below n), sizes and flags are
read per chunk of explicit UIDs, and each body is retrieved with ``BODY.PEEK[]`` (so
``\\Seen`` stays unset) only when it is within the size cap, one message at a time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from typing import Any

from imapclient import IMAPClient

from inbox_poller.imap.session import Guard, atom_text
from inbox_poller.models import FetchedMail, MailboxStatus, MailKey

logger = logging.getLogger("inbox_poller.imap")

FETCH_CHUNK_UIDS = 5000
"""Explicit UIDs per FETCH: imapclient 4.x cannot take ``1:*``, and Dovecot refuses
command lines over 64 KiB (about 10,000 UIDs)."""


_QUOTED_OR_SPACES_RE = re.compile(rb'"|\s+')


def item_key(key: bytes | str) -> bytes:
    """Return a FETCH answer's data-item name in one spelling: upper case, unquoted.

    Servers differ in how they echo a section: Courier quotes header names
    (``BODY[HEADER.FIELDS ("MESSAGE-ID")]``), others answer in lower case or with other
    spacing; the names mean the same (RFC 3501 §6.4.5, §7.4.2).
    """
    raw = key.encode("ascii", "replace") if isinstance(key, str) else key
    return _QUOTED_OR_SPACES_RE.sub(lambda m: b"" if m.group() == b'"' else b" ", raw).upper()


def fetch_item(item: Mapping[Any, Any], *keys: bytes) -> Any:
    """Return the first of *keys* present in one message's FETCH answer, whatever its spelling.

    None when none is there.
    """
    for key in keys:
        if key in item:  # the common case: the server echoed our spelling
            return item[key]
    wanted = [item_key(key) for key in keys]
    spelled = {
        item_key(name): value for name, value in item.items() if isinstance(name, bytes | str)
    }
    for key in wanted:
        if key in spelled:
            return spelled[key]
    return None


def chunked(uids: Sequence[int], size: int = FETCH_CHUNK_UIDS) -> Iterator[list[int]]:
    """Yield *uids* in order, in lists of at most *size*."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    for start in range(0, len(uids), size):
        yield list(uids[start : start + size])


def fetch_new(
    client: IMAPClient,
    status: MailboxStatus,
    after_uid: int,
    *,
    max_message_bytes: int,
    chunk_size: int,
    where: str,
    guard: Guard,
    since: date | None = None,
) -> Iterator[FetchedMail]:
    """Yield the messages with UID > *after_uid*, in ascending UID order, one at a time.

    With *since*, only those the server dates on or after that day (``SEARCH SINCE``:
    the internal date's day, its time and zone disregarded): older mail is skipped by the
    server, never fetched (docs/reliability.md §2.9). A body is retrieved only when the
    caller asks for the next message, and only when it is within *max_message_bytes*; a
    message expunged meanwhile is skipped.
    :raises MailboxError: (through *guard*)
    """
    first = max(after_uid + 1, 1)
    criteria: list[Any] = ["UID", f"{first}:*"]
    if since is not None:
        criteria += ["SINCE", since]
    with guard("search for new mail"):
        # NOOP lets the server sync the selected folder first: Dovecot answers a
        # SEARCH from the session's view, which may predate mail that arrived since
        client.noop()
        found = client.search(criteria)
    # "n:*" always includes the highest UID, even when it is below n (RFC 3501 6.4.8)
    uids = sorted(uid for uid in found if uid > after_uid)
    if uids:
        logger.debug("%s: %s new message(s) after UID %s", where, len(uids), after_uid)
    for chunk in chunked(uids, chunk_size):
        with guard(f"fetch sizes of UIDs {chunk[0]}-{chunk[-1]}"):
            meta = client.fetch(chunk, ["RFC822.SIZE", "FLAGS"])
        for uid in chunk:
            mail = _fetch_one(client, status, uid, meta.get(uid), max_message_bytes, guard)
            if mail is not None:
                yield mail


def _fetch_one(
    client: IMAPClient,
    status: MailboxStatus,
    uid: int,
    meta: Mapping[bytes, Any] | None,
    limit: int,
    guard: Guard,
) -> FetchedMail | None:
    """Return one message, with its body only when it is within the size cap *limit*."""
    if meta is None:  # expunged by someone else since the SEARCH
        return None
    size = int(fetch_item(meta, b"RFC822.SIZE") or 0)
    flags = tuple(atom_text(flag) for flag in fetch_item(meta, b"FLAGS") or ())
    key = MailKey(status.folder, status.uidvalidity, uid)
    raw = None
    if size <= limit:
        # a partial fetch caps what we read even if the server understated the size
        with guard(f"fetch UID {uid}"):
            body = client.fetch([uid], [f"BODY.PEEK[]<0.{limit + 1}>"]).get(uid)
        raw = None if body is None else fetch_item(body, b"BODY[]<0>", b"BODY[]")
        if not isinstance(raw, bytes):
            # expunged by another session since the SEARCH: Dovecot answers NIL
            # with [EXPUNGEISSUED], other servers leave the UID out
            logger.info("uid %s: expunged by someone else before it was read", key)
            return None
        if len(raw) > limit:
            size, raw = max(size, len(raw)), None
    # an over-size mail (raw None) is logged once, as refused, by the reader
    return FetchedMail(key=key, size=size, raw=raw, flags=flags)
