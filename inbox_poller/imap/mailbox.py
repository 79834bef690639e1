"""The IMAP edge: one session on the notification folder, over imapclient.

``ImapMailbox`` implements ``ports.Mailbox`` (and ``check`` for the CLI). It is the one
object the rest of the program holds, and it owns the session: connect, log in, select,
close, and forgetting a session that broke. The IMAP rules of docs/reliability.md §2
live in the modules it delegates to:

* ``session``: certificate checks always on (implicit TLS, or STARTTLS that must be
  advertised; plain text only to loopback, which ``ImapConfig`` enforces), socket
  timeouts and TCP keepalive, and every imapclient, socket and TLS exception
  translated into ``MailboxError`` (or ``MailboxLoginError``) naming the server and
  the step;
* ``folder`` (with ``names``): the configured folder names spelled the server's way
  (NAMESPACE, separator, SPECIAL-USE), the processed folder created, and the SELECT
  response and the capabilities read into ``MailboxStatus``;
* ``fetching``: incremental ``UID SEARCH`` by watermark with the ``n:*`` trap handled,
  ``RFC822.SIZE`` before ``BODY.PEEK[]``;
* ``marking``: keyword and MOVE only as the server allows, and never a bare EXPUNGE;
* ``idle``: waiting for new mail (IDLE, or NOOP polling).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path
from typing import Any

from imapclient import IMAPClient, SocketTimeout

from inbox_poller.config import ImapConfig
from inbox_poller.errors import MailboxError, MailboxLoginError, ProcessedFolderError
from inbox_poller.imap import fetching, folder, idle, marking, session
from inbox_poller.imap.names import Namespaces
from inbox_poller.models import FetchedMail, MailboxStatus, MailKey
from inbox_poller.net import client_context
from inbox_poller.ports import AccessTokens

logger = logging.getLogger("inbox_poller.imap")


class ImapMailbox:
    """The dedicated notification folder on one IMAP account.

    *password* is the resolved secret (``Config.imap_password.read()``); it is
    never logged. With ``auth = "oauth2"`` *tokens* gives the access tokens instead
    (``ports.AccessTokens``): each login asks it for one, over ``oauth2.mechanism``.
    *ca_file* is the resolved ``imap.ca_file`` (``Config.imap_ca``);
    when omitted, ``config.ca_file`` is used as given. The read timeout is
    ``config.timeout_s``; the connect timeout is *connect_timeout_s* or the same.
    """

    def __init__(
        self,
        config: ImapConfig,
        password: str = "",
        *,
        tokens: AccessTokens | None = None,
        ca_file: Path | None = None,
        connect_timeout_s: float | None = None,
        fetch_chunk: int = fetching.FETCH_CHUNK_UIDS,
    ) -> None:
        self._config = config
        self._password = password
        """The password, or the access token of the current login: cut out of every error."""
        self._tokens = tokens
        if config.auth == "oauth2" and tokens is None:
            raise ValueError('auth = "oauth2" needs tokens')
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
        self._processed: str | None = None
        """The processed folder's name on this server, once it is known to exist."""
        self._processed_problem: str | None = None
        """Why the configured processed folder cannot be used in this session."""
        self._namespaces: Namespaces | None = None
        self._marker = marking.Marker(config, self._where)
        self.mechanism = "LOGIN" if tokens is None else ""
        """How the last session logged in (``LOGIN``, ``XOAUTH2``, ``OAUTHBEARER``)."""
        session.quiet_imaplib_logger()

    # ---- the Mailbox protocol ---------------------------------------------------------

    def open(self) -> MailboxStatus:
        """Start a fresh session: connect, log in, name and create the folders, select.

        The configured folder names are spelled the server's way at each open (see
        ``names``). A processed folder that cannot be had does not fail the session:
        mail is still read, and ``acknowledge`` raises ``ProcessedFolderError`` instead
        of moving. Any session already open is closed first, so calling this again
        reconnects.
        :raises MailboxLoginError: the credentials are refused.
        :raises MailboxError: anything else (connection, TLS, protocol, the watched
            folder cannot be selected).
        """
        self.close()
        if self._tokens is not None:
            # before connecting: no token, no session (and no idle connection held open)
            self._password = self._tokens.access_token()
        client = self._connect()
        self._client = client
        try:
            self._login(client)
            with self._guard("read capabilities"):
                capabilities = client.capabilities()
            namespaces = folder.read_namespaces(client, self._guard)
            watched = folder.resolve_folder(
                client, self._config.folder, namespaces, self._where, self._guard
            )
            self._prepare_processed(client, namespaces)
            with self._guard(f"select folder {watched!r}"):
                selected = client.select_folder(watched, readonly=False)
            self._status = folder.read_status(selected, capabilities, watched, self._where)
            self._exists = folder.message_count(selected)
        except MailboxError:
            self._drop()
            raise
        logger.debug(
            "%s: selected %s (UIDVALIDITY %s, UIDNEXT %s, %s messages)",
            self._where,
            watched,
            self._status.uidvalidity,
            self._status.uidnext,
            self._exists,
        )
        return self._status

    def fetch_new(self, after_uid: int, since: date | None = None) -> Iterator[FetchedMail]:
        """Yield the messages with UID > *after_uid*, in ascending UID order, one at a time.

        With *since*, only mail the server dates on or after that day (``SEARCH SINCE``).

        Sizes and flags are read per chunk of at most ``fetch_chunk`` UIDs; each body is
        retrieved with ``BODY.PEEK[]`` (``\\Seen`` stays unset) only when it is within
        ``max_message_bytes``, and only when the caller asks for the next message.
        :raises MailboxError:
        """
        # a generator, so that even "no open session" is raised at the first next()
        client, status = self._require_open()
        yield from fetching.fetch_new(
            client,
            status,
            after_uid,
            max_message_bytes=self._config.max_message_bytes,
            chunk_size=self._fetch_chunk,
            where=self._where,
            guard=self._guard,
            since=since,
        )

    def acknowledge(self, key: MailKey, message_id: str | None) -> str:
        """Mark one handled mail: keyword (when allowed), then move (when configured).

        Returns ``"keyword"``, ``"moved"``, ``"keyword, moved"``, ``"not found"`` or
        ``"ledger only"``. Idempotent.
        :raises ProcessedFolderError: the processed folder cannot be had (the keyword is
            stored; the move waits for a later attempt).
        :raises MailboxError:
        """
        client, status = self._require_open()
        if self._processed_problem is not None and self._namespaces is not None:
            # perhaps fixed meanwhile (the folder made by hand, a transient refusal):
            # one LIST and CREATE per attempt, only while the folder is missing
            self._prepare_processed(client, self._namespaces, announce=False)
        return self._marker.mark(
            client, status, key, message_id, self._guard, self._processed, self._processed_problem
        )

    def acknowledge_many(self, mails: Sequence[tuple[MailKey, str | None]]) -> list[str]:
        """Mark several handled mails with one command per step (``UID STORE``, ``UID
        MOVE`` of their UID set); return what was done to each, as :meth:`acknowledge`.

        :raises ProcessedFolderError: as :meth:`acknowledge` (the keywords are stored).
        :raises MailboxError:
        """
        client, status = self._require_open()
        if self._processed_problem is not None and self._namespaces is not None:
            self._prepare_processed(client, self._namespaces, announce=False)
        return self._marker.mark_many(
            client, status, mails, self._guard, self._processed, self._processed_problem
        )

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
            if self._processed_problem is not None:
                raise ProcessedFolderError(self._processed_problem)
            line = folder.describe(
                self._config, status, self._exists, self._marker.describe(status, self._processed)
            )
            if self._tokens is not None:
                line += f"; logged in with {self.mechanism} (OAuth2)"
            return line
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

    def _prepare_processed(
        self, client: IMAPClient, namespaces: Namespaces, *, announce: bool = True
    ) -> None:
        """Find or create the processed folder; remember why not, when it cannot be had.

        The problem is logged once per session (*announce*); a retry's failure is
        reported by whoever acknowledges.
        """
        self._namespaces, self._processed, self._processed_problem = namespaces, None, None
        try:
            self._processed = folder.prepare_processed_folder(
                client, self._config.processed_folder, namespaces, self._where, self._guard
            )
        except ProcessedFolderError as exc:
            if self._client is None:  # the connection broke meanwhile: the session is lost
                raise
            if announce:
                logger.warning("%s; mail is read and archived, but not moved", exc)
            self._processed_problem = str(exc)

    def _login(self, client: IMAPClient) -> None:
        if self._tokens is None:
            session.login(client, self._config, self._password, self._where, self._guard)
            return
        assert self._config.oauth2 is not None
        with self._guard("read capabilities"):
            offered = client.capabilities()
        mechanism = session.choose_mechanism(self._config.oauth2.mechanism, offered)
        try:
            session.oauth_login(
                client, self._config, mechanism, self._password, self._where, self._guard
            )
        except MailboxLoginError:
            # a token the server refuses must not be offered again: the next open gets a
            # new one (bounded by the token source and the watcher's back-off)
            self._tokens.forget(self._password)
            raise
        self.mechanism = mechanism

    def _connect(self) -> IMAPClient:
        if self._context is None:
            # built once: loading the system CA store costs about 30 ms
            what = f"load the CA file {self._ca_file}" if self._ca_file else "load the system CAs"
            with self._guard(what):
                self._context = client_context(self._ca_file)
        return session.connect(self._config, self._context, self._timeout, self._where, self._guard)

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
        """Translate library exceptions raised during *step* into ``MailboxError``.

        The password is cut out of every message (a server may echo LOGIN).
        """
        return session.translate_errors(
            self._where,
            step,
            self._config.timeout_s,
            self._drop,
            self._password,
            self._config.username,
        )
