"""What the throwaway PostgreSQL and SeaweedFS share: ports, the service user, the process.

Both engines (``sandbox/postgres/``, ``sandbox/seaweedfs/``; docs/engines.md) run as one
child process in a session of its own, on free loopback ports kept across restarts, with
their output in a log file of the instance directory. A start waits for a real client
request (the engine's *probe*) and fails fast when the process exits first; a stop signals
the process, waits, and kills its whole process group when it does not go, so that no
process is ever left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from inbox_poller.errors import InboxPollerError

logger = logging.getLogger("inbox_poller.sandbox")

PORT_RANGE = (20000, 32000)
"""Below Linux's ephemeral range (32768+), so outgoing connections never hold our ports."""
STOP_KILL_AFTER_S = 15.0
_POLL_S = 0.02


# ---- ports ----------------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    """Return whether a server could bind *port* on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as servers do: connections left in TIME_WAIT do not block a listener
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, engine: str) -> list[int]:
    """Return *count* distinct loopback TCP ports nobody listens on now (they may be taken later).

    :raises InboxPollerError: naming *engine* when no free port is found.
    """
    ports: list[int] = []
    for _ in range(200 * count):
        port = random.randrange(*PORT_RANGE)
        if port not in ports and port_is_free(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise InboxPollerError(f"no free loopback port found for {engine}")


# ---- the user an engine runs as --------------------------------------------------------


@dataclass(frozen=True)
class ServiceUser:
    """The unprivileged system user a root process starts an engine as."""

    name: str
    uid: int
    gid: int


def service_user(name: str, why: str) -> ServiceUser | None:
    """Return the system user *name* when running as root, None otherwise (run as oneself).

    :raises InboxPollerError: as root, when the user does not exist (*why* says what
        provides it).
    """
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise InboxPollerError(
            f"running as root, the engine must run as the system user {name!r}, "
            f"which does not exist: {why}"
        ) from None
    return ServiceUser(name, entry.pw_uid, entry.pw_gid)


def give_to(user: ServiceUser | None, *paths: Path) -> None:
    """Make each of *paths* (not recursively) owned by *user*; nothing when None."""
    if user is None:
        return
    for path in paths:
        os.chown(path, user.uid, user.gid)


def run_as(
    user: ServiceUser | None, argv: Sequence[str], what: str, timeout_s: float = 120.0
) -> None:
    """Run a setup command (``initdb``) to its end as *user*.

    :raises InboxPollerError: with the last lines of its output when it fails.
    """
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            user=user.uid if user else None,
            group=user.gid if user else None,
            extra_groups=[] if user else None,
            cwd="/" if user else None,  # a directory the user can enter
        )
    except subprocess.TimeoutExpired:
        raise InboxPollerError(f"{what} did not finish within {timeout_s}s") from None
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise InboxPollerError(f"{what} failed: {' '.join(output)[:500]}")


def write_secret(path: Path, value: str) -> None:
    """Write *value* and a newline to *path*, readable by its owner only."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(value + "\n")


# ---- the engine's process ---------------------------------------------------------------


def launch(
    argv: Sequence[str],
    log_path: Path,
    user: ServiceUser | None = None,
) -> subprocess.Popen[bytes]:
    """Start *argv* in a session of its own, stdout and stderr appended to *log_path*."""
    with log_path.open("ab") as log:
        # its own session and process group: the group is what a stop sweeps up
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user.uid if user else None,
            group=user.gid if user else None,
            extra_groups=[] if user else None,
            cwd="/" if user else None,
        )


def log_size(log_path: Path) -> int:
    """Return the size of *log_path* now (0 when missing): where a start's lines begin."""
    try:
        return log_path.stat().st_size
    except FileNotFoundError:
        return 0


def wait_until_ready(
    process: subprocess.Popen[bytes],
    probe: Callable[[], bool],
    *,
    engine: str,
    log_path: Path,
    log_offset: int,
    timeout_s: float,
) -> float:
    """Wait until *probe* returns true; return the seconds it took.

    :raises InboxPollerError: with the last line logged since *log_offset* when the
        process exits first or the time runs out; its message says "port already in
        use" when the engine logged that it could not bind (a start may then retry).
    """
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            lines = _lines_since(log_path, log_offset)
            taken = any("address already in use" in line.lower() for line in lines)
            raise InboxPollerError(
                f"{engine} exited with status {process.returncode} while starting"
                f"{' (port already in use)' if taken else ''}: {_last(lines, log_path)}"
            )
        if probe():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise InboxPollerError(
                f"{engine} did not become ready within {timeout_s}s "
                f"(last log line: {_last(_lines_since(log_path, log_offset), log_path)})"
            )
        time.sleep(_POLL_S)


def _lines_since(log_path: Path, offset: int) -> list[str]:
    try:
        with log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return []


def _last(lines: list[str], log_path: Path) -> str:
    """Return the last non-empty of *lines* (for an error), or a pointer to the log."""
    lines = [line.strip() for line in lines if line.strip()]
    return lines[-1][:500] if lines else f"nothing logged; see {log_path}"


def stop(
    process: subprocess.Popen[bytes],
    signum: int,
    *,
    engine: str,
    timeout_s: float = STOP_KILL_AFTER_S,
) -> None:
    """Send *signum* to the engine, wait for it, and leave none of its processes running.

    The engine's processes are its descendants and its process group (PostgreSQL's
    backends leave the group: each calls ``setsid``). SIGKILL goes to all of them at
    once, as a crash would; any other signal to the leader only, and after *timeout_s*
    SIGKILL to all. Whatever of them still runs once the leader is gone gets SIGKILL.
    """
    group = process.pid  # start_new_session: the leader's PID is the group's
    family = set(descendants(process.pid))
    if signum == signal.SIGKILL:
        _kill([process.pid, *family])
    else:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        logger.warning("%s: still running after %ss; killing it", engine, timeout_s)
        family.update(descendants(process.pid))
        _kill([process.pid, *family])
        process.wait()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        survivors = [pid for pid in family if alive(pid)] + group_members(group)
        if not survivors:
            return
        _kill(survivors)
        time.sleep(_POLL_S)
    logger.warning("%s: processes %s survive SIGKILL", engine, survivors)


def _kill(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stat(pid: int | str) -> list[str] | None:
    """Return the fields of ``/proc/<pid>/stat`` after the command name, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # the command name is in parentheses and may itself contain them
    return text.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Return whether *pid* runs; a zombie counts as gone."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _live_processes() -> list[tuple[int, int, int]]:
    """Return (PID, parent PID, process group) of every live process, from ``/proc``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(entry.name)
            if fields is not None and fields[0] != "Z":
                found.append((int(entry.name), int(fields[1]), int(fields[2])))
    return found


def descendants(pid: int) -> list[int]:
    """Return the live descendants of *pid* (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for child, parent, _ in _live_processes():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def group_members(group: int) -> list[int]:
    """Return the live PIDs in process group *group*."""
    return [pid for pid, _, pgid in _live_processes() if pgid == group]
