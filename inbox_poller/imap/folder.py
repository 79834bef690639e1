"""The folders of one session: their names on this server, and what SELECT says.

``ImapMailbox.open`` calls these at every session open. The configured ``imap.folder``
and ``imap.processed_folder`` are spelled the server's way (``names``: NAMESPACE, the
hierarchy separator, SPECIAL-USE); the processed folder is created when missing, and a
processed folder that cannot be had raises ``ProcessedFolderError``, which names the
namespace and a spelling that works. The SELECT answer and the capabilities become a
``MailboxStatus``: UIDVALIDITY (required), UIDNEXT (when sent: Courier sends none),
whether keywords can be stored (``\\*`` in PERMANENTFLAGS of a READ-WRITE folder),
and the MOVE, UIDPLUS and IDLE capabilities the rest of the room decides by.
``describe`` is the one line ``inbox-poller check`` prints.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from imapclient import IMAPClient

from inbox_poller.config import ImapConfig
from inbox_poller.errors import MailboxError, ProcessedFolderError
from inbox_poller.imap import names
from inbox_poller.imap.session import Guard, atom_text
from inbox_poller.models import MailboxStatus

logger = logging.getLogger("inbox_poller.imap")


def read_namespaces(client: IMAPClient, guard: Guard) -> names.Namespaces:
    """Ask the server where personal folders live (NAMESPACE, else ``LIST "" ""``)."""
    with guard("read the namespaces"):
        if client.has_capability("NAMESPACE"):
            answer = client.namespace()
            others = [*(answer.other or ()), *(answer.shared or ())]
            return names.choose_namespaces(
                [_namespace_pair(pair) for pair in answer.personal or ()],
                [_namespace_pair(pair) for pair in others],
                None,
            )
        listed = client.list_folders("", "")
    separator = _text_or_none(listed[0][1]) if listed else None
    return names.choose_namespaces([], [], separator)


def resolve_folder(
    client: IMAPClient, configured: str, namespaces: names.Namespaces, where: str, guard: Guard
) -> str:
    """Return the server's name of the watched folder *configured*.

    :raises MailboxError: it cannot be spelled here, or no folder has the SPECIAL-USE
        attribute it names.
    """
    try:
        return _server_name(client, configured, namespaces, guard)
    except _Unavailable as exc:
        raise MailboxError(f"{where}: folder {configured!r}: {exc}") from None


def prepare_processed_folder(
    client: IMAPClient,
    configured: str | None,
    namespaces: names.Namespaces,
    where: str,
    guard: Guard,
) -> str | None:
    """Return the server's name of the processed folder, created when missing (None: none).

    :raises ProcessedFolderError: it cannot be spelled, found or created here; the
        message names the namespace and a spelling that would work. When the session
        dropped meanwhile (the guard forgot it), the caller must treat it as lost.
    """
    if configured is None:
        return None
    try:
        name = _server_name(client, configured, namespaces, guard)
    except _Unavailable as exc:
        raise ProcessedFolderError(
            f"{where}: processed folder {configured!r}: {exc}; {namespaces.describe()}; "
            f'name a folder instead, e.g. processed_folder = "{_example(configured, namespaces)}"'
        ) from None
    try:
        with guard(f"create folder {name!r}"):
            if not client.folder_exists(name):
                client.create_folder(name)
                logger.info("%s: created the processed folder %s", where, name)
    except MailboxError as exc:
        better = names.suggestion(configured, namespaces)
        hint = (
            f'; processed_folder = "{better}" would put it there'
            if better != name
            else "; check that the account may create folders there"
        )
        raise ProcessedFolderError(
            f"{exc} (processed_folder = {configured!r}); {namespaces.describe()}{hint}"
        ) from exc
    return name


class _Unavailable(Exception):
    """A configured name has no folder on this server (the text says why)."""


def _server_name(
    client: IMAPClient, configured: str, namespaces: names.Namespaces, guard: Guard
) -> str:
    if not names.is_special_use(configured):
        try:
            return names.server_name(configured, namespaces)
        except names.FolderNameError as exc:
            raise _Unavailable(str(exc)) from None
    attribute = names.canonical_special_use(configured) or configured
    with guard(f"find the {attribute} folder"):
        listing = [
            (tuple(atom_text(flag) for flag in flags), str(name))
            for flags, _separator, name in client.list_folders()
        ]
    found = names.special_use_folder(attribute, listing)
    if found is None:
        offered = ", ".join(names.special_uses_offered(listing)) or "none"
        raise _Unavailable(
            f"no folder has the SPECIAL-USE attribute {attribute} (RFC 6154; "
            f"the server marks: {offered})"
        )
    return found


def _example(configured: str, namespaces: names.Namespaces) -> str:
    """A plain folder name to propose instead of an unusable *configured* one."""
    plain = configured.lstrip("\\") or "Processed"
    try:
        return names.suggestion(plain.replace("\\", ""), namespaces)
    except names.FolderNameError:
        return plain


def _namespace_pair(pair: Any) -> tuple[str, str | None]:
    prefix, separator = pair
    return str(prefix), _text_or_none(separator)


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = atom_text(value)
    return text or None


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
        uidnext=int(selected[b"UIDNEXT"]) if b"UIDNEXT" in selected else None,
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
        f"UIDNEXT {'not sent' if status.uidnext is None else status.uidnext}, "
        f"{exists} messages); "
        f"MOVE {yes(status.can_move)}, UIDPLUS {yes(status.has_uidplus)}, "
        f"IDLE {yes(status.has_idle)}, keywords {yes(status.keywords_allowed)}; "
        f"handled mail: {handled}"
    )
