"""The IMAP edge: one session on the notification folder, over imapclient.

``ImapMailbox`` implements ``poller.Mailbox``. It owns every IMAP rule from
reliability.md section 2: certificate checks always on (implicit TLS,
STARTTLS that must be advertised, or plain text to loopback only), socket
timeouts and TCP keepalive, incremental ``UID SEARCH`` by watermark with the
``n:*`` trap handled, ``RFC822.SIZE`` before ``BODY.PEEK[]``, keyword and MOVE
only as the server allows, and never a bare EXPUNGE.

Every imapclient, socket and TLS exception is translated into
``MailboxError`` (or ``MailboxLoginError``) naming the server and the step.
Connecting, logging in and that translation live in ``imap_session``; waiting for new
mail (IDLE, or NOOP polling) lives in ``idle``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from imapclient import DELETED, IMAPClient, SocketTimeout

from inbox_poller.config import ImapConfig
from inbox_poller.errors import MailboxError
from inbox_poller.imap import idle
from inbox_poller.imap import session as imap_session
from inbox_poller.models import FetchedMail, MailboxStatus, MailKey
from inbox_poller.net import client_context

logger = logging.getLogger(__name__)

FETCH_CHUNK_UIDS = 5000
"""Explicit UIDs per FETCH: imapclient 4.x cannot take ``1:*``, and Dovecot refuses
command lines over 64 KiB (about 10,000 UIDs)."""

IMAPLIB_LOGGER = "imapclient.imaplib"
"""imaplib's wire log: at DEBUG it contains every server line, message bodies included."""

_HEADER_FOLD_RE = re.compile(rb"\r?\n[ \t]+")
_MESSAGE_ID_RE = re.compile(rb"^message-id:[ \t]*(.*?)[ \t]*$", re.IGNORECASE | re.MULTILINE)


def quiet_imaplib_logger() -> None:
    """Keep imaplib's wire log at INFO or above, whatever the root logger's level.

    Its redaction covers only LOGIN and AUTHENTICATE lines; bodies would carry
    signed download URLs into the log (reliability.md 4.5).
    """
    wire = logging.getLogger(IMAPLIB_LOGGER)
    if wire.level < logging.INFO:
        wire.setLevel(logging.INFO)


