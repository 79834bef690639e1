"""Process plumbing for the throwaway Dovecot: the binary, ports, starting and stopping.

``DovecotServer`` (:mod:`inbox_poller.sandbox.dovecot.server`) uses these. Processes are
read from ``/proc`` (Linux only, like the rest of the sandbox). Stopping signals the
``imap`` processes first: without a systemd cgroup to sweep them up they would survive
the master, and clients would never see the connection drop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox import engines

logger = logging.getLogger("inbox_poller.sandbox")

INSTALL_HINT = "apt-get install -y dovecot-imapd"
"""The command that provides the ``dovecot`` binary on Debian and Ubuntu."""

SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin")
"""Where Dovecot lives when ``/usr/sbin`` is not on a non-login shell's PATH."""

STOP_KILL_AFTER_S = 10.0
_STOP_POLL_S = 0.005


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


# ---- ports ----------------------------------------------------------------------------


def free_port(avoid: set[int]) -> int:
    """Return a loopback TCP port nobody listens on right now (it may be taken later)."""
    for _ in range(200):
        port = random.randrange(*engines.PORT_RANGE)
        if port not in avoid and engines.port_is_free(port):
            return port
    raise InboxPollerError("no free loopback port found for Dovecot")


def choose_ports(fixed: tuple[int | None, int | None]) -> tuple[int, int]:
    """Return (imap, imaps) ports: the *fixed* ones where given, free ones otherwise."""
    imap_port, imaps_port = fixed
    if imap_port is None:
        imap_port = free_port({imaps_port} if imaps_port else set())
    if imaps_port is None:
        imaps_port = free_port({imap_port})
    return imap_port, imaps_port


# ---- processes ------------------------------------------------------------------------


def launch(binary: Path, config_path: Path, stderr_log: Path) -> subprocess.Popen[bytes]:
    """Start the Dovecot master on *config_path*, its stderr appended to *stderr_log*."""
    with stderr_log.open("ab") as stderr:
        # -F keeps the master in the foreground as our child: its PID is known and
        # we can reap it, instead of leaving a zombie for PID 1
        return subprocess.Popen(
            [str(binary), "-F", "-c", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )


def reap(process: subprocess.Popen[bytes]) -> None:
    """Wait for the master *process* to exit, killing it after ``STOP_KILL_AFTER_S``."""
    try:
        process.wait(timeout=STOP_KILL_AFTER_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def proc_stat(pid: int) -> tuple[str, int] | None:
    """Return (state, parent PID) of *pid*, or None when it no longer exists."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # the command name is in parentheses and may itself contain them
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def proc_title(pid: int) -> str:
    """Return the command line (process title) of *pid*, or "" when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def alive(pid: int) -> bool:
    """Return whether *pid* runs; a zombie counts as gone (its parent may reap it late)."""
    info = proc_stat(pid)
    return info is not None and info[0] != "Z"


def children(parent: int) -> list[int]:
    """Return the PIDs whose parent is *parent*."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = proc_stat(int(entry.name))
            if info is not None and info[1] == parent:
                pids.append(int(entry.name))
    return pids


def send_signal(pids: list[int], signum: int) -> None:
    """Send *signum* to each of *pids*, skipping those already gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def terminate(master: int, instance_name: str, where: str) -> None:
    """Stop the Dovecot *master* and its processes so clients really see the drop.

    The imap session processes get SIGTERM (they send ``* BYE``), then the master;
    its stateless helpers (log, auth, anvil, config, stats, logins) get SIGKILL.
    Given SIGTERM, the master respawns helpers that die first and then waits for
    them, which made about one stop in twenty take a whole second. Returns once
    every signalled process is gone, or after ``STOP_KILL_AFTER_S`` and a SIGKILL.
    """
    started = time.monotonic()
    prefix = instance_name + "/"
    # only processes titled as ours: a PID read from master.pid may have been reused
    helpers = [pid for pid in children(master) if proc_title(pid).startswith(prefix)]
    sessions = [pid for pid in helpers if proc_title(pid).split(" ")[0] == prefix + "imap"]
    send_signal(sessions, signal.SIGTERM)
    send_signal([master], signal.SIGTERM)
    send_signal([pid for pid in helpers if pid not in sessions], signal.SIGKILL)
    signalled = {master, *helpers}
    while True:
        if alive(master):
            # a process forked since the first look (a respawned helper, a login)
            late = [pid for pid in children(master) if pid not in signalled]
            send_signal(late, signal.SIGKILL)
            signalled.update(late)
        if not any(alive(pid) for pid in signalled):
            break
        if time.monotonic() - started > STOP_KILL_AFTER_S:
            logger.warning(
                "dovecot %s: still running after %ss; killing it", where, STOP_KILL_AFTER_S
            )
            send_signal([pid for pid in signalled if alive(pid)], signal.SIGKILL)
            break
        time.sleep(_STOP_POLL_S)
