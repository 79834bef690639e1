"""The test user's view of a throwaway IMAP server: a client, folders, APPEND.

``DovecotServer`` and ``CourierServer`` both inherit it, so tests and the sandbox talk to
either the same way. A subclass provides the address, the account and the CA, and
``personal_prefix``: what the server puts before a personal folder's name (``""`` on
Dovecot, ``"INBOX."`` on Courier), for helpers that must name a folder the server's way.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from imapclient import IMAPClient, SocketTimeout

from inbox_poller.errors import InboxPollerError

CLIENT_TIMEOUT_S = 10.0
_APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")


class TestAccount:
    """Helpers over one account of a running server (subclasses fill in the address)."""

    __test__ = False  # not a pytest test class, whatever its name

    _context: ssl.SSLContext | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def imap_port(self) -> int:
        """The plain-text port (STARTTLS is offered on it)."""
        raise NotImplementedError

    @property
    def imaps_port(self) -> int:
        """The implicit-TLS port."""
        raise NotImplementedError

    @property
    def user(self) -> str:
        raise NotImplementedError

    @property
    def password(self) -> str:
        raise NotImplementedError

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the server's certificate (trust it as ``ca_file``)."""
        raise NotImplementedError

    @property
    def personal_prefix(self) -> str:
        """What the server puts before a personal folder's name (its personal namespace)."""
        return ""

    @property
    def separator(self) -> str:
        """The server's hierarchy separator."""
        return "/"

    def folder_name(self, name: str) -> str:
        """Return the server's name of the top-level personal folder *name*."""
        return self.personal_prefix + name

    def client(self, tls: bool = True, *, timeout_s: float = CLIENT_TIMEOUT_S) -> IMAPClient:
        """Return a logged-in client; over TLS it verifies the certificate with ``ca_file``."""
        imap = IMAPClient(
            self.host,
            port=self.imaps_port if tls else self.imap_port,
            ssl=tls,
            ssl_context=self._client_context() if tls else None,
            timeout=SocketTimeout(timeout_s, timeout_s),
        )
        try:
            self._log_in(imap)
        except BaseException:
            imap.shutdown()
            raise
        return imap

    def _log_in(self, imap: IMAPClient) -> None:
        """Log *imap* in as the test user (a server may use something else than LOGIN)."""
        imap.login(self.user, self.password)

    def _client_context(self) -> ssl.SSLContext:
        """A verifying context trusting only our CA (the system store takes 30 ms to load)."""
        if self._context is None:
            self._context = ssl.create_default_context(cafile=str(self.ca_file))
            self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        return self._context

    def create_folder(self, name: str) -> None:
        """Create *name* (the server's full name)."""
        with self.client() as imap:
            imap.create_folder(name)

    def delete_folder(self, name: str) -> None:
        """Delete *name* (the server's full name)."""
        with self.client() as imap:
            imap.delete_folder(name)

    def folder_exists(self, name: str) -> bool:
        with self.client() as imap:
            return bool(imap.folder_exists(name))

    def append(self, folder: str, raw: bytes, flags: tuple[str, ...] = ()) -> int:
        """Append *raw* to *folder* and return its UID (from APPENDUID)."""
        with self.client() as imap:
            response = imap.append(folder, raw, flags=flags)
        match = _APPENDUID_RE.search(response)
        if match is None:
            raise InboxPollerError(f"APPEND answered without APPENDUID: {response!r}")
        return int(match.group(2))

    def capabilities(self) -> tuple[str, ...]:
        """Return the CAPABILITY list a logged-in client sees."""
        with self.client() as imap:
            return tuple(cap.decode() for cap in imap.capabilities())
