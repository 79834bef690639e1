"""Opening a session: TLS, login, connection failures, keepalive and a quiet wire log.

Against a real Dovecot, and against a silent loopback server for what Dovecot will
not do (greet without STARTTLS, never answer).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from inbox_poller.config import ImapConfig
from inbox_poller.errors import MailboxError, MailboxLoginError
from inbox_poller.imap.mailbox import ImapMailbox
from inbox_poller.imap.session import IMAPLIB_LOGGER
from inbox_poller.sandbox.dovecot.server import DovecotServer
from tests.plugins.dovecot import MakeMailbox, make_mail

needs_dovecot = pytest.mark.dovecot


# ---- TLS, login and connection failures -----------------------------------------------


@needs_dovecot
@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_a_server_certificate_from_an_unknown_ca_is_refused(
    imap_folder: str, make_dovecot_mailbox: MakeMailbox, security: str
) -> None:
    mailbox = make_dovecot_mailbox(imap_folder, security=security, trust_ca=False)
    with pytest.raises(MailboxError, match="certificate verification failed") as caught:
        mailbox.open()
    assert "imap.ca_file" in str(caught.value)
    assert not isinstance(caught.value, MailboxLoginError)


@needs_dovecot
@pytest.mark.parametrize("security", ["starttls", "plain"])
def test_starttls_with_the_ca_and_plain_text_on_loopback_work(
    dovecot: DovecotServer, imap_folder: str, make_dovecot_mailbox: MakeMailbox, security: str
) -> None:
    dovecot.append(imap_folder, make_mail())
    mailbox = make_dovecot_mailbox(imap_folder, security=security)
    mailbox.open()
    assert len(list(mailbox.fetch_new(0))) == 1


@needs_dovecot
def test_a_wrong_password_is_a_login_error(
    imap_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    mailbox = make_dovecot_mailbox(imap_folder, password="not-the-password")
    with pytest.raises(MailboxLoginError, match="refused") as caught:
        mailbox.open()
    assert caught.value.retryable is False
    assert "not-the-password" not in str(caught.value)


@needs_dovecot
def test_a_stopped_server_is_a_mailbox_error(
    dovecot_variant: Callable[..., DovecotServer], make_dovecot_mailbox: MakeMailbox
) -> None:
    server = dovecot_variant(hide=("IDLE",))
    mailbox = make_dovecot_mailbox("INBOX", server=server)
    server.stop()
    try:
        with pytest.raises(MailboxError, match=rf"127.0.0.1:{server.imaps_port}: connect failed"):
            mailbox.open()
    finally:
        server.start()


def imap_config_for_port(port: int, **overrides: Any) -> ImapConfig:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "username": "someone",
        "password_env": "UNUSED",
    }
    values.update(overrides)
    return ImapConfig(**values)


class _SilentServer:
    """A loopback TCP server that greets (or not) and answers only CAPABILITY and LOGOUT."""

    def __init__(self, greeting: bytes | None) -> None:
        self.received: list[bytes] = []
        self._greeting = greeting
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:  # closed before anyone connected
            return
        with conn:
            if self._greeting is not None:
                conn.sendall(self._greeting)
            buffer = b""
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                buffer += data
                while b"\r\n" in buffer:
                    line, buffer = buffer.split(b"\r\n", 1)
                    self.received.append(line)
                    tag = line.split(b" ", 1)[0]
                    if line.upper().endswith(b"CAPABILITY"):
                        conn.sendall(
                            b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n"
                        )
                    elif line.upper().startswith(tag + b" LOGOUT"):
                        conn.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")

    def close(self) -> None:
        self._listener.close()


def test_starttls_that_is_not_offered_is_refused_before_login() -> None:
    server = _SilentServer(b"* OK fake IMAP ready\r\n")
    config = imap_config_for_port(server.port, security="starttls")
    mailbox = ImapMailbox(config, "canary-password")
    try:
        with pytest.raises(MailboxError, match="does not offer STARTTLS"):
            mailbox.open()
    finally:
        mailbox.close()
        server.close()
    assert not any(b"LOGIN" in line.upper() for line in server.received)


def test_a_server_that_never_answers_times_out() -> None:
    server = _SilentServer(None)
    config = imap_config_for_port(server.port, security="plain", timeout_s=0.3)
    mailbox = ImapMailbox(config, "canary-password")
    started = time.monotonic()
    try:
        with pytest.raises(MailboxError, match=r"connect failed: no answer within 0.3s"):
            mailbox.open()
    finally:
        server.close()
    assert time.monotonic() - started < 2


# ---- session details ------------------------------------------------------------------


@needs_dovecot
def test_tcp_keepalive_is_on(imap_folder: str, make_dovecot_mailbox: MakeMailbox) -> None:
    mailbox = make_dovecot_mailbox(imap_folder)
    mailbox.open()
    client = mailbox._client  # white box: the option is invisible otherwise
    assert client is not None
    sock = client.socket()
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60


@needs_dovecot
def test_logs_hold_no_password_and_no_body_even_at_debug(
    dovecot: DovecotServer,
    imap_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    canary = "CANARY-SIGNATURE-7f3a"
    dovecot.append(imap_folder, make_mail(body=f"https://x.test/a?sig={canary}\n"))
    caplog.set_level(logging.DEBUG)
    mailbox = make_dovecot_mailbox(imap_folder, processed_folder=imap_folder + "-done")
    mailbox.open()
    [mail] = list(mailbox.fetch_new(0))
    assert mail.raw is not None and canary.encode() in mail.raw
    mailbox.acknowledge(mail.key, None)
    mailbox.close()
    dovecot.delete_folder(imap_folder + "-done")

    assert logging.getLogger(IMAPLIB_LOGGER).getEffectiveLevel() >= logging.INFO
    assert caplog.records, "the canary check needs some DEBUG logging to look at"
    assert canary not in caplog.text
    assert dovecot.password not in caplog.text
