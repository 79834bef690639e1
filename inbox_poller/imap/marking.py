"""Marking handled mail: find it again, store the keyword, move it out of the folder.

``ImapMailbox.acknowledge`` delegates to a ``Marker``. A mail is found by its UID
while the folder's UIDVALIDITY is unchanged, else by its exact Message-ID. The keyword
is stored only where PERMANENTFLAGS allow it; the move uses MOVE, else COPY with
``UID EXPUNGE`` of our UIDs only (UIDPLUS), and never a bare EXPUNGE, which would
also delete other clients' ``\\Deleted`` mail.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from imapclient import DELETED, IMAPClient

from inbox_poller.config import ImapConfig
from inbox_poller.errors import ProcessedFolderError
from inbox_poller.imap.fetching import fetch_item
from inbox_poller.imap.session import Guard
from inbox_poller.models import MailboxStatus, MailKey

logger = logging.getLogger("inbox_poller.imap")

_HEADER_FOLD_RE = re.compile(rb"\r?\n[ \t]+")
_MESSAGE_ID_RE = re.compile(rb"^message-id:[ \t]*(.*?)[ \t]*$", re.IGNORECASE | re.MULTILINE)


class Marker:
    """Marks handled mail in one account's folder as *config* and the server allow.

    One per ``ImapMailbox``, across its sessions, so that a server without MOVE or
    UIDPLUS is warned about once, not once per mail.
    """

    def __init__(self, config: ImapConfig, where: str) -> None:
        self._config = config
        self._where = where
        self._warned_cannot_move = False

    def mark(
        self,
        client: IMAPClient,
        status: MailboxStatus,
        key: MailKey,
        message_id: str | None,
        guard: Guard,
        target: str | None,
        problem: str | None = None,
    ) -> str:
        """Keyword (when allowed), then move to *target* (when configured); say what was done.

        *target* is the processed folder's name on the server; *problem* says why the
        configured one cannot be used. Returns ``"keyword"``, ``"moved"``, ``"keyword,
        moved"``, ``"not found"`` or ``"ledger only"``. Idempotent.
        :raises ProcessedFolderError: *problem* is set (after storing the keyword).
        :raises MailboxError: (through *guard*)
        """
        uids = locate(client, status, key, message_id, guard)
        if not uids:
            return "not found"  # logged by the caller, with the export it belongs to
        return self._mark_uids(client, status, uids, guard, target, problem)

    def mark_many(
        self,
        client: IMAPClient,
        status: MailboxStatus,
        mails: Sequence[tuple[MailKey, str | None]],
        guard: Guard,
        target: str | None,
        problem: str | None = None,
    ) -> list[str]:
        """Mark several handled mails with one command per step; say what was done to each.

        Mails of the selected folder and UIDVALIDITY are found with one ``UID SEARCH`` of
        their UID set, then keyworded with one ``UID STORE`` and moved with one ``UID
        MOVE`` (or one COPY, STORE and ``UID EXPUNGE``) of the UIDs found; the others (an
        older UIDVALIDITY) are looked up by Message-ID and marked one by one, as by
        :meth:`mark`. The same results as :meth:`mark` for each, in order; idempotent.
        :raises ProcessedFolderError: *problem* is set (after storing the keywords).
        :raises MailboxError: (through *guard*)
        """
        results: dict[int, str] = {}
        here = [
            i
            for i, (key, _) in enumerate(mails)
            if key.mailbox == status.folder and key.uidvalidity == status.uidvalidity
        ]
        elsewhere = set(range(len(mails))) - set(here)
        for i, (key, message_id) in enumerate(mails):
            if i in elsewhere:
                results[i] = self.mark(client, status, key, message_id, guard, target, problem)
        if here:
            wanted = sorted({mails[i][0].uid for i in here})
            with guard(f"look up {len(wanted)} UIDs"):
                found = set(client.search(["UID", uid_set(wanted)]))
            uids = [uid for uid in wanted if uid in found]
            done = self._mark_uids(client, status, uids, guard, target, problem) if uids else ""
            for i in here:
                results[i] = done if mails[i][0].uid in found else "not found"
        return [results[i] for i in range(len(mails))]

    def _mark_uids(
        self,
        client: IMAPClient,
        status: MailboxStatus,
        uids: list[int],
        guard: Guard,
        target: str | None,
        problem: str | None,
    ) -> str:
        done = []
        if status.keywords_allowed:
            with guard(f"store keyword on UID {uid_set(uids)}"):
                client.add_flags(uid_set(uids), [self._config.keyword], silent=True)
            done.append("keyword")
        if self._config.processed_folder is not None:
            if problem is not None or target is None:
                raise ProcessedFolderError(problem or f"{self._where}: no processed folder")
            if self._move(client, status, uids, guard, target):
                done.append("moved")
        return ", ".join(done) or "ledger only"

    def describe(self, status: MailboxStatus, target: str | None) -> str:
        """Say how handled mail is marked in a folder with *status*, for ``check``.

        *target* is the processed folder's name on the server.
        """
        parts = []
        if status.keywords_allowed:
            parts.append(f"keyword {self._config.keyword}")
        if target is not None and (status.can_move or status.has_uidplus):
            parts.append(
                f"moved to {target}" + ("" if status.can_move else " (COPY + UID EXPUNGE)")
            )
        return " + ".join(parts) or "ledger only"

    def _move(
        self, client: IMAPClient, status: MailboxStatus, uids: list[int], guard: Guard, target: str
    ) -> bool:
        """Move *uids* to the processed folder *target* as safely as the server allows."""
        named = f"UID {uids}" if len(uids) == 1 else f"{len(uids)} UIDs"
        if status.can_move:
            with guard(f"move {named} to {target!r}"):
                client.move(uid_set(uids), target)
            return True
        if status.has_uidplus:
            # not atomic: a crash after COPY leaves a copy in both folders, which the
            # ledger tolerates; UID EXPUNGE touches only our UIDs, never another
            # client's \Deleted mail
            with guard(f"copy {named} to {target!r}"):
                client.copy(uid_set(uids), target)
                client.add_flags(uid_set(uids), [DELETED], silent=True)
                client.uid_expunge(uid_set(uids))
            return True
        if not self._warned_cannot_move:
            logger.warning(
                "%s: the server offers neither MOVE nor UIDPLUS; handled mail stays in %s "
                "(a bare EXPUNGE could delete other clients' mail)",
                self._where,
                status.folder,
            )
            self._warned_cannot_move = True
        return False


def uid_set(uids: Sequence[int]) -> str:
    """Return *uids* as an IMAP sequence set of ranges, ``1:5,9,12:14``: one short
    argument however many mails a batch marks (Dovecot refuses lines over 64 KiB)."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("an empty UID set")
    runs: list[str] = []
    start = previous = ordered[0]
    for uid in [*ordered[1:], None]:
        if uid is not None and uid == previous + 1:
            previous = uid
            continue
        runs.append(str(start) if start == previous else f"{start}:{previous}")
        if uid is not None:
            start = previous = uid
    return ",".join(runs)


