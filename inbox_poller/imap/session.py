"""Opening one IMAP session safely, and translating what can go wrong on it.

``ImapMailbox`` calls these for the connection part of docs/reliability.md §2:
certificate checks always on (implicit TLS, or STARTTLS that must be advertised),
socket timeouts and TCP keepalive, and a login whose refusal is told apart from a
dropped connection. ``translate_errors`` turns every imapclient, socket and TLS
exception into ``MailboxError`` (or ``MailboxLoginError``) naming the server and step;
``quiet_imaplib_logger`` keeps the session's wire log out of the log, and ``atom_text``
reads the atoms (flags, capabilities) the server answers with.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from inbox_poller.config import ImapConfig
from inbox_poller.errors import MailboxError, MailboxLoginError

KEEPALIVE_IDLE_S = 60
KEEPALIVE_INTERVAL_S = 15
KEEPALIVE_COUNT = 4
"""A silently dead connection (NAT timeout) is noticed after about 2 minutes."""

IMAPLIB_LOGGER = "imapclient.imaplib"
"""imaplib's wire log: at DEBUG it contains every server line, message bodies included."""

Guard = Callable[[str], AbstractContextManager[None]]
"""Wraps one named step (``with guard("fetch UID 7"): ...``) in ``translate_errors``."""


def quiet_imaplib_logger() -> None:
    """Keep imaplib's wire log at INFO or above, whatever the root logger's level.

    Its redaction covers only LOGIN and AUTHENTICATE lines; bodies would carry
    signed download URLs into the log (docs/reliability.md §4.5).
    """
    wire = logging.getLogger(IMAPLIB_LOGGER)
    if wire.level < logging.INFO:
        wire.setLevel(logging.INFO)


def atom_text(value: bytes | str) -> str:
    """Return a flag or capability as text: imapclient hands some back as bytes, some as str."""
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def connect(
    config: ImapConfig,
    context: ssl.SSLContext,
    timeout: SocketTimeout,
    where: str,
    guard: Guard,
) -> IMAPClient:
    """Connect as *config* says (TLS, or plain text then STARTTLS), with TCP keepalive.

    :raises MailboxError: the connection or TLS failed, or STARTTLS is not offered.
    """
    with guard("connect"):
        client = IMAPClient(
            config.host,
            port=config.effective_port,
            ssl=config.security == "tls",
            ssl_context=context if config.security == "tls" else None,
            timeout=timeout,
        )
    try:
        if config.security == "starttls":
            with guard("STARTTLS"):
                if not client.has_capability("STARTTLS"):
                    raise MailboxError(
                        f"{where}: the server does not offer STARTTLS; refusing to "
                        'send the password in clear text (use security = "tls")'
                    )
                client.starttls(context)
        with guard("enable TCP keepalive"):
            enable_keepalive(client.socket())
    except MailboxError:
        with contextlib.suppress(Exception):  # the socket is already unusable
            client.shutdown()
        raise
    return client


def login(client: IMAPClient, config: ImapConfig, password: str, where: str, guard: Guard) -> None:
    """Log in; a refusal raises ``MailboxLoginError``, a dropped connection ``MailboxError``."""
    with guard("log in"):
        try:
            client.login(config.username, password)
        except LoginError as exc:
            # imapclient turns every IMAP failure during LOGIN into LoginError, a
            # dropped connection included; only the server's refusal is about
            # the credentials (and is not worth retrying)
            if isinstance(exc.__context__, IMAPClientAbortError):
                raise exc.__context__ from None
            raise MailboxLoginError(
                f"{where}: login as {config.username!r} refused: {exc}"
            ) from exc


def enable_keepalive(sock: socket.socket) -> None:
    """Turn on TCP keepalive so a connection a NAT dropped silently is noticed."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        option = getattr(socket, name, None)
        if option is not None:  # not every platform has all three
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


@contextmanager
def translate_errors(
    where: str, step: str, read_timeout_s: float, drop: Callable[[], None]
) -> Iterator[None]:
    """Translate library exceptions raised during *step* into ``MailboxError``.

    *drop* forgets the session first whenever the error leaves it unusable; a NO or
    BAD answer (and a refused login) leaves it usable.
    """
    try:
        yield
    except MailboxError:
        raise
    except ssl.SSLCertVerificationError as exc:
        drop()
        raise MailboxError(
            f"{where}: {step} failed: TLS certificate verification failed "
            f"({exc.verify_message}); if the server uses a private CA, set imap.ca_file"
        ) from exc
    except ssl.SSLError as exc:
        drop()
        raise MailboxError(f"{where}: {step} failed: TLS error: {exc}") from exc
    except TimeoutError as exc:
        drop()
        raise MailboxError(f"{where}: {step} failed: no answer within {read_timeout_s}s") from exc
    except OSError as exc:
        drop()
        raise MailboxError(f"{where}: {step} failed: {exc.strerror or exc}") from exc
    except IMAPClientAbortError as exc:
        drop()
        raise MailboxError(f"{where}: {step} failed: connection lost ({exc})") from exc
    except LoginError as exc:
        raise MailboxLoginError(f"{where}: {step} failed: {exc}") from exc
    except IMAPClientError as exc:
        # a NO or BAD answer: the session itself is still usable
        raise MailboxError(f"{where}: {step} failed: {exc}") from exc
    except ValueError as exc:  # imapclient's parsers reject a malformed response
        drop()
        raise MailboxError(f"{where}: {step} failed: bad response ({exc})") from exc
