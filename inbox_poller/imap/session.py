"""Opening one IMAP session safely, and translating what can go wrong on it.

``ImapMailbox`` calls these for the connection part of docs/reliability.md §2:
certificate checks always on (implicit TLS, or STARTTLS that must be advertised),
socket timeouts and TCP keepalive, and a login whose refusal is told apart from a
dropped connection. ``translate_errors`` turns every imapclient, socket and TLS
exception into ``MailboxError`` (or ``MailboxLoginError``) naming the server and step,
with the password (or the OAuth2 access token, also as the SASL payloads carry it) cut out of
whatever the server answered (``redact_secret``: a server may echo the LOGIN command in
its error answer); ``oauth_login`` logs in with XOAUTH2 or OAUTHBEARER (RFC 7628);
``quiet_imaplib_logger`` keeps the session's wire log out of the log, and ``atom_text``
reads the atoms (flags, capabilities) the server answers with.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
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

REDACTED = "[redacted]"
"""What stands in a server's answer where the password was."""

SASL_OAUTH = ("XOAUTH2", "OAUTHBEARER")
"""The SASL mechanisms that carry an OAuth2 bearer token."""

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


def secret_forms(secret: str, username: str = "") -> list[str]:
    """Return every spelling of *secret* a server's answer may echo, longest first.

    The password as typed and as quoted on the wire (imaplib escapes ``\\`` and
    ``"``), inside AUTHENTICATE PLAIN's base64 (``\\0user\\0password``), and each as
    a Python ``repr`` shows it (imaplib puts the answer's bytes into its errors so).
    """
    if not secret:
        return []
    typed = [secret, secret.replace("\\", "\\\\").replace('"', '\\"')]
    payloads = [f"\0{username}\0{secret}", f"{username}\0{username}\0{secret}"]
    # an access token, as XOAUTH2 and OAUTHBEARER (RFC 7628) carry it
    payloads += [oauth_payload(mechanism, username, secret) for mechanism in SASL_OAUTH]
    for plain in payloads:
        typed.append(base64.b64encode(plain.encode("utf-8")).decode("ascii"))
    forms = set(typed)
    for form in typed:
        forms.update({repr(form.encode("utf-8"))[2:-1], repr(form)[1:-1]})
        forms.add(form.replace("\\", "\\\\"))
    return sorted(forms, key=len, reverse=True)


def redact_secret(text: str, secret: str, username: str = "") -> str:
    """Return *text* with every spelling of *secret* (any case) replaced by ``[redacted]``."""
    for form in secret_forms(secret, username):
        text = re.sub(re.escape(form), REDACTED, text, flags=re.IGNORECASE)
    return text


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
    """Log in; a refusal raises ``MailboxLoginError``, a dropped connection ``MailboxError``.

    The server's answer is shown without the password, and without its exception
    chain (which holds the answer as sent): a server may repeat the command.
    """
    with guard("log in"):
        try:
            client.login(config.username, password)
        except LoginError as exc:
            # imapclient turns every IMAP failure during LOGIN into LoginError, a
            # dropped connection included; only the server's refusal is about
            # the credentials (and is not worth retrying)
            if isinstance(exc.__context__, IMAPClientAbortError):
                raise exc.__context__ from None
            answer = redact_secret(str(exc), password, config.username)
            raise MailboxLoginError(
                f"{where}: login as {config.username!r} refused: {answer}"
            ) from None


def oauth_payload(mechanism: str, username: str, token: str) -> str:
    """The client's first SASL message carrying *token* for *username*.

    XOAUTH2 (Google's and Microsoft's): ``user=…^Aauth=Bearer …^A^A``. OAUTHBEARER
    (RFC 7628 §3.1): a GS2 header naming the user, then the same key-value pairs.
    """
    if mechanism == "OAUTHBEARER":
        authzid = username.replace("=", "=3D").replace(",", "=2C")
        return f"n,a={authzid},\x01auth=Bearer {token}\x01\x01"
    return f"user={username}\x01auth=Bearer {token}\x01\x01"


def choose_mechanism(configured: str, capabilities: tuple[bytes | str, ...]) -> str:
    """Return the SASL mechanism for an OAuth2 login: *configured*, or for ``"auto"``
    OAUTHBEARER when the server advertises it and XOAUTH2 otherwise."""
    if configured != "auto":
        return configured.upper()
    offered = {atom_text(cap).upper() for cap in capabilities}
    return "OAUTHBEARER" if "AUTH=OAUTHBEARER" in offered else "XOAUTH2"


