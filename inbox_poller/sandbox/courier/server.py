"""A throwaway Courier-IMAP 5 on loopback: Maildir, an ``INBOX.`` namespace, no MOVE.

The second server implementation the tests run beside Dovecot (docs/providers.md).
Courier is unpacked from Debian's packages into a private prefix (``install``); its
authlib has ``/etc/courier``, ``/usr/lib/courier-authlib`` and ``/run/courier``
compiled in, so each instance runs in a private mount namespace (``unshare -m``, as
root) where the prefix is laid over ``/usr``, a writable layer of the instance
directory over ``/etc`` and a tmpfs over ``/run``; the host sees none of it. In it a
shell starts ``authdaemond`` (userdb) and two ``couriertcpd`` listeners on free
loopback ports: plain text with STARTTLS, and implicit TLS through ``couriertls``,
with a certificate from ``localca``. The server is ready when LOGIN + SELECT works on
both. Stopping signals every process of the instance's session (the IMAP sessions
first, so clients see the connection drop), reaps the shell, and ends what is left in
the instance's mount namespace (gamin's server, private to the instance through
``GAM_CLIENT_ID``, runs in a session of its own).

The instance directory holds ``etc/`` (the ``/etc`` layer: ``courier/authdaemonrc``,
``courier/userdb``), ``ssl/``, ``mail/<user>/Maildir``, ``log/`` and ``start.sh``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from string import Template

from imapclient import IMAPClient

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox import engines, localca
from inbox_poller.sandbox.courier.install import find_courier
from inbox_poller.sandbox.dovecot import process
from inbox_poller.sandbox.dovecot.config import MAIL_GID, MAIL_UID
from inbox_poller.sandbox.imapaccount import TestAccount
from inbox_poller.sandbox.lifecycle import ThrowawayServer

logger = logging.getLogger("inbox_poller.sandbox")

DEFAULT_USER = "inbox-poller"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
_POLL_S = 0.05

CAPABILITY = (
    "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE"
)
"""Debian's default ``IMAP_CAPABILITY``: no MOVE (Courier 5 has none)."""

START_SCRIPT = Template("""\
#!/bin/sh
# Written by inbox_poller.sandbox.courier.server; runs in a private mount namespace.
set -eu
mount -t overlay overlay -o lowerdir=$prefix/usr:/usr /usr
mount -t overlay overlay -o lowerdir=/etc,upperdir=$dir/etc,workdir=$dir/etc-work /etc
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/courier/authdaemon
chmod 0750 /run/courier/authdaemon
# imaplogin drops to the "courier" user for STARTTLS: give it Debian's mail ids
grep -q '^courier:' /etc/passwd ||
    echo 'courier:x:$uid:$gid:Courier:/nonexistent:/usr/sbin/nologin' >> /etc/passwd
grep -q '^courier:' /etc/group || echo 'courier:x:$gid:' >> /etc/group
makeuserdb
set -a
IMAP_CAPABILITY="$capability"
IMAP_CAPABILITY_TLS="$capability AUTH=PLAIN"
IMAP_KEYWORDS=1
IMAP_ACL=1
IMAP_IDLE_TIMEOUT=60
IMAP_ENHANCEDIDLE=$enhanced_idle
IMAP_MAILBOX_SANITY_CHECK=1
IMAP_UMASK=022
IMAP_USELOCKS=1
IMAP_TRASHFOLDERNAME=Trash
IMAP_MOVE_EXPUNGE_TO_TRASH=0
IMAP_STARTTLS=YES
IMAP_TLS_REQUIRED=0
COURIERTLS=/usr/bin/couriertls
TLS_CERTFILE=$dir/imapd.pem
TLS_VERIFYPEER=NONE
MAILDIRPATH=Maildir
# gamin's server (IMAP_ENHANCEDIDLE) is shared per user unless named: one per instance
GAM_CLIENT_ID=$gam_client_id
set +a
/usr/lib/courier/courier-authlib/authdaemond >>$dir/log/authdaemond.log 2>&1 &
couriertcpd -address=127.0.0.1 -maxprocs=200 -maxperip=200 -nodnslookup -noidentlookup \\
    -stderr=$dir/log/imap.log $imap_port \\
    /usr/lib/courier/courier/imaplogin /usr/bin/imapd Maildir &
IMAP_TLS=1 couriertcpd -address=127.0.0.1 -maxprocs=200 -maxperip=200 -nodnslookup \\
    -noidentlookup -stderr=$dir/log/imaps.log $imaps_port \\
    /usr/bin/couriertls -server -tcpd \\
    /usr/lib/courier/courier/imaplogin /usr/bin/imapd Maildir &
wait
""")


