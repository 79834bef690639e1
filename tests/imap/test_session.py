"""Opening a session: TLS, login, connection failures, keepalive and a quiet wire log.

Against a real Dovecot, and against a silent loopback server for what Dovecot will
not do (greet without STARTTLS, never answer).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from inbox_poller.config import ImapConfig
from inbox_poller.errors import MailboxError, MailboxLoginError
from inbox_poller.imap.mailbox import ImapMailbox
from inbox_poller.imap.session import (
    IMAPLIB_LOGGER,
    choose_mechanism,
    oauth_payload,
    redact_secret,
)
from inbox_poller.sandbox.dovecot.server import DovecotServer
from tests.plugins.dovecot import MakeMailbox, make_mail
from tests.plugins.echo_imap import ECHO_MODES, EchoingImapServer
from tests.plugins.loop import REPO_ROOT

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


# ---- a server that echoes LOGIN (red-team finding 6) ----------------------------------

ECHOED_PASSWORD = 'Ech0"ed\\Pass word'
"""Quoted on the wire as ``"Ech0\\"ed\\\\Pass word"``: both spellings must be cut out."""

ECHO_CONFIG = """\
[pinpointe]
api_url = "https://127.0.0.1:9/apijson.php"
username = "exports@example.test"
usertoken_env = "ECHO_TEST_TOKEN"
notify_email = "exports@example.test"
timeout_s = 2

[imap]
host = "127.0.0.1"
port = {port}
security = "plain"
username = "someone"
password_file = "imap-password"
timeout_s = 5

[download]
allowed_hosts = [".example.test"]

[archive]
dir = "archive"

[state]
path = "state/state.db"
"""


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOX_POLLER")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["ECHO_TEST_TOKEN"] = "token-not-under-test"
    return subprocess.run(
        [sys.executable, "-m", "inbox_poller", "-c", str(root / "config.toml"), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _password_spellings() -> list[str]:
    return [ECHOED_PASSWORD, ECHOED_PASSWORD.replace("\\", "\\\\").replace('"', '\\"')]


@pytest.mark.parametrize("mode", ECHO_MODES)
def test_a_server_echoing_login_never_shows_the_password(
    mode: str, echoing_imap: Callable[[str], EchoingImapServer]
) -> None:
    server = echoing_imap(mode)
    mailbox = ImapMailbox(imap_config_for_port(server.port, security="plain"), ECHOED_PASSWORD)
    with pytest.raises(MailboxError) as caught:
        mailbox.open()
    mailbox.close()

    # the server really did repeat it; the error says what happened without it
    assert any(b"LOGIN" in line for line in server.lines)
    if mode != "untagged":  # an untagged answer is never shown at all
        assert "[redacted]" in str(caught.value)
    shown = "".join(traceback.format_exception(caught.value))
    for spelling in _password_spellings():
        assert spelling not in shown
        assert spelling.lower() not in shown.lower()


@pytest.mark.parametrize("mode", ["no", "bye"])
def test_check_and_both_log_formats_never_carry_an_echoed_password(
    tmp_path: Path, mode: str, echoing_imap: Callable[[str], EchoingImapServer]
) -> None:
    server = echoing_imap(mode)
    (tmp_path / "config.toml").write_text(ECHO_CONFIG.format(port=server.port), encoding="utf-8")
    secret = tmp_path / "imap-password"
    secret.write_text(ECHOED_PASSWORD, encoding="utf-8")
    secret.chmod(0o600)

    check = _cli(tmp_path, "check")
    text_log = _cli(tmp_path, "-v", "run", "--once")
    json_log = _cli(tmp_path, "-v", "--log-format", "json", "run", "--once")

    assert check.returncode == 1
    assert "FAIL imap:" in check.stdout and "[redacted]" in check.stdout
    assert text_log.returncode == 1 and "ERROR inbox_poller.loop: mailbox:" in text_log.stderr
    json_lines = [json.loads(line) for line in json_log.stderr.splitlines()]
    assert any(entry["message"].startswith("mailbox:") for entry in json_lines)
    assert sum(b"LOGIN" in line for line in server.lines) == 3
    for output in (check.stdout, check.stderr, text_log.stdout, text_log.stderr, json_log.stderr):
        for spelling in _password_spellings():
            assert spelling.lower() not in output.lower()


SASL_CASES = [
    # (mechanism, user, token, first client message)
    ("XOAUTH2", "box@example.com", "tok", "user=box@example.com\x01auth=Bearer tok\x01\x01"),
    ("OAUTHBEARER", "box@example.com", "tok", "n,a=box@example.com,\x01auth=Bearer tok\x01\x01"),
    # RFC 5801: "," and "=" in the authzid are escaped
    ("OAUTHBEARER", "a,b=c", "tok", "n,a=a=2Cb=3Dc,\x01auth=Bearer tok\x01\x01"),
]


@pytest.mark.parametrize(("mechanism", "user", "token", "payload"), SASL_CASES)
def test_the_sasl_payloads(mechanism: str, user: str, token: str, payload: str) -> None:
    assert oauth_payload(mechanism, user, token) == payload


@pytest.mark.parametrize(
    ("configured", "offered", "chosen"),
    [
        ("auto", (b"IMAP4REV1", b"AUTH=XOAUTH2", b"AUTH=OAUTHBEARER"), "OAUTHBEARER"),
        ("auto", (b"IMAP4REV1", b"AUTH=XOAUTH2"), "XOAUTH2"),
        ("auto", ("IMAP4rev1",), "XOAUTH2"),
        ("xoauth2", (b"AUTH=OAUTHBEARER",), "XOAUTH2"),
        ("oauthbearer", (), "OAUTHBEARER"),
    ],
)
def test_auto_prefers_oauthbearer_when_offered(
    configured: str, offered: tuple[bytes | str, ...], chosen: str
) -> None:
    assert choose_mechanism(configured, offered) == chosen


def test_a_token_echoed_in_any_sasl_spelling_is_redacted() -> None:
    token, user = "eyJ0eXAiOiJKV1QiLCJhbGciOi.J9-secret_part", "box@example.com"
    for mechanism in ("XOAUTH2", "OAUTHBEARER"):
        echoed = base64.b64encode(oauth_payload(mechanism, user, token).encode()).decode()
        text = f"NO [AUTHENTICATIONFAILED] bad {echoed} and {token}"
        clean = redact_secret(text, token, user)
        assert token not in clean and echoed not in clean
        assert clean.count("[redacted]") == 2