def _sasl_status(challenge: bytes) -> str:
    """The server's error challenge (RFC 7628 §3.2.2: a JSON status), shown safely."""
    text = challenge.decode("utf-8", "replace").strip()
    try:
        status = json.loads(text)
    except ValueError:
        return ""
    if not isinstance(status, dict):
        return ""
    shown = {k: status[k] for k in ("status", "scope", "schemes") if isinstance(status.get(k), str)}
    return f" (server status {json.dumps(shown, sort_keys=True)})" if shown else ""


def oauth_login(
    client: IMAPClient, config: ImapConfig, mechanism: str, token: str, where: str, guard: Guard
) -> None:
    """Log in with the access token *token* over *mechanism* (``XOAUTH2``/``OAUTHBEARER``).

    A refusal raises ``MailboxLoginError`` naming the mechanism and the server's JSON
    status (never the token); a dropped connection raises ``MailboxError``. After an
    error challenge the client sends the empty response (XOAUTH2) or ``%x01``
    (OAUTHBEARER, RFC 7628 §3.2.3), never the token a second time.
    """
    challenges: list[bytes] = []
    payload = oauth_payload(mechanism, config.username, token).encode("utf-8")

    def respond(challenge: bytes) -> bytes:
        if not challenges:
            challenges.append(b"")
            return payload
        challenges.append(challenge)
        return b"\x01" if mechanism == "OAUTHBEARER" else b""

    with guard("log in"):
        try:
            client.sasl_login(mechanism, respond)
        except LoginError as exc:
            if isinstance(exc.__context__, IMAPClientAbortError):
                raise exc.__context__ from None
            answer = redact_secret(str(exc), token, config.username)
            status = _sasl_status(challenges[-1]) if len(challenges) > 1 else ""
            raise MailboxLoginError(
                f"{where}: {mechanism} login as {config.username!r} refused: {answer}{status}; "
                "the access token was accepted by the token endpoint but not by the IMAP "
                "server: check imap.oauth2.scope and that imap.username is the mailbox the "
                "token is for (docs/providers.md)"
            ) from None


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
    where: str,
    step: str,
    read_timeout_s: float,
    drop: Callable[[], None],
    secret: str = "",
    username: str = "",
) -> Iterator[None]:
    """Translate library exceptions raised during *step* into ``MailboxError``.

    *drop* forgets the session first whenever the error leaves it unusable; a NO or
    BAD answer (and a refused login) leaves it usable. Every spelling of *secret*
    (the password) is cut out of the message; then the exception chain, which holds
    the server's answer as sent, is dropped too.
    """
    try:
        yield
    except MailboxError as exc:
        clean = redact_secret(str(exc), secret, username)
        if clean == str(exc):
            raise
        raise type(exc)(clean) from None
    except Exception as exc:
        translated = _translate(exc, where, step, read_timeout_s, drop)
        if translated is None:
            raise
        clean = redact_secret(str(translated), secret, username)
        if clean != str(translated):
            raise type(translated)(clean) from None
        raise translated from exc


def _translate(
    exc: Exception, where: str, step: str, read_timeout_s: float, drop: Callable[[], None]
) -> MailboxError | None:
    """Return the ``MailboxError`` for *exc*, raised during *step*; None when not ours.

    *drop* is called first when the error leaves the session unusable.
    """
    if isinstance(exc, LoginError):
        return MailboxLoginError(f"{where}: {step} failed: {exc}")
    if isinstance(exc, IMAPClientError) and not isinstance(exc, IMAPClientAbortError):
        # a NO or BAD answer: the session itself is still usable
        return MailboxError(f"{where}: {step} failed: {exc}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = (
            f"TLS certificate verification failed ({exc.verify_message}); "
            "if the server uses a private CA, set imap.ca_file"
        )
    elif isinstance(exc, ssl.SSLError):
        message = f"TLS error: {exc}"
    elif isinstance(exc, TimeoutError):
        message = f"no answer within {read_timeout_s}s"
    elif isinstance(exc, OSError):
        message = str(exc.strerror or exc)
    elif isinstance(exc, IMAPClientAbortError):
        message = f"connection lost ({exc})"
    elif isinstance(exc, ValueError):  # imapclient's parsers reject a malformed response
        message = f"bad response ({exc})"
    else:
        return None
    drop()
    return MailboxError(f"{where}: {step} failed: {message}")