def chunked(uids: Sequence[int], size: int = FETCH_CHUNK_UIDS) -> Iterator[list[int]]:
    """Yield *uids* in order, in lists of at most *size*."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    for start in range(0, len(uids), size):
        yield list(uids[start : start + size])


def _text(value: bytes | str) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def _bare_message_id(value: str) -> str:
    return value.strip().strip("<>").strip()


def _header_message_id(header_block: bytes) -> str | None:
    unfolded = _HEADER_FOLD_RE.sub(b" ", header_block)
    match = _MESSAGE_ID_RE.search(unfolded)
    return match.group(1).decode("ascii", "replace") if match else None


class ImapMailbox:
    """The dedicated notification folder on one IMAP account.

    *password* is the resolved secret (``Config.imap_password.read()``); it is
    never logged. *ca_file* is the resolved ``imap.ca_file`` (``Config.imap_ca``);
    when omitted, ``config.ca_file`` is used as given. The read timeout is
    ``config.timeout_s``; the connect timeout is *connect_timeout_s* or the same.
    """

    def __init__(
        self,
        config: ImapConfig,
        password: str,
        *,
        ca_file: Path | None = None,
        connect_timeout_s: float | None = None,
        fetch_chunk: int = FETCH_CHUNK_UIDS,
    ) -> None:
        self._config = config
        self._password = password
        if ca_file is None and config.ca_file is not None:
            ca_file = Path(config.ca_file).expanduser()
        self._ca_file = ca_file
        self._timeout = SocketTimeout(
            connect=connect_timeout_s if connect_timeout_s is not None else config.timeout_s,
            read=config.timeout_s,
        )
        self._fetch_chunk = fetch_chunk
        self._where = f"IMAP {config.host}:{config.effective_port}"
        self._context: ssl.SSLContext | None = None
        self._client: IMAPClient | None = None
        self._status: MailboxStatus | None = None
        self._exists = 0
        self._warned_cannot_move = False
        quiet_imaplib_logger()

    # ---- the Mailbox protocol ---------------------------------------------------------

    def open(self) -> MailboxStatus:
        """Start a fresh session: connect, log in, create ``processed_folder``, select.

        Any session already open is closed first, so calling this again reconnects.
        :raises MailboxLoginError: the credentials are refused.
        :raises MailboxError: anything else (connection, TLS, protocol).
        """
        self.close()
        client = self._connect()
        self._client = client
        try:
            imap_session.login(client, self._config, self._password, self._where, self._guard)
            with self._guard("read capabilities"):
                capabilities = frozenset(_text(cap).upper() for cap in client.capabilities())
            self._ensure_processed_folder(client)
            with self._guard(f"select folder {self._config.folder!r}"):
                selected = client.select_folder(self._config.folder, readonly=False)
            self._status = self._read_status(selected, capabilities)
        except MailboxError:
            self._drop()
            raise
        logger.debug(
            "%s: selected %s (UIDVALIDITY %s, UIDNEXT %s, %s messages)",
            self._where,
            self._config.folder,
            self._status.uidvalidity,
            self._status.uidnext,
            self._exists,
        )
        return self._status

    def fetch_new(self, after_uid: int) -> Iterator[FetchedMail]:
        """Yield the messages with UID > *after_uid*, in ascending UID order, one at a time.

        Sizes and flags are read per chunk of at most ``fetch_chunk`` UIDs; each body is
        retrieved with ``BODY.PEEK[]`` (``\\Seen`` stays unset) only when it is within
        ``max_message_bytes``, and only when the caller asks for the next message.
        :raises MailboxError:
        """
        client, status = self._require_open()
        first = max(after_uid + 1, 1)
        with self._guard("search for new mail"):
            # NOOP lets the server sync the selected folder first: Dovecot answers a
            # SEARCH from the session's view, which may predate mail that arrived since
            client.noop()
            found = client.search(["UID", f"{first}:*"])
        # "n:*" always includes the highest UID, even when it is below n (RFC 3501 6.4.8)
        uids = sorted(uid for uid in found if uid > after_uid)
        if uids:
            logger.debug("%s: %s new message(s) after UID %s", self._where, len(uids), after_uid)
        for chunk in chunked(uids, self._fetch_chunk):
            with self._guard(f"fetch sizes of UIDs {chunk[0]}-{chunk[-1]}"):
                meta = client.fetch(chunk, ["RFC822.SIZE", "FLAGS"])
            for uid in chunk:
                mail = self._fetch_one(client, status, uid, meta.get(uid))
                if mail is not None:
                    yield mail

    def acknowledge(self, key: MailKey, message_id: str | None) -> str:
        """Mark one handled mail: keyword (when allowed), then move (when configured).

        Returns ``"keyword"``, ``"moved"``, ``"keyword, moved"``, ``"not found"`` or
        ``"ledger only"``. Idempotent. :raises MailboxError:
        """
        client, status = self._require_open()
        uids = self._locate(client, status, key, message_id)
        if not uids:
            logger.info("uid %s: not in %s any more; nothing to mark", key, self._config.folder)
            return "not found"
        done = []
        if status.keywords_allowed:
            with self._guard(f"store keyword on UID {uids}"):
                client.add_flags(uids, [self._config.keyword], silent=True)
            done.append("keyword")
        if self._config.processed_folder is not None and self._move(client, status, uids):
            done.append("moved")
        outcome = ", ".join(done) or "ledger only"
        logger.info("uid %s: acknowledged (%s)", key, outcome)
        return outcome

    def close(self) -> None:
        """Log out; never raises."""
        client, self._client, self._status = self._client, None, None
        if client is None:
            return
        try:
            client.logout()
        except Exception as exc:  # the connection is often already gone
            logger.debug("%s: logout failed (%s); closing the socket", self._where, exc)
            with contextlib.suppress(Exception):  # nothing left to do with a dead socket
                client.shutdown()

    # ---- for the check command and the daemon -----------------------------------------

    def check(self) -> str:
        """Open a fresh session, describe the account and folder in one line, close it.

        :raises MailboxLoginError:
        :raises MailboxError:
        """
        try:
            status = self.open()
            return self._describe(status)
        finally:
            self.close()

    def idle_wait(self, timeout_s: float, interrupted: Callable[[], bool] | None = None) -> bool:
        """Wait at most *timeout_s* for the server to report new mail; return whether it did.

        Uses IDLE when advertised (RFC 2177 forbids it otherwise); without it, sleeps
        and sends NOOP. The wait ends early once *interrupted()* is true, checked every
        ``idle.IDLE_SLICE_S``: how a watcher honours a stop or wake request mid-IDLE.
        ``True`` means new mail *may* have arrived: run ``fetch_new``.

        Bounded even when the server goes silent: IDLE always ends with DONE, and
        every answer is awaited at most ``timeout_s`` of the config (the socket's read
        timeout), so a dead connection raises within *timeout_s* + ``config.timeout_s``.
        :raises MailboxError: the connection dropped (BYE, EOF, timeout).
        """
        client, status = self._require_open()
        responses = idle.wait_for_mail(
            client,
            self._guard,
            has_idle=status.has_idle,
            timeout_s=timeout_s,
            interrupted=interrupted,
            read_timeout_s=self._config.timeout_s,
        )
        return self._reports_new_mail(responses)

    # ---- internals --------------------------------------------------------------------

    def _connect(self) -> IMAPClient:
        if self._context is None:
            # built once: loading the system CA store costs about 30 ms
            what = f"load the CA file {self._ca_file}" if self._ca_file else "load the system CAs"
            with self._guard(what):
                self._context = client_context(self._ca_file)
        return imap_session.connect(
            self._config, self._context, self._timeout, self._where, self._guard
        )

    def _ensure_processed_folder(self, client: IMAPClient) -> None:
        name = self._config.processed_folder
        if name is None:
            return
        with self._guard(f"create folder {name!r}"):
            if not client.folder_exists(name):
                client.create_folder(name)
                logger.info("%s: created the processed folder %s", self._where, name)

    def _read_status(
        self, selected: dict[bytes, Any], capabilities: frozenset[str]
    ) -> MailboxStatus:
        """Turn the SELECT response and the capabilities into our status."""
        if b"READ-WRITE" not in selected:
            logger.warning(
                "%s: %s was opened read-only; mail cannot be marked",
                self._where,
                self._config.folder,
            )
        permanent = {_text(flag) for flag in selected.get(b"PERMANENTFLAGS", ())}
        self._exists = int(selected.get(b"EXISTS", 0))
        try:
            uidvalidity = int(selected[b"UIDVALIDITY"])
        except KeyError:
            raise MailboxError(
                f"{self._where}: SELECT {self._config.folder} reported no UIDVALIDITY"
            ) from None
        return MailboxStatus(
            folder=self._config.folder,
            uidvalidity=uidvalidity,
            uidnext=int(selected.get(b"UIDNEXT", 0)),
            keywords_allowed="\\*" in permanent and b"READ-WRITE" in selected,
            can_move="MOVE" in capabilities,
            has_uidplus="UIDPLUS" in capabilities,
            has_idle="IDLE" in capabilities,
        )

    def _fetch_one(
        self,
        client: IMAPClient,
        status: MailboxStatus,
        uid: int,
        meta: dict[bytes, Any] | None,
    ) -> FetchedMail | None:
        """Return one message, with its body only when it is within the size cap."""
        if meta is None:  # expunged by someone else since the SEARCH
            return None
        limit = self._config.max_message_bytes
        size = int(meta.get(b"RFC822.SIZE", 0))
        flags = tuple(_text(flag) for flag in meta.get(b"FLAGS", ()))
        key = MailKey(status.folder, status.uidvalidity, uid)
        raw = None
        if size <= limit:
            # a partial fetch caps what we read even if the server understated the size
            with self._guard(f"fetch UID {uid}"):
                body = client.fetch([uid], [f"BODY.PEEK[]<0.{limit + 1}>"]).get(uid)
            raw = None if body is None else body.get(b"BODY[]<0>", body.get(b"BODY[]"))
            if not isinstance(raw, bytes):
                # expunged by another session since the SEARCH: Dovecot answers NIL
                # with [EXPUNGEISSUED], other servers leave the UID out
                logger.info("uid %s: expunged by someone else before it was read", key)
                return None
            if len(raw) > limit:
                size, raw = max(size, len(raw)), None
        if raw is None:
            logger.info(
                "uid %s: %s bytes, over the %s-byte cap; body not retrieved", key, size, limit
            )
        return FetchedMail(key=key, size=size, raw=raw, flags=flags)

    def _locate(
        self,
        client: IMAPClient,
        status: MailboxStatus,
        key: MailKey,
        message_id: str | None,
    ) -> list[int]:
        """Return the current UIDs of the mail *key* names, by UID or else by Message-ID."""
        if key.mailbox == status.folder and key.uidvalidity == status.uidvalidity:
            with self._guard(f"look up UID {key.uid}"):
                if key.uid in client.search(["UID", str(key.uid)]):
                    return [key.uid]
        if not message_id or not message_id.isascii():
            return []
        logger.info("uid %s: looking the mail up by Message-ID instead", key)
        with self._guard("search by Message-ID"):
            candidates = client.search(["HEADER", "Message-ID", message_id])
            if not candidates:
                return []
            headers = client.fetch(candidates, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        # HEADER search matches substrings; keep only exact matches
        wanted = _bare_message_id(message_id)
        uids = []
        for uid, item in headers.items():
            block = item.get(b"BODY[HEADER.FIELDS (MESSAGE-ID)]", b"")
            found = _header_message_id(block if isinstance(block, bytes) else b"")
            if found is not None and _bare_message_id(found) == wanted:
                uids.append(uid)
        return sorted(uids)

    def _move(self, client: IMAPClient, status: MailboxStatus, uids: list[int]) -> bool:
        """Move *uids* to the processed folder as safely as the server allows."""
        target = self._config.processed_folder
        assert target is not None
        if status.can_move:
            with self._guard(f"move UID {uids} to {target!r}"):
                client.move(uids, target)
            return True
        if status.has_uidplus:
            # not atomic: a crash after COPY leaves a copy in both folders, which the
            # ledger tolerates; UID EXPUNGE touches only our UIDs, never another
            # client's \Deleted mail
            with self._guard(f"copy UID {uids} to {target!r}"):
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

    def _describe(self, status: MailboxStatus) -> str:
        config = self._config

        def yes(flag: bool) -> str:
            return "yes" if flag else "no"

        return (
            f"{config.security}://{config.host}:{config.effective_port} as {config.username}: "
            f"folder {status.folder} (UIDVALIDITY {status.uidvalidity}, "
            f"UIDNEXT {status.uidnext}, {self._exists} messages); "
            f"MOVE {yes(status.can_move)}, UIDPLUS {yes(status.has_uidplus)}, "
            f"IDLE {yes(status.has_idle)}, keywords {yes(status.keywords_allowed)}; "
            f"handled mail: {self._marking(status)}"
        )

    def _marking(self, status: MailboxStatus) -> str:
        parts = []
        if status.keywords_allowed:
            parts.append(f"keyword {self._config.keyword}")
        target = self._config.processed_folder
        if target is not None and (status.can_move or status.has_uidplus):
            parts.append(
                f"moved to {target}" + ("" if status.can_move else " (COPY + UID EXPUNGE)")
            )
        return " + ".join(parts) or "ledger only"

    def _reports_new_mail(self, responses: list[Any]) -> bool:
        for response in responses:
            if idle.is_bye(response):
                self._drop()
                raise MailboxError(f"{self._where}: the server closed the connection (BYE)")
            if idle.is_new_mail(response):
                return True
        return False

    def _require_open(self) -> tuple[IMAPClient, MailboxStatus]:
        if self._client is None or self._status is None:
            raise MailboxError(f"{self._where}: no open session (call open() first)")
        return self._client, self._status

    def _drop(self) -> None:
        """Forget a broken session, closing its socket without a LOGOUT round trip."""
        client, self._client, self._status = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):  # the socket is already unusable
                client.shutdown()

    def _guard(self, step: str) -> AbstractContextManager[None]:
        """Translate library exceptions raised during *step* into ``MailboxError``."""
        return imap_session.translate_errors(self._where, step, self._config.timeout_s, self._drop)
