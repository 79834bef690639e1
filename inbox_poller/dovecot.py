"""A throwaway Dovecot IMAP server on loopback, for ``inbox-poller sandbox`` and the tests.

This implements the recipe in ``docs/dovecot.md``: one directory holds the
config, Dovecot's run and state directories, the log, a certificate from
``localca``, a passwd-file with one test user, and an sdbox mail store.
``dovecot -F -c <config>`` never reads ``/etc/dovecot``. The server is ready
only when a real LOGIN + SELECT works, and it fails fast on the first
` Fatal: ` or ` Error: ` line in its log.

Running as root needs four fixes (the login process runs as ``dovenull``, mail
is accessed as Debian's ``mail`` user, the instance directory must be
searchable by that user, and the passwd-file leaves uid/gid empty). As an
unprivileged user everything runs as that user, without chroots.

Stopping signals the ``imap`` processes first: without a systemd cgroup to
sweep them up they would survive the master, and clients would never see the
connection drop.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import logging
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from string import Template
from types import TracebackType

from imapclient import IMAPClient, SocketTimeout

from inbox_poller import localca
from inbox_poller.errors import InboxPollerError

logger = logging.getLogger(__name__)

INSTALL_HINT = "apt-get install -y dovecot-imapd"
"""The command that provides the ``dovecot`` binary on Debian and Ubuntu."""

SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin")
"""Where Dovecot lives when ``/usr/sbin`` is not on a non-login shell's PATH."""

DEFAULT_USER = "inbox-poller"
START_TIMEOUT_S = 10.0
STOP_KILL_AFTER_S = 10.0
CLIENT_TIMEOUT_S = 10.0
PORT_RANGE = (20000, 32000)
"""Below Linux's ephemeral range (32768+), so outgoing connections never hold our ports."""
START_ATTEMPTS = 5
MAIL_UID = 8
"""Debian's ``mail`` user: imap refuses to access mail as uid 0."""
MAIL_GID = 8
_POLL_S = 0.02
_STOP_POLL_S = 0.005
_FAILURE_RE = re.compile(r" (Fatal|Error): ")
_APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")

_CONFIG = Template("""\
# Written by inbox_poller.dovecot for a throwaway test server; see docs/dovecot.md.
base_dir = $dir/run
state_dir = $dir/state
instance_name = $instance
log_path = $dir/log/dovecot.log
info_log_path = $dir/log/dovecot.log
debug_log_path = $dir/log/dovecot.log

listen = 127.0.0.1
protocols = imap

default_internal_user = $internal_user
default_internal_group = $internal_group
default_login_user = $login_user
$privileges
ssl = yes
ssl_cert = <$ssl_cert
ssl_key = <$ssl_key
$ssl_dh
disable_plaintext_auth = no
auth_mechanisms = plain login
# a wrong password would otherwise delay every later login by seconds
auth_failure_delay = 0

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dir/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $dir/users
}

mail_location = sdbox:~/sdbox
mail_fsync = never
namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    special_use = \\Sent
  }
  mailbox Trash {
    special_use = \\Trash
  }
}

protocol imap {
  mail_max_userip_connections = 200
$capability
}

service imap-login {
  chroot = $login_chroot
  inet_listener imap {
    address = 127.0.0.1
    port = $imap_port
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $imaps_port
    ssl = yes
  }
}
service anvil {
  chroot = $anvil_chroot
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
$extra
""")


def find_dovecot(search_path: str | None = None) -> Path:
    """Return the ``dovecot`` binary, looking in *search_path* (default: PATH plus /usr/sbin).

    :raises InboxPollerError: naming the install command when it is nowhere.
    """
    if search_path is None:
        search_path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    found = shutil.which("dovecot", path=search_path)
    if found is None:
        raise InboxPollerError(
            f"the dovecot binary was not found (searched {search_path or 'nothing'}); "
            f"install it with: {INSTALL_HINT}"
        )
    return Path(found)


