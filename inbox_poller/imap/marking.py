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
        done = []
        if status.keywords_allowed:
            with guard(f"store keyword on UID {uids}"):
                client.add_flags(uids, [self._config.keyword], silent=True)
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
        if status.can_move:
            with guard(f"move UID {uids} to {target!r}"):
                client.move(uids, target)
            return True
        if status.has_uidplus:
            # not atomic: a crash after COPY leaves a copy in both folders, which the
            # ledger tolerates; UID EXPUNGE touches only our UIDs, never another
            # client's \Deleted mail
            with guard(f"copy UID {uids} to {target!r}"):
                client.copy(uids, target)
                client.add_flags(uids, [DELETED], silent=True)
                client.uid_expunge(uids)
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
