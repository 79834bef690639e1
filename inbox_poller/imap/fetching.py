"""Fetching new mail from the selected folder: UID search by watermark, size before body.

``ImapMailbox.fetch_new`` delegates here. New mail is found with ``UID SEARCH UID n:*``
(its trap handled: the highest UID always answers, even below n), sizes and flags are
read per chunk of explicit UIDs, and bodies are retrieved with ``BODY.PEEK[]`` (so
``\\Seen`` stays unset) only when they are within the size cap, a *group* of messages
per FETCH when the caller asks for the first of them: one round trip per mail made a
backlog cost its count in round trips, which a mailbox across the internet (tens of
milliseconds each) turns into minutes. A group holds at most ``BODY_GROUP_MAILS``
messages and is read with one partial cap, its largest declared size plus one byte,
chosen so that the group's answer stays within ``BODY_GROUP_BYTES``; a body that fills
that cap (its server understated its size) is fetched again alone, with the mail's own
cap, as a message too large for any group is.
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


BODY_GROUP_MAILS = 50
"""Bodies fetched with one FETCH at most."""
BODY_GROUP_BYTES = 4 * 1024 * 1024
"""The most one group's answer may hold: its count times its partial cap."""

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


def chunked(
    uids: Sequence[int], size: int = FETCH_CHUNK_UIDS, *, first: int | None = None
) -> Iterator[list[int]]:
    """Yield *uids* in order, in lists of at most *size*, the first of at most *first*."""
    if size < 1 or (first is not None and first < 1):
        raise ValueError("chunk size must be at least 1")
    head = 0 if first is None else min(first, size)
    if head and uids:
        yield list(uids[:head])
    for start in range(head, len(uids), size):
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
    server, never fetched (docs/reliability.md §2.9). Bodies are retrieved in groups
    (module docstring), a group when the caller asks for its first message, and only
    those within *max_message_bytes*; a message expunged meanwhile is skipped.
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
    # the first chunk is one body group: a backlog's first mail is read after one group's
    # sizes are, not after those of the first FETCH_CHUNK_UIDS
    for chunk in chunked(uids, chunk_size, first=BODY_GROUP_MAILS):
        with guard(f"fetch sizes of UIDs {chunk[0]}-{chunk[-1]}"):
            meta = client.fetch(chunk, ["RFC822.SIZE", "FLAGS"])
        yield from _chunk_mails(client, status, chunk, meta, max_message_bytes, guard)


def _chunk_mails(
    client: IMAPClient,
    status: MailboxStatus,
    chunk: Sequence[int],
    meta: Mapping[int, Any],
    limit: int,
    guard: Guard,
) -> Iterator[FetchedMail]:
    """Yield the messages of *chunk* (sizes and flags in *meta*), a body only when it is
    within the size cap *limit*, its group fetched when the caller asks for its first."""
    sizes = {uid: int(fetch_item(meta[uid], b"RFC822.SIZE") or 0) for uid in chunk if uid in meta}
    requested: set[int] = set()  # the UIDs of the group last fetched
    bodies: dict[int, Any] = {}  # its bodies not yet handed on
    cap = limit + 1
    for index, uid in enumerate(chunk):
        if uid not in sizes:  # expunged by someone else since the SEARCH
            continue
        size = sizes[uid]
        key = MailKey(status.folder, status.uidvalidity, uid)
        flags = tuple(atom_text(flag) for flag in fetch_item(meta[uid], b"FLAGS") or ())
        if size > limit:  # logged once, as refused, by the reader
            yield FetchedMail(key=key, size=size, raw=None, flags=flags)
            continue
        if uid not in requested:
            group = _body_group(chunk[index:], sizes, limit)
            cap = _group_cap(group, sizes, limit)
            bodies = _fetch_bodies(client, group, cap, guard)
            requested = set(group)
        raw = bodies.pop(uid, None)
        if isinstance(raw, bytes) and len(raw) >= cap and cap <= limit:
            # the group's cap cut it (its size was understated): alone, with its own
            raw = _fetch_bodies(client, [uid], limit + 1, guard).get(uid)
        if not isinstance(raw, bytes):
            # expunged by another session since the SEARCH: Dovecot answers NIL
            # with [EXPUNGEISSUED], other servers leave the UID out
            logger.info("uid %s: expunged by someone else before it was read", key)
            continue
        if len(raw) > limit:
            size, raw = max(size, len(raw)), None
        yield FetchedMail(key=key, size=size, raw=raw, flags=flags)


def _body_group(uids: Sequence[int], sizes: Mapping[int, int], limit: int) -> list[int]:
    """The messages whose bodies one FETCH reads, from ``uids[0]`` on: those within the
    size cap *limit*, while ``BODY_GROUP_MAILS`` and ``BODY_GROUP_BYTES`` allow."""
    group = [uids[0]]
    largest = sizes[uids[0]]
    for uid in uids[1:]:
        if len(group) == BODY_GROUP_MAILS:
            break
        if uid not in sizes or sizes[uid] > limit:
            continue
        if (len(group) + 1) * (max(largest, sizes[uid]) + 1) > BODY_GROUP_BYTES:
            break
        group.append(uid)
        largest = max(largest, sizes[uid])
    return group


def _group_cap(group: Sequence[int], sizes: Mapping[int, int], limit: int) -> int:
    """The partial cap of a group's FETCH: its largest declared size plus one byte (a
    body that fills it may be longer), or the mail's own cap plus one for one message."""
    if len(group) == 1:
        return limit + 1
    return max(sizes[uid] for uid in group) + 1


def _fetch_bodies(client: IMAPClient, uids: list[int], cap: int, guard: Guard) -> dict[int, Any]:
    """The first *cap* bytes of each message's body, by UID: a partial fetch caps what
    is read even when the server understated a size. A UID expunged meanwhile is absent
    or NIL."""
    where = f"UID {uids[0]}" if len(uids) == 1 else f"UIDs {uids[0]}-{uids[-1]}"
    with guard(f"fetch {where}"):
        answer = client.fetch(uids, [f"BODY.PEEK[]<0.{cap}>"])
    return {uid: fetch_item(item, b"BODY[]<0>", b"BODY[]") for uid, item in answer.items()}
