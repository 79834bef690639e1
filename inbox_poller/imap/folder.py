"""The watched folder of one session: what SELECT and CAPABILITY say about it.

``ImapMailbox.open`` creates the processed folder here and turns the server's answers
into a ``MailboxStatus``: UIDVALIDITY (required), UIDNEXT, whether keywords can be
stored (``\\*`` in PERMANENTFLAGS of a READ-WRITE folder), and the MOVE, UIDPLUS and
IDLE capabilities the rest of the room decides by. ``describe`` is the one line
``inbox-poller check`` prints.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from imapclient import IMAPClient

from inbox_poller.config import ImapConfig
from inbox_poller.errors import MailboxError
from inbox_poller.imap.session import Guard, atom_text
from inbox_poller.models import MailboxStatus

logger = logging.getLogger("inbox_poller.imap")


def ensure_processed_folder(client: IMAPClient, name: str | None, where: str, guard: Guard) -> None:
    """Create the processed folder *name* when one is configured and missing."""
    if name is None:
        return
    with guard(f"create folder {name!r}"):
        if not client.folder_exists(name):
            client.create_folder(name)
            logger.info("%s: created the processed folder %s", where, name)


def read_status(
    selected: Mapping[bytes, Any],
    capabilities: Iterable[bytes | str],
    folder: str,
    where: str,
) -> MailboxStatus:
    """Turn the SELECT response for *folder* and the capabilities into our status.

    :raises MailboxError: SELECT reported no UIDVALIDITY.
    """
    if b"READ-WRITE" not in selected:
        logger.warning("%s: %s was opened read-only; mail cannot be marked", where, folder)
    names = frozenset(atom_text(cap).upper() for cap in capabilities)
    permanent = {atom_text(flag) for flag in selected.get(b"PERMANENTFLAGS", ())}
    try:
        uidvalidity = int(selected[b"UIDVALIDITY"])
    except KeyError:
        raise MailboxError(f"{where}: SELECT {folder} reported no UIDVALIDITY") from None
    return MailboxStatus(
        folder=folder,
        uidvalidity=uidvalidity,
        uidnext=int(selected.get(b"UIDNEXT", 0)),
        keywords_allowed="\\*" in permanent and b"READ-WRITE" in selected,
        can_move="MOVE" in names,
        has_uidplus="UIDPLUS" in names,
        has_idle="IDLE" in names,
    )


def message_count(selected: Mapping[bytes, Any]) -> int:
    """Return how many messages the SELECT response reports (EXISTS)."""
    return int(selected.get(b"EXISTS", 0))


def describe(config: ImapConfig, status: MailboxStatus, exists: int, handled: str) -> str:
    """Describe the account and folder in one line; *handled* says how handled mail is marked."""

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    return (
        f"{config.security}://{config.host}:{config.effective_port} as {config.username}: "
        f"folder {status.folder} (UIDVALIDITY {status.uidvalidity}, "
        f"UIDNEXT {status.uidnext}, {exists} messages); "
        f"MOVE {yes(status.can_move)}, UIDPLUS {yes(status.has_uidplus)}, "
        f"IDLE {yes(status.has_idle)}, keywords {yes(status.keywords_allowed)}; "
        f"handled mail: {handled}"
    )