class CourierServer(TestAccount, ThrowawayServer):
    """One private Courier-IMAP instance on 127.0.0.1 with a single test user.

    Nothing happens until :meth:`start`. The instance directory is a new temporary
    one unless *directory* is given (empty, or a previous instance's). Ports are
    chosen at random unless given, and kept across :meth:`restart`, as are the mail
    and its UIDVALIDITY. *enhanced_idle* (``IMAP_ENHANCEDIDLE``, through gamin) makes
    IDLE push new mail within about a second; with Debian's default (off) it looks only
    every ``IMAP_IDLE_TIMEOUT`` (60 s; docs/providers.md).
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        user: str = DEFAULT_USER,
        password: str | None = None,
        imap_port: int | None = None,
        imaps_port: int | None = None,
        prefix: Path | None = None,
        enhanced_idle: bool = True,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self._prefix = find_courier(prefix)
        self._enhanced_idle = enhanced_idle
        password = password if password is not None else secrets.token_urlsafe(16)
        for what, value in (("user", user), ("password", password)):
            # both go into a userdb line: tab- and "|"-separated fields
            if not value or any(char in value for char in "\t|=\r\n\0 "):
                raise InboxPollerError(
                    f"the test {what} must be non-empty, without blanks, '|' or '='"
                )
        self._dir = directory.absolute() if directory is not None else None
        self._owns_dir = False
        self._user = user
        self._password = password
        self._fixed_ports = (imap_port, imaps_port)
        self._ports: tuple[int, int] | None = None
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._namespace: str | None = None
        """The instance's mount namespace (``mnt:[inode]``), known once it is ready."""
        self._ca: localca.LocalCA | None = None
        self._context = None

    # ---- properties -------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise InboxPollerError("the Courier instance has not been started yet")
        return self._dir

    @property
    def imap_port(self) -> int:
        return self._require_ports()[0]

    @property
    def imaps_port(self) -> int:
        return self._require_ports()[1]

    @property
    def user(self) -> str:
        return self._user

    @property
    def password(self) -> str:
        return self._password

    @property
    def ca_file(self) -> Path:
        if self._ca is None:
            raise InboxPollerError("the Courier instance has not been started yet")
        return self._ca.ca_cert

    @property
    def personal_prefix(self) -> str:
        return "INBOX."

    @property
    def separator(self) -> str:
        return "."

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _require_ports(self) -> tuple[int, int]:
        if self._ports is None:
            raise InboxPollerError("the Courier instance has not been started yet")
        return self._ports

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait until LOGIN + SELECT works on both ports.

        :raises InboxPollerError: with the last lines the start wrote, or on timeout.
        """
        if self.running:
            return
        self._prepare_directory()
        if self._ports is None:
            self._ports = process.choose_ports(self._fixed_ports)
        for port in self._ports:
            if not engines.port_is_free(port):
                raise InboxPollerError(f"127.0.0.1:{port}: Address already in use")
        script = self.directory / "start.sh"
        script.write_text(self._script(), encoding="utf-8")
        started = time.monotonic()
        with (self.directory / "log" / "start.log").open("ab") as output:
            self._process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "/bin/sh", str(script)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        try:
            self._wait_ready(started)
            self._namespace = _mount_namespace(self._process.pid)
        except BaseException:
            self.stop()
            raise
        logger.info(
            "courier %s: ready on 127.0.0.1:%s (plain) and :%s (TLS) in %.3fs",
            self.directory,
            self.imap_port,
            self.imaps_port,
            time.monotonic() - started,
        )

    def stop(self) -> None:
        """Stop every process of the instance: the IMAP sessions first, then the daemons.

        A no-op when nothing runs.
        """
        if self._process is None:
            return
        leader = self._process.pid
        members = [pid for pid in _session_members(leader) if pid != leader]
        direct = set(process.children(leader))
        # sessions and workers first: their parents are still there to reap them
        _terminate([pid for pid in members if pid not in direct])
        _terminate([pid for pid in members if pid in direct])
        try:
            self._process.wait(timeout=STOP_TIMEOUT_S)  # the shell's "wait" returns now
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        _terminate(_session_members(leader))  # anything that outlived its parent
        if self._namespace is not None:
            # gamin's server (IMAP_ENHANCEDIDLE) starts its own session: it is found by
            # the mount namespace it inherited, which only this instance's processes share
            _terminate(_namespace_members(self._namespace))
        self._process, self._namespace = None, None

    def settings(self) -> dict[str, str]:
        """Return the instance's settings as KEY=VALUE pairs."""
        return {
            "DIR": str(self.directory),
            "PID": str(self._process.pid if self._process else ""),
            "HOST": self.host,
            "IMAP_PORT": str(self.imap_port),
            "IMAPS_PORT": str(self.imaps_port),
            "USER": self.user,
            "PASSWORD": self.password,
            "CAFILE": str(self.ca_file),
            "LOG": str(self.directory / "log"),
        }

    # ---- internals --------------------------------------------------------------------

    def _prepare_directory(self) -> None:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="inbox-poller-courier-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        if any(self._dir.iterdir()) and not (self._dir / "start.sh").exists():
            raise InboxPollerError(
                f"{self._dir} is neither empty nor a Courier instance directory; refusing to use it"
            )
        self._owns_dir = True
        directory = self._dir
        directory.chmod(0o711)  # the mail user passes through to its Maildir
        for sub in ("etc/courier", "etc-work", "log"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        home = directory / "mail" / self._user
        for sub in ("cur", "new", "tmp"):  # what maildirmake makes
            (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
        for path in (directory / "mail", home, *home.rglob("*")):
            os.chown(path, MAIL_UID, MAIL_GID)
        self._ca = localca.make_local_ca(directory / "ssl")
        pem = directory / "imapd.pem"
        pem.write_bytes(self._ca.server_key.read_bytes() + self._ca.server_cert.read_bytes())
        pem.chmod(0o600)
        os.chown(pem, MAIL_UID, MAIL_GID)  # couriertls reads it as "courier" for STARTTLS
        (directory / "etc" / "courier" / "authdaemonrc").write_text(
            'authmodulelist="authuserdb"\ndaemons=2\nauthdaemonvar=/run/courier/authdaemon\n'
            'DEBUG_LOGIN=0\nDEFAULTOPTIONS=""\nLOGGEROPTS=""\n',
            encoding="utf-8",
        )
        userdb = directory / "etc" / "courier" / "userdb"
        userdb.write_text(
            f"{self._user}\tuid={MAIL_UID}|gid={MAIL_GID}|home={home}|mail={home}/Maildir"
            f"|systempw={_crypt(self._password)}\n",
            encoding="utf-8",
        )
        userdb.chmod(0o600)  # makeuserdb refuses a userdb others can read

    def _script(self) -> str:
        imap_port, imaps_port = self._require_ports()
        return START_SCRIPT.substitute(
            prefix=shlex.quote(str(self._prefix)),
            dir=shlex.quote(str(self.directory)),
            uid=MAIL_UID,
            gid=MAIL_GID,
            capability=CAPABILITY,
            enhanced_idle=int(self._enhanced_idle),
            gam_client_id=shlex.quote(f"inbox-poller-{os.getpid()}-{id(self):x}"),
            imap_port=imap_port,
            imaps_port=imaps_port,
        )

    def _wait_ready(self, started: float) -> None:
        deadline = started + self._start_timeout_s
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise InboxPollerError(
                    f"Courier exited with status {self._process.returncode} while starting: "
                    f"{self._last_words()}"
                )
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise InboxPollerError(
                    f"Courier did not become ready within {self._start_timeout_s}s: "
                    f"{self._last_words()}"
                )
            time.sleep(_POLL_S)

    def _ready(self) -> bool:
        try:
            for use_tls in (False, True):
                with self.client(use_tls, timeout_s=2.0) as imap:
                    imap.select_folder("INBOX")
        except (OSError, IMAPClient.Error):
            return False
        return True

    def _last_words(self) -> str:
        lines: list[str] = []
        for name in ("start.log", "imap.log", "imaps.log", "authdaemond.log"):
            with contextlib.suppress(OSError):
                text = (self.directory / "log" / name).read_text("utf-8", "replace")
                lines += [f"{name}: {line}" for line in text.strip().splitlines()[-2:]]
        return "; ".join(lines)[-800:] or f"nothing logged (see {self.directory / 'log'})"


def _crypt(password: str) -> str:
    """Return a SHA-512 crypt(3) hash of *password*, as userdb's ``systempw`` holds it."""
    result = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"],
        input=password,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if result.returncode != 0:
        raise InboxPollerError(f"openssl passwd failed: {result.stderr.strip()[:300]}")
    return result.stdout.strip()


def _session_members(session: int) -> list[int]:
    """Return the live PIDs whose session is *session* (its leader included)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[3]) == session:
            members.append(int(entry.name))
    return members


def _mount_namespace(pid: int) -> str | None:
    """Return the mount namespace of *pid* (``mnt:[4026532174]``), None when it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _namespace_members(namespace: str) -> list[int]:
    """Return the live PIDs in the mount namespace *namespace* (never ours)."""
    if namespace == _mount_namespace(os.getpid()):
        return []  # the namespace was not private after all: never sweep the host's
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and _mount_namespace(int(entry.name)) == namespace
        and process.alive(int(entry.name))
    ]


def _terminate(pids: list[int]) -> None:
    """SIGTERM *pids*, wait until they are gone, SIGKILL what is left after a while."""
    process.send_signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(process.alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            process.send_signal([pid for pid in pids if process.alive(pid)], signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT_S
        time.sleep(0.01)
