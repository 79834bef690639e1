"""A throwaway Dovecot IMAP server on loopback, for ``inbox-poller sandbox`` and the tests.

This implements the recipe in ``docs/dovecot.md``: one instance directory holds
everything, and ``dovecot -F -c <config>`` never reads ``/etc/dovecot``. The server
is ready only when a real LOGIN + SELECT works, and it fails fast on the first
`` Fatal: `` or `` Error: `` line in its log. This module holds the instance's
life cycle; the test user's view of it (a client, folders, APPEND) is
:class:`~inbox_poller.sandbox.imapaccount.TestAccount`'s.

The instance directory is laid out by :mod:`.directory`; the config and the other
files Dovecot reads (and the fixes running as root needs) are written by
:mod:`.config`; the log is read by :mod:`.log`; finding the binary, choosing ports
and stopping the processes are in :mod:`.process`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import ssl
import subprocess
import time
from pathlib import Path

from imapclient import IMAPClient

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox import engines
from inbox_poller.sandbox.dovecot import config as dovecot_config
from inbox_poller.sandbox.dovecot import process as dovecot_process
from inbox_poller.sandbox.dovecot.directory import claim_directory, prepare_directory
from inbox_poller.sandbox.dovecot.log import LogTail
from inbox_poller.sandbox.dovecot.process import find_dovecot
from inbox_poller.sandbox.imapaccount import TestAccount
from inbox_poller.sandbox.lifecycle import ThrowawayServer
from inbox_poller.sandbox.localca import LocalCA

logger = logging.getLogger("inbox_poller.sandbox")

DEFAULT_USER = "inbox-poller"
START_TIMEOUT_S = 10.0
START_ATTEMPTS = 5
_POLL_S = 0.02


class DovecotServer(TestAccount, ThrowawayServer):
    """One private Dovecot instance on 127.0.0.1 with a single test user.

    Nothing happens until :meth:`start`. The instance directory is created in
    the system temporary directory unless *directory* is given (it must then be
    empty or a previous instance, and reachable by the ``mail`` user when
    running as root). *capability* replaces the post-login CAPABILITY string
    (``imap_capability``), so tests can hide MOVE, UIDPLUS or IDLE; the server
    still implements them. Folders matching the mailbox pattern
    *keywordless_folders* (``"nokw*"``) refuse custom keywords: their
    PERMANENTFLAGS lack ``\\*``, as on Exchange (done with the ACL plugin, by
    withholding the ``w`` right). Ports are chosen at random unless given, and
    kept across :meth:`restart`. With *oauth2* the server is OAuth2-only: it offers
    XOAUTH2 and OAUTHBEARER and no password mechanism, and asks the introspection
    endpoint about each token (the helpers of ``TestAccount`` log in with a minted one).
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        user: str = DEFAULT_USER,
        password: str | None = None,
        capability: str | None = None,
        keywordless_folders: str | None = None,
        imap_port: int | None = None,
        imaps_port: int | None = None,
        extra_config: str = "",
        binary: Path | None = None,
        search_path: str | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
        oauth2: dovecot_config.DovecotOAuth2 | None = None,
    ) -> None:
        self._binary = binary if binary is not None else find_dovecot(search_path)
        password = password if password is not None else secrets.token_urlsafe(16)
        for what, value in (("user", user), ("password", password)):
            # both go into a colon-separated passwd-file line
            if not value or any(char in value for char in ":\r\n\0"):
                raise InboxPollerError(
                    f"the test {what} must be non-empty, without ':' or newlines"
                )
        self._dir = directory.absolute() if directory is not None else None
        self._owns_dir = False
        """True once the directory is known to be ours to delete (created, or empty)."""
        self._user = user
        self._password = password
        self._capability = capability
        if keywordless_folders is not None and not re.fullmatch(r"\S+", keywordless_folders):
            raise InboxPollerError("keywordless_folders must be one mailbox pattern")
        self._keywordless = keywordless_folders
        self._fixed_ports = (imap_port, imaps_port)
        self._ports: tuple[int, int] | None = None
        self._extra = extra_config
        self._oauth2 = oauth2
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._ca: LocalCA | None = None
        self._context: ssl.SSLContext | None = None

    # ---- properties -------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise InboxPollerError("the Dovecot instance has not been started yet")
        return self._dir

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def imap_port(self) -> int:
        """The plain-text port (STARTTLS is offered on it)."""
        return self._require_ports()[0]

    @property
    def imaps_port(self) -> int:
        """The implicit-TLS port."""
        return self._require_ports()[1]

    @property
    def user(self) -> str:
        return self._user

    @property
    def password(self) -> str:
        return self._password

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the server's certificate (trust it as ``ca_file``)."""
        if self._ca is None:
            raise InboxPollerError("the Dovecot instance has not been started yet")
        return self._ca.ca_cert

    @property
    def config_path(self) -> Path:
        return self.directory / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / "log" / "dovecot.log"

    @property
    def instance_name(self) -> str:
        digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:10]
        # Dovecot prefixes process titles with "dovecot-" unless the name starts so
        return f"dovecot-inbox-poller-{digest}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _require_ports(self) -> tuple[int, int]:
        if self._ports is None:
            raise InboxPollerError("the Dovecot instance has not been started yet")
        return self._ports

    def settings(self) -> dict[str, str]:
        """Return the instance's settings as KEY=VALUE pairs (for the sandbox command)."""
        return {
            "DIR": str(self.directory),
            "CONFIG": str(self.config_path),
            "PID": str(self._process.pid if self._process else ""),
            "HOST": self.host,
            "IMAP_PORT": str(self.imap_port),
            "IMAPS_PORT": str(self.imaps_port),
            "USER": self.user,
            "PASSWORD": self.password,
            "CAFILE": str(self.ca_file),
            "LOG": str(self.log_path),
        }

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait until LOGIN + SELECT works.

        :raises InboxPollerError: with the first Fatal/Error log line, or on timeout.
        """
        if self.running:
            return
        self._reap()  # a master that died on its own
        self._prepare_directory()
        for attempt in range(1, START_ATTEMPTS + 1):
            if self._ports is None:
                self._ports = dovecot_process.choose_ports(self._fixed_ports)
            try:
                self._launch()
                return
            except InboxPollerError as exc:
                self.stop()
                lost_race = "Address already in use" in str(exc)
                if not lost_race or self._fixed_ports != (None, None) or attempt == START_ATTEMPTS:
                    raise
                # another process took a port between our probe and Dovecot's bind
                logger.info("dovecot %s: %s; retrying on other ports", self.directory, exc)
                self._ports = None

    def stop(self) -> None:
        """Stop the server so that connected clients really see the connection drop.

        The signal order is ``process.terminate``'s. A no-op when nothing runs.
        """
        master = self._master_pid()
        if master is None:
            self._reap()
            return
        started = time.monotonic()
        dovecot_process.terminate(master, self.instance_name, str(self.directory))
        self._reap()
        logger.debug("dovecot %s: stopped in %.3fs", self.directory, time.monotonic() - started)

    # ---- helpers for tests and the sandbox: TestAccount's ---------------------------

    def _log_in(self, imap: IMAPClient) -> None:
        if self._oauth2 is None:
            super()._log_in(imap)
        else:
            imap.oauth2_login(self.user, self._oauth2.mint_token(self.user))

    # ---- internals --------------------------------------------------------------------

    def _prepare_directory(self) -> None:
        self._dir = claim_directory(self._dir)
        self._owns_dir = True
        # prepare_directory wipes run/, which is only stale when no instance of ours runs
        if self._master_pid() is not None:
            raise InboxPollerError(
                f"a Dovecot instance is already running on {self.directory}; stop it first"
            )
        self._ca = prepare_directory(self._dir, self._user, self._password)

    def _write_config(self) -> None:
        assert self._ca is not None
        text = dovecot_config.render_config(
            directory=self.directory,
            instance=self.instance_name,
            ca=self._ca,
            ports=self._require_ports(),
            capability=self._capability,
            extra=dovecot_config.write_acl(self.directory, self._keywordless) + self._extra,
            oauth2=self._oauth2 is not None,
        )
        if self._oauth2 is not None:
            dovecot_config.write_oauth2(self.directory, self._oauth2)
        self.config_path.write_text(text, encoding="utf-8")

    def _launch(self) -> None:
        # Dovecot itself takes about 2 s to give up on a taken port; look first
        for port in self._require_ports():
            if not engines.port_is_free(port):
                raise InboxPollerError(f"127.0.0.1:{port}: Address already in use")
        self._write_config()
        log = LogTail(self.log_path)
        started = time.monotonic()
        self._process = dovecot_process.launch(
            self._binary, self.config_path, self.directory / "log" / "stderr.log"
        )
        deadline = started + self._start_timeout_s
        while True:
            self._raise_on_failure(log)
            if self._ready():
                logger.info(
                    "dovecot %s: ready on 127.0.0.1:%s (plain) and :%s (TLS) in %.3fs",
                    self.directory,
                    self.imap_port,
                    self.imaps_port,
                    time.monotonic() - started,
                )
                return
            if time.monotonic() > deadline:
                last = log.lines()[-1:] or ["nothing logged"]
                raise InboxPollerError(
                    f"Dovecot did not become ready within {self._start_timeout_s}s "
                    f"(last log line: {last[0].strip()}); see {self.log_path}"
                )
            time.sleep(_POLL_S)

    def _raise_on_failure(self, log: LogTail) -> None:
        failure = log.failure()
        if failure is not None:
            raise InboxPollerError(f"Dovecot failed to start: {failure}")
        assert self._process is not None
        if self._process.poll() is not None:
            stderr = (self.directory / "log" / "stderr.log").read_text("utf-8", "replace")
            detail = stderr.strip().splitlines()[-1:] or [f"see {self.log_path}"]
            raise InboxPollerError(
                f"Dovecot exited with status {self._process.returncode} while starting: "
                f"{detail[0][:500]}"
            )

    def _ready(self) -> bool:
        """Return whether a real LOGIN + SELECT INBOX works on both ports."""
        try:
            for use_tls in (False, True):
                with self.client(use_tls, timeout_s=2.0) as imap:
                    imap.select_folder("INBOX")
        except (OSError, IMAPClient.Error):
            return False
        return True

    def _master_pid(self) -> int | None:
        """Return the running master's PID: our child, or a live one named in master.pid."""
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        if self._dir is None:
            return None
        try:
            pid = int((self._dir / "run" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        # trust a PID only when it is really our master (PIDs get reused)
        if dovecot_process.alive(pid) and str(self.config_path) in dovecot_process.proc_title(pid):
            return pid
        return None

    def _reap(self) -> None:
        if self._process is not None:
            dovecot_process.reap(self._process)
            self._process = None