def _port_is_free(port: int) -> bool:
    """Return whether Dovecot could bind *port* on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as Dovecot does: connections left in TIME_WAIT do not block a listener
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(avoid: set[int]) -> int:
    """Return a loopback TCP port nobody listens on right now (it may be taken later)."""
    for _ in range(200):
        port = random.randrange(*PORT_RANGE)
        if port not in avoid and _port_is_free(port):
            return port
    raise InboxPollerError("no free loopback port found for Dovecot")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """Return (state, parent PID) of *pid*, or None when it no longer exists."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # the command name is in parentheses and may itself contain them
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _proc_title(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def _alive(pid: int) -> bool:
    """Return whether *pid* runs; a zombie counts as gone (its parent may reap it late)."""
    info = _proc_stat(pid)
    return info is not None and info[0] != "Z"


def _children(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _proc_stat(int(entry.name))
            if info is not None and info[1] == parent:
                pids.append(int(entry.name))
    return pids


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _unreachable_ancestor(path: Path, uid: int, gid: int) -> Path | None:
    """Return the first directory on *path* that *uid* cannot search, if any.

    The imap process keeps the supplementary group 0, so group bits of a
    root-owned directory count too (docs/dovecot.md, fix 3).
    """
    for directory in [path, *path.parents]:
        mode = directory.stat()
        if mode.st_uid == uid and mode.st_mode & stat.S_IXUSR:
            continue
        if mode.st_gid in (gid, 0) and mode.st_mode & stat.S_IXGRP:
            continue
        if mode.st_mode & stat.S_IXOTH:
            continue
        return directory
    return None


class DovecotServer:
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
    kept across :meth:`restart`.
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
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._ca: localca.LocalCA | None = None
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
                self._ports = self._choose_ports()
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

        The imap session processes get SIGTERM (they send ``* BYE``), then the master;
        its stateless helpers (log, auth, anvil, config, stats, logins) get SIGKILL.
        Given SIGTERM, the master respawns helpers that die first and then waits for
        them, which made about one stop in twenty take a whole second. A no-op when
        nothing runs.
        """
        master = self._master_pid()
        if master is None:
            self._reap()
            return
        started = time.monotonic()
        prefix = self.instance_name + "/"
        # only processes titled as ours: a PID read from master.pid may have been reused
        children = [pid for pid in _children(master) if _proc_title(pid).startswith(prefix)]
        sessions = [pid for pid in children if _proc_title(pid).split(" ")[0] == prefix + "imap"]
        _signal(sessions, signal.SIGTERM)
        _signal([master], signal.SIGTERM)
        _signal([pid for pid in children if pid not in sessions], signal.SIGKILL)
        signalled = {master, *children}
        while True:
            if _alive(master):
                # a process forked since the first look (a respawned helper, a login)
                late = [pid for pid in _children(master) if pid not in signalled]
                _signal(late, signal.SIGKILL)
                signalled.update(late)
            if not any(_alive(pid) for pid in signalled):
                break
            if time.monotonic() - started > STOP_KILL_AFTER_S:
                logger.warning(
                    "dovecot %s: still running after %ss; killing it",
                    self.directory,
                    STOP_KILL_AFTER_S,
                )
                _signal([pid for pid in signalled if _alive(pid)], signal.SIGKILL)
                break
            time.sleep(_STOP_POLL_S)
        self._reap()
        logger.debug("dovecot %s: stopped in %.3fs", self.directory, time.monotonic() - started)

    def restart(self) -> None:
        """Stop and start again on the same directory and ports (UIDVALIDITY survives)."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and delete its directory (never a directory it refused to use)."""
        self.stop()
        if self._dir is not None and self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        try:
            self.start()
        except BaseException:
            self.cleanup()  # __exit__ will not run; the error already holds the log line
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # ---- helpers for tests and the sandbox --------------------------------------------

    def client(self, tls: bool = True, *, timeout_s: float = CLIENT_TIMEOUT_S) -> IMAPClient:
        """Return a logged-in client; over TLS it verifies the certificate with ``ca_file``."""
        if tls:
            imap = IMAPClient(
                self.host,
                port=self.imaps_port,
                ssl=True,
                ssl_context=self._client_context(),
                timeout=SocketTimeout(timeout_s, timeout_s),
            )
        else:
            imap = IMAPClient(
                self.host,
                port=self.imap_port,
                ssl=False,
                timeout=SocketTimeout(timeout_s, timeout_s),
            )
        try:
            imap.login(self.user, self.password)
        except BaseException:
            imap.shutdown()
            raise
        return imap

    def _client_context(self) -> ssl.SSLContext:
        """A verifying context trusting only our CA (the system store takes 30 ms to load)."""
        if self._context is None:
            self._context = ssl.create_default_context(cafile=str(self.ca_file))
            self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        return self._context

    def create_folder(self, name: str) -> None:
        with self.client() as imap:
            imap.create_folder(name)

    def delete_folder(self, name: str) -> None:
        with self.client() as imap:
            imap.delete_folder(name)

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

    # ---- internals --------------------------------------------------------------------

    def _prepare_directory(self) -> None:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="inbox-poller-dovecot-"))
        directory = self._dir
        directory.mkdir(parents=True, exist_ok=True)
        if any(directory.iterdir()) and not (directory / "dovecot.conf").exists():
            raise InboxPollerError(
                f"{directory} is neither empty nor a Dovecot instance directory; refusing to use it"
            )
        self._owns_dir = True
        is_root = os.geteuid() == 0
        if is_root:
            # mkdtemp makes 0700; the mail user must be able to pass through
            directory.chmod(0o711)
            blocked = _unreachable_ancestor(directory, MAIL_UID, MAIL_GID)
            if blocked is not None:
                raise InboxPollerError(
                    f"the mail user (uid {MAIL_UID}) cannot reach {directory}: {blocked} is not "
                    "searchable; use a directory under the system temporary directory"
                )
        for sub in ("run", "state", "log"):
            (directory / sub).mkdir(exist_ok=True)
        self._clear_stale_run_dir()
        mail_home = directory / "mail" / self._user
        mail_home.mkdir(parents=True, exist_ok=True)
        if is_root:
            for path in (directory / "mail", mail_home):
                os.chown(path, MAIL_UID, MAIL_GID)
                path.chmod(0o700)
        self._ca = localca.make_local_ca(directory / "ssl")
        users = directory / "users"
        # uid and gid stay empty so mail_uid/mail_gid apply; the home is the 6th field
        users.write_text(
            f"{self._user}:{{PLAIN}}{self._password}::::{mail_home}::\n", encoding="utf-8"
        )
        users.chmod(0o600)

    def _clear_stale_run_dir(self) -> None:
        """Wipe ``run/`` after a crash, unless its master.pid is a live instance of ours."""
        if self._master_pid() is not None:
            raise InboxPollerError(
                f"a Dovecot instance is already running on {self.directory}; stop it first"
            )
        run = self.directory / "run"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir()

    def _choose_ports(self) -> tuple[int, int]:
        imap_port, imaps_port = self._fixed_ports
        if imap_port is None:
            imap_port = _free_port({imaps_port} if imaps_port else set())
        if imaps_port is None:
            imaps_port = _free_port({imap_port})
        return imap_port, imaps_port

    def _write_config(self) -> None:
        assert self._ca is not None
        assert self._ports is not None
        is_root = os.geteuid() == 0
        if is_root:
            internal_user, internal_group = "root", "root"
            login_user = "dovenull" if _user_exists("dovenull") else "nobody"
            privileges = (
                f"mail_uid = {MAIL_UID}\nmail_gid = {MAIL_GID}\n"
                "first_valid_uid = 0\nfirst_valid_gid = 0\n"
            )
            login_chroot, anvil_chroot = "login", "empty"
        else:
            internal_user = pwd.getpwuid(os.geteuid()).pw_name
            internal_group = grp.getgrgid(os.getegid()).gr_name
            login_user = internal_user
            privileges = f"first_valid_uid = {os.geteuid()}\nfirst_valid_gid = {os.getegid()}\n"
            login_chroot, anvil_chroot = "", ""
        dh = Path("/usr/share/dovecot/dh.pem")
        text = _CONFIG.substitute(
            dir=self.directory,
            instance=self.instance_name,
            internal_user=internal_user,
            internal_group=internal_group,
            login_user=login_user,
            privileges=privileges,
            ssl_cert=self._ca.server_cert,
            ssl_key=self._ca.server_key,
            ssl_dh=f"ssl_dh = <{dh}" if dh.exists() else "",
            capability=f"  imap_capability = {self._capability}" if self._capability else "",
            login_chroot=login_chroot,
            anvil_chroot=anvil_chroot,
            imap_port=self._ports[0],
            imaps_port=self._ports[1],
            extra=self._acl_config() + self._extra,
        )
        self.config_path.write_text(text, encoding="utf-8")

    def _acl_config(self) -> str:
        if self._keywordless is None:
            return ""
        acl_file = self.directory / "global-acl"
        # l lookup, r read, s seen, i insert, t/e delete and expunge, k/x create and
        # delete folders; no w: no keywords and no other flags
        acl_file.write_text(f"{self._keywordless} owner lrsitekx\n", encoding="utf-8")
        acl_file.chmod(0o644)
        return f"mail_plugins = acl\nplugin {{\n  acl = vfile:{acl_file}\n}}\n"

    def _launch(self) -> None:
        # Dovecot itself takes about 2 s to give up on a taken port; look first
        for port in self._require_ports():
            if not _port_is_free(port):
                raise InboxPollerError(f"127.0.0.1:{port}: Address already in use")
        self._write_config()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        started = time.monotonic()
        # -F keeps the master in the foreground as our child: its PID is known and
        # we can reap it, instead of leaving a zombie for PID 1
        stderr = (self.directory / "log" / "stderr.log").open("ab")
        self._process = subprocess.Popen(
            [str(self._binary), "-F", "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
        stderr.close()
        deadline = started + self._start_timeout_s
        while True:
            self._raise_on_failure(log_offset)
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
                last = self._log_lines(log_offset)[-1:] or ["nothing logged"]
                raise InboxPollerError(
                    f"Dovecot did not become ready within {self._start_timeout_s}s "
                    f"(last log line: {last[0].strip()}); see {self.log_path}"
                )
            time.sleep(_POLL_S)

    def _raise_on_failure(self, log_offset: int) -> None:
        for line in self._log_lines(log_offset):
            if _FAILURE_RE.search(line):
                raise InboxPollerError(f"Dovecot failed to start: {line.strip()}")
        assert self._process is not None
        if self._process.poll() is not None:
            stderr = (self.directory / "log" / "stderr.log").read_text("utf-8", "replace")
            detail = stderr.strip().splitlines()[-1:] or [f"see {self.log_path}"]
            raise InboxPollerError(
                f"Dovecot exited with status {self._process.returncode} while starting: "
                f"{detail[0][:500]}"
            )

    def _log_lines(self, offset: int) -> list[str]:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                data = log.read()
        except FileNotFoundError:
            return []
        return data.decode("utf-8", "replace").splitlines()

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
        if _alive(pid) and str(self.config_path) in _proc_title(pid):
            return pid
        return None

    def _reap(self) -> None:
        if self._process is not None:
            try:
                self._process.wait(timeout=STOP_KILL_AFTER_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