def locate(
    client: IMAPClient,
    status: MailboxStatus,
    key: MailKey,
    message_id: str | None,
    guard: Guard,
) -> list[int]:
    """Return the current UIDs of the mail *key* names, by UID or else by Message-ID."""
    if key.mailbox == status.folder and key.uidvalidity == status.uidvalidity:
        with guard(f"look up UID {key.uid}"):
            if key.uid in client.search(["UID", str(key.uid)]):
                return [key.uid]
    if not message_id or not message_id.isascii():
        return []
    logger.info("uid %s: looking the mail up by Message-ID instead", key)
    with guard("search by Message-ID"):
        candidates = client.search(["HEADER", "Message-ID", message_id])
        if not candidates:
            return []
        headers = client.fetch(candidates, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    # HEADER search matches substrings; keep only exact matches
    wanted = _bare_message_id(message_id)
    uids = []
    for uid, item in headers.items():
        # Courier answers BODY[HEADER.FIELDS ("MESSAGE-ID")]: match the key by meaning
        block = fetch_item(item, b"BODY[HEADER.FIELDS (MESSAGE-ID)]")
        found = _header_message_id(block if isinstance(block, bytes) else b"")
        if found is not None and _bare_message_id(found) == wanted:
            uids.append(uid)
    return sorted(uids)


def _bare_message_id(value: str) -> str:
    return value.strip().strip("<>").strip()


def _header_message_id(header_block: bytes) -> str | None:
    unfolded = _HEADER_FOLD_RE.sub(b" ", header_block)
    match = _MESSAGE_ID_RE.search(unfolded)
    return match.group(1).decode("ascii", "replace") if match else None
